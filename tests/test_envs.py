import numpy as np
import pytest
import torch
from torchrl.envs.utils import check_env_specs

from torchrl_o3f.__main__ import format_tasks, main
from torchrl_o3f.envs import (
    UnknownTaskError,
    flatten_observation,
    get_task,
    list_tasks,
    make_env,
    make_gym_env,
    observation_layout,
)

# one task per distinct (env id, env kwargs): every registered env is built and stepped
_DISTINCT = {}
for _t in list_tasks():
    _DISTINCT.setdefault((_t.env_id, repr(_t.env_kwargs)), _t.name)


@pytest.mark.parametrize("name", sorted(_DISTINCT.values()))
def test_every_registered_env_passes_check_env_specs(name):
    env = make_env(name, seed=0)
    check_env_specs(env)
    assert env.observation_spec["observation"].dtype == torch.float32
    assert env.action_spec.dtype == torch.float32
    td = env.rollout(3)
    assert td["next", "observation"].dtype == torch.float32
    assert td["next", "reward"].shape == (3, 1)
    env.close()


def test_registry_defaults_follow_the_paper():
    assert get_task("halfcheetah-medium").sigma == 0.2
    assert get_task("hopper-random").sigma == 0.2
    assert get_task("antmaze-large-diverse").sigma == 0.05
    assert get_task("kitchen-mixed").sigma == 0.05
    assert get_task("pointmaze-umaze").sigma == 0.05
    from torchrl_o3f.objectives import algo_config

    am = algo_config("iql", task="antmaze-large-diverse")
    assert (am.expectile, am.temperature, am.reward_shift) == (0.9, 10.0, -1.0)
    loco = algo_config("iql", task="walker2d-medium")
    assert (loco.expectile, loco.temperature) == (0.7, 3.0)
    assert get_task("antmaze-umaze").score == "success"
    assert get_task("kitchen-mixed").score == "tasks"
    hc = get_task("halfcheetah-medium")
    assert (hc.ref_min_score, hc.ref_max_score) == (-280.178953, 12135.0)


def test_unknown_task_lists_known_ones():
    with pytest.raises(UnknownTaskError) as err:
        get_task("halfcheetah-medum")
    msg = str(err.value)
    assert "halfcheetah-medium" in msg and "hopper-random" in msg and "Did you mean" in msg
    with pytest.raises(UnknownTaskError):
        make_env("no-such-task")


def test_dict_observation_layout_is_observation_then_goals_sorted():
    obs = {
        "observation": np.arange(3.0),
        "desired_goal": {"b": np.array([7.0]), "a": np.array([5.0, 6.0])},
        "achieved_goal": np.array([3.0, 4.0]),
    }
    assert observation_layout(obs) == [
        ("observation", 3),
        ("achieved_goal", 2),
        ("desired_goal/a", 2),
        ("desired_goal/b", 1),
    ]
    np.testing.assert_array_equal(flatten_observation(obs), np.arange(8.0, dtype=np.float32))
    # stacked (episode) leaves flatten the same way, row by row
    stacked = {k: np.stack([v, v]) if not isinstance(v, dict) else v for k, v in obs.items()}
    stacked["desired_goal"] = {k: np.stack([v, v]) for k, v in obs["desired_goal"].items()}
    assert flatten_observation(stacked).shape == (2, 8)


def test_flat_env_matches_raw_dict_env():
    import gymnasium as gym

    task = get_task("pointmaze-umaze")
    flat = make_gym_env(task)
    raw = gym.make(task.env_id, **task.env_kwargs)
    obs, _ = flat.reset(seed=3)
    raw_obs, _ = raw.reset(seed=3)
    np.testing.assert_array_equal(obs, flatten_observation(raw_obs))
    assert obs.dtype == np.float32
    env = make_env(task)
    assert env.observation_spec["observation"].shape[-1] == sum(
        n for _, n in observation_layout(raw.observation_space)
    )


def test_batched_env():
    env = make_env("hopper-medium", seed=0, num_envs=2)
    assert env.batch_size == (2,)
    td = env.rollout(3)
    assert td["action"].shape == (2, 3, 3)
    env.close()


def test_cli_lists_tasks(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "halfcheetah-medium" in out and "HalfCheetah-v5" in out and "0.2" in out
    assert "kitchen-mixed" in format_tasks("kitchen")


def test_tasks_marks_buildable_only_what_can_be_built_here():
    from torchrl_o3f.envs import get_task

    assert get_task("hopper-random").buildable and get_task("hopper-medium").buildable
    assert not get_task("hopper-medium-replay").buildable  # no replay buffer is shipped
    assert not get_task("hopper-expert").buildable  # no expert policy is shipped
