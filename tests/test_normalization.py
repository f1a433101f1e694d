"""Observation normalisation as an algorithm option: statistics of the offline data held in
buffers of every network that reads observations (tiny specs, see loss_harness)."""

from __future__ import annotations

import pytest
import torch
from loss_harness import CELLS, OBS_DIM, action_spec, ted_batch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_o3f.errors import ConfigError
from torchrl_o3f.modules import QEnsemble, make_iql_actor, make_value_network
from torchrl_o3f.objectives import IQLLoss, algo_config, get_algorithm, list_algorithms
from torchrl_o3f.objectives.common import call_on_tensor, observation_statistics

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")

SHIFT, SCALE = torch.tensor([5.0, -1.0, 0.0]), torch.tensor([3.0, 0.5, 10.0])


def shifted_data(n: int = 256, seed: int = 0) -> TensorDict:
    """Transitions whose observations are far from zero mean and unit std."""
    data = ted_batch(n, generator=torch.Generator().manual_seed(seed))
    for key in ("observation", ("next", "observation")):
        data[key] = data[key] * SCALE + SHIFT
    return data


def iql_config(normalize: bool):
    overrides = {"num_cells": CELLS, "reward_normalization": "none"}
    return algo_config("iql", overrides={**overrides, "normalize_observations": normalize})


def build(name_or_cfg, data, seed: int = 0, **overrides):
    cfg = name_or_cfg
    if isinstance(cfg, str):
        cfg = algo_config(cfg, overrides={"num_cells": CELLS, **overrides})
    torch.manual_seed(seed)
    return get_algorithm(cfg.name).make_loss(
        cfg, observation_dim=OBS_DIM, action_spec=action_spec(), data=data
    )


def act(policy, obs: torch.Tensor) -> torch.Tensor:
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        return policy(TensorDict({"observation": obs}, obs.shape[:-1]))["action"]


def standardised(data: TensorDict, stats: dict) -> TensorDict:
    out = data.clone()
    for key in ("observation", ("next", "observation")):
        out[key] = (data[key] - stats["observation_loc"]) / stats["observation_scale"]
    return out


def test_normalised_iql_on_raw_observations_is_plain_iql_on_standardised_ones():
    data = shifted_data()
    stats = observation_statistics(data)
    normed = build(iql_config(True), data)
    plain = build(iql_config(False), data)  # the same seed: the same weights
    for a, b in zip(normed.parameters(), plain.parameters()):
        assert torch.equal(a, b)
    z = standardised(data, stats)
    obs = data["observation"]
    torch.testing.assert_close(act(normed.policy, obs), act(plain.policy, z["observation"]))
    torch.testing.assert_close(
        call_on_tensor(normed.value_network, obs),
        call_on_tensor(plain.value_network, z["observation"]),
    )
    act_ = data["action"]
    torch.testing.assert_close(
        normed.qvalue_network.values(obs, act_), plain.qvalue_network.values(z["observation"], act_)
    )
    out_n, out_p = normed(data.clone()), plain(z)
    for key in ("loss_actor", "loss_qvalue", "loss_value"):
        torch.testing.assert_close(out_n[key], out_p[key])


def test_statistics_are_buffers_that_round_trip_through_the_policy_state():
    data = shifted_data()
    stats = observation_statistics(data)
    loss = build(iql_config(True), data)
    got = loss.observation_normalization()
    torch.testing.assert_close(got["observation_loc"], stats["observation_loc"])
    torch.testing.assert_close(got["observation_scale"], stats["observation_scale"])
    state = loss.policy.state_dict()
    assert any(k.endswith("observation_loc") for k in state)
    assert any(k.startswith("qvalue_network.observation_loc") for k in loss.state_dict())
    assert any(k.startswith("value_network.") and "observation" in k for k in loss.state_dict())
    # the policy-only module loads it, statistics included, and acts the same
    policy = get_algorithm("iql").make_policy(
        iql_config(True), observation_dim=OBS_DIM, action_spec=action_spec()
    )
    assert policy.state_dict().keys() == state.keys()
    policy.load_state_dict(state)
    obs = data["observation"][:7]
    torch.testing.assert_close(act(policy, obs), act(loss.policy, obs), rtol=0, atol=0)
    # a loss without the option has no normaliser in its policy
    assert build(iql_config(False), None).observation_normalization() is None


def test_the_option_off_builds_what_the_loss_built_before_it_existed():
    """Off (IQL's default): the same modules, state-dict keys and numbers as the old assembly."""
    cfg = iql_config(False)
    assert algo_config("iql").normalize_observations is False
    loss = build(cfg, None, seed=3)
    torch.manual_seed(3)
    spec = action_spec()
    actor = make_iql_actor(OBS_DIM, spec, num_cells=CELLS, depth=cfg.depth)
    qvalue = QEnsemble(OBS_DIM, 2, num_members=cfg.num_qvalue, num_cells=CELLS, depth=cfg.depth)
    value = make_value_network(OBS_DIM, num_cells=CELLS, depth=cfg.depth)
    before = IQLLoss(actor, qvalue, value, expectile=cfg.expectile, temperature=cfg.temperature)
    a, b = loss.state_dict(), before.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    batch = ted_batch(generator=torch.Generator().manual_seed(1))
    out_a, out_b = loss(batch.clone()), before(batch.clone())
    for key in out_a.keys():
        assert torch.equal(out_a[key], out_b[key]), key


@pytest.mark.parametrize("name", ["iql", "sac", "cql", "awac", "td3_bc"])
def test_without_offline_data_normalisation_is_one_config_error(name):
    with pytest.raises(ConfigError, match="normalize_observations=false"):
        build(name, None, normalize_observations=True, **_no_reward_data(name))


def _no_reward_data(name: str) -> dict:
    return {"reward_normalization": "none"} if name == "iql" else {}


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("name", [a.name for a in list_algorithms()])
def test_the_policy_builder_makes_the_loss_policy_alone(name, normalize):
    if name == "lapo" and not normalize:
        with pytest.raises(ConfigError, match="LAPO z-scores"):
            build(name, shifted_data(), normalize_observations=False)
        return
    data = shifted_data()
    loss = build(name, data, normalize_observations=normalize, **_no_reward_data(name))
    cfg = algo_config(name, overrides={"num_cells": CELLS, "normalize_observations": normalize})
    policy = get_algorithm(name).make_policy(
        cfg, observation_dim=OBS_DIM, action_spec=action_spec()
    )
    state = loss.policy.state_dict()
    assert policy.state_dict().keys() == state.keys()
    # a trainer checkpoint (the loss's state) holds the same entries
    from_loss = get_algorithm(name).loss_class.policy_state_dict(loss.state_dict())
    assert from_loss.keys() == state.keys()
    for key in state:
        assert torch.equal(from_loss[key], state[key]), key
    policy.load_state_dict(from_loss)
    obs = data["observation"][:5]
    torch.testing.assert_close(act(policy, obs), act(loss.policy, obs), rtol=0, atol=0)
    stats = loss.observation_normalization()
    if normalize:
        expected = observation_statistics(data)["observation_loc"]
        if name == "lapo":  # its CVAE's statistics (the authors' sample std + 1e-6)
            expected = data["observation"].mean(0)
        torch.testing.assert_close(stats["observation_loc"], expected)
        torch.testing.assert_close(loss.qvalue_network.observation_loc, expected)
    elif name != "td3_bc":  # TD3's actor always holds (identity) statistics
        assert stats is None
