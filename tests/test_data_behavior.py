"""Behaviour policies: the actor, its checkpoints, SAC training and the shipped policies."""

import json

import mujoco
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_o3f.data import (
    BehaviorPolicy,
    PolicyInfo,
    build_sac_actor,
    evaluate_policy,
    list_policies,
    load_policy,
    train_behavior,
)
from torchrl_o3f.data.behavior import MEDIUM_TARGETS, install_policy


def _policy(seed=0):
    torch.manual_seed(seed)
    info = PolicyInfo("toy-medium", "Hopper-v5", 11, 3, [-1.0] * 3, [1.0] * 3, 16, 1)
    return BehaviorPolicy.from_info(info)


def test_behavior_policy_matches_the_torchrl_actor():
    actor = build_sac_actor(11, 3, num_cells=16, depth=1)
    net = actor.module[0].module[0]
    info = PolicyInfo("toy", "Hopper-v5", 11, 3, [-1.0] * 3, [1.0] * 3, 16, 1)
    policy = BehaviorPolicy(net, info)
    obs = torch.randn(64, 11)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        expected = actor(TensorDict({"observation": obs}, [64]))["action"]
    got = policy.act(obs.numpy(), deterministic=True)
    np.testing.assert_allclose(got, expected.detach().numpy(), atol=1e-5)
    # stochastic samples: seeded, within bounds, spread around the deterministic action
    a = policy.act(obs.numpy(), generator=torch.Generator().manual_seed(1))
    b = policy.act(obs.numpy(), generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() <= 1 and not np.allclose(a, got)


def test_checkpoint_round_trip(tmp_path):
    policy = _policy()
    policy.info.returns = {"deterministic": {"mean": 1.0, "std": 0.0, "episodes": 1}}
    pt, js = policy.save(tmp_path / "toy-medium")
    assert (
        pt.suffix == ".pt" and json.loads(js.read_text())["returns"]["deterministic"]["mean"] == 1
    )
    assert list_policies(tmp_path) == ["toy-medium"]
    loaded = load_policy("toy-medium", tmp_path)
    obs = np.random.default_rng(0).standard_normal((4, 11)).astype(np.float32)
    np.testing.assert_array_equal(
        loaded.act(obs, deterministic=True), policy.act(obs, deterministic=True)
    )
    # only the actor's weights are stored
    assert set(torch.load(pt, weights_only=True)) == set(policy.net.state_dict())


def test_missing_checkpoint_says_how_to_train(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-behavior walker2d"):
        load_policy("walker2d-medium", tmp_path)


def test_evaluate_policy_is_reproducible():
    policy = _policy()
    a = evaluate_policy(policy, "hopper-random", num_episodes=2, deterministic=False, seed=3)
    b = evaluate_policy(policy, "hopper-random", num_episodes=2, deterministic=False, seed=3)
    np.testing.assert_array_equal(a, b)


def test_train_behavior_smoke(tmp_path, one_thread):
    pt = train_behavior(
        "hopper",
        target_return=1e6,
        max_steps=300,
        warmup_steps=200,
        batch_size=32,
        eval_every=50,
        eval_episodes=1,
        final_episodes=2,
        num_cells=16,
        depth=1,
        out_dir=tmp_path,
        checkpoint_dir=tmp_path / "ckpt",
        log=None,
    )
    info = json.loads(pt.with_suffix(".json").read_text())
    assert info["name"] == "hopper-medium" and info["env_id"] == "Hopper-v5"
    assert info["mujoco_version"] == mujoco.__version__
    assert info["train_steps"] in (250, 300)
    assert info["returns"]["deterministic"]["episodes"] == 2
    assert set(info["returns"]) == {"deterministic", "stochastic"}
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.json")) == [
        "hopper-medium-step250.json",
        "hopper-medium-step300.json",
    ]
    assert load_policy("hopper-medium", tmp_path).info.train_steps == info["train_steps"]
    # an intermediate checkpoint, measured and installed under another name
    pt = install_policy(
        tmp_path / "ckpt" / "hopper-medium-step250.pt",
        name="hopper-expert",
        num_episodes=1,
        out_dir=tmp_path / "installed",
    )
    installed = load_policy("hopper-expert", tmp_path / "installed").info
    assert (
        installed.train_steps == 250
        and installed.extra["installed_from"] == "hopper-medium-step250"
    )
    assert installed.returns["stochastic"]["episodes"] == 1
    assert installed.extra["batch_size"] == 32


def test_train_behavior_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="locomotion policies.*pointmaze"):
        train_behavior("pointmaze", out_dir=tmp_path, log=None)


@pytest.mark.parametrize("name", list_policies())
def test_shipped_policies(name):
    policy = load_policy(name)
    info = policy.info
    family, quality = name.split("-", 1)
    assert info.mujoco_version == mujoco.__version__, "returns were measured on another mujoco"
    det = info.returns["deterministic"]
    assert det["episodes"] >= 10 and info.returns["stochastic"]["episodes"] >= 10
    if quality == "medium" and not info.extra.get("provisional"):
        # a D4RL-style medium policy: near the target return
        assert abs(det["mean"] - MEDIUM_TARGETS[family]) < 0.35 * MEDIUM_TARGETS[family]
    # the recorded numbers are reproducible: the first episodes of the recorded measurement
    rets = evaluate_policy(policy, f"{family}-random", num_episodes=2, deterministic=True, seed=0)
    assert abs(rets.mean() - det["mean"]) < 3 * det["std"] + 0.05 * abs(det["mean"])


def test_fast_single_observation_path_matches_torch():
    policy = _policy(3)
    obs = np.random.default_rng(1).standard_normal((5, 11)).astype(np.float32)
    for deterministic in (True, False):
        batched = policy.act(obs, deterministic=deterministic, generator=torch.Generator())
        gen = torch.Generator()
        single = np.stack([policy.act(o, deterministic=deterministic, generator=gen) for o in obs])
        np.testing.assert_allclose(single, batched, atol=1e-5)
    # the torch path serves activations the fast path does not know
    info = PolicyInfo("toy", "Hopper-v5", 11, 3, [-1.0] * 3, [1.0] * 3, 16, 1)
    tanh_net = build_sac_actor(11, 3, num_cells=16, depth=1).module[0].module[0]
    tanh_net[1] = torch.nn.Tanh()
    slow = BehaviorPolicy(tanh_net, info)
    assert slow.act(obs[0], deterministic=True).shape == (3,)
