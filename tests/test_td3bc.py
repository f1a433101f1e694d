"""Tests of TD3BCLoss: a plain-PyTorch reference, gradient isolation, the normaliser inside the
networks, learning on Pendulum and a run through the trainer (tiny specs, see loss_harness)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from loss_harness import (
    ACT_DIM,
    CELLS,
    OBS_DIM,
    action_spec,
    groups_with_grad,
    pendulum_dataset,
    pendulum_return,
    ted_batch,
)
from run_harness import smoke_config
from tensordict import TensorDict
from torch import nn
from torchrl.objectives import SoftUpdate

from torchrl_o3f.modules import QEnsemble, make_deterministic_actor
from torchrl_o3f.objectives import TD3BCLoss, algo_config, get_algorithm, make_td3_bc_loss
from torchrl_o3f.objectives.td3_bc import observation_statistics

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")


def td3_bc(data=None, spec=None, **kw) -> TD3BCLoss:
    kw.setdefault("num_cells", CELLS)
    if data is not None:
        kw.update(observation_statistics(data))
    return make_td3_bc_loss(OBS_DIM, spec or action_spec(), **kw)


def shifted_data(n: int = 64, seed: int = 0) -> TensorDict:
    """Transitions whose observations are far from zero mean and unit std (bounds [-2, 2])."""
    data = ted_batch(n, low=-2.0, high=2.0, generator=torch.Generator().manual_seed(seed))
    for key in ("observation", ("next", "observation")):
        data[key] = data[key] * torch.tensor([3.0, 0.5, 10.0]) + torch.tensor([5.0, -1.0, 0.0])
    return data


# --------------------------------------------------------------------------- the reference
def _mlp(sizes, out_act=None) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers, *([out_act] if out_act else []))


def _copy_actor(ref: nn.Sequential, params: TensorDict) -> None:
    linears = [m for m in ref if isinstance(m, nn.Linear)]
    net = params["module", "net"]
    keys = sorted({k[0] for k in net.keys(True, True)}, key=int)
    with torch.no_grad():
        for lin, k in zip(linears, keys):
            lin.weight.copy_(net[k, "weight"])
            lin.bias.copy_(net[k, "bias"])


def _copy_critic(ref: nn.Sequential, params: TensorDict, member: int) -> None:
    linears = [m for m in ref if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for i, lin in enumerate(linears):
            lin.weight.copy_(params["weights", str(i)][member].T)
            lin.bias.copy_(params["biases", str(i)][member, 0])


def test_td3bc_matches_a_plain_pytorch_transcription_on_one_batch():
    """CORL's TD3+BC step (normalised states, max_action-scaled noise), with copied weights."""
    data = shifted_data(256)
    loss = td3_bc(data, spec=action_spec(low=-2.0, high=2.0), alpha=2.5)
    loss.make_value_estimator(gamma=0.9)
    with torch.no_grad():  # targets different from the online networks
        for p in loss.parameters():
            p.add_(0.1 * torch.randn_like(p))
    max_action, policy_noise, noise_clip, alpha, discount = 2.0, 0.2 * 2, 0.5 * 2, 2.5, 0.9
    h = CELLS
    actor, actor_target = (_mlp([OBS_DIM, h, h, ACT_DIM], nn.Tanh()) for _ in range(2))
    critics = [_mlp([OBS_DIM + ACT_DIM, h, h, 1]) for _ in range(4)]
    _copy_actor(actor, TensorDict.from_module(loss.actor_network))
    _copy_actor(actor_target, loss.target_actor_network_params)
    for i in range(2):
        _copy_critic(critics[i], TensorDict.from_module(loss.qvalue_network), i)
        _copy_critic(critics[2 + i], loss.target_qvalue_network_params, i)
    critic_1, critic_2, critic_1_target, critic_2_target = critics

    def q(net, s, a):
        return net(torch.cat([s, a], -1))

    batch = shifted_data(32, seed=1)
    stats = observation_statistics(data)
    loc, scale = stats["observation_loc"], stats["observation_scale"]
    state = (batch["observation"] - loc) / scale
    next_state = (batch["next", "observation"] - loc) / scale
    action, reward = batch["action"], batch["next", "reward"]
    not_done = 1.0 - batch["next", "terminated"].float()

    torch.manual_seed(3)
    with torch.no_grad():
        noise = (torch.randn_like(action) * policy_noise).clamp(-noise_clip, noise_clip)
        next_action = (max_action * actor_target(next_state) + noise).clamp(-2.0, 2.0)
        target_q = torch.min(
            q(critic_1_target, next_state, next_action), q(critic_2_target, next_state, next_action)
        )
        target_q = reward + not_done * discount * target_q
    critic_loss = F.mse_loss(q(critic_1, state, action), target_q) + F.mse_loss(
        q(critic_2, state, action), target_q
    )
    pi = max_action * actor(state)
    q_pi = q(critic_1, state, pi)
    lmbda = alpha / q_pi.abs().mean().detach()
    actor_loss = -lmbda * q_pi.mean() + F.mse_loss(pi, action)

    torch.manual_seed(3)
    out = loss(batch)
    torch.testing.assert_close(out["loss_qvalue"], critic_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss_actor"], actor_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["q_weight"], lmbda, rtol=1e-5, atol=1e-6)
    torch.manual_seed(3)
    torch.testing.assert_close(loss.critic_loss(batch)["loss_qvalue"], critic_loss)


# --------------------------------------------------------------------------- gradient isolation
@pytest.mark.parametrize(
    "method,key,group",
    [
        ("forward", "loss_actor", "actor"),
        ("forward", "loss_qvalue", "qvalue"),
        ("critic_loss", "loss_qvalue", "qvalue"),
        ("actor_loss", "loss_actor", "actor"),
    ],
)
def test_each_loss_moves_only_its_network(method, key, group):
    loss = td3_bc(shifted_data())
    groups = loss.parameter_groups()
    out = getattr(loss, method)(shifted_data(32, seed=1))
    out[key].backward()
    assert groups_with_grad(groups) == {group}
    for k, v in out.items():
        if not k.startswith("loss_"):
            assert not v.requires_grad, k
    assert sorted(loss.critic_loss(ted_batch()).keys()) == ["loss_qvalue", "qvalue_mean"]
    targets = list(loss.target_actor_network_params.values(True, True))
    assert targets and not any(t.requires_grad for t in targets)


def test_parameter_groups_partition_the_trainable_parameters():
    loss = td3_bc()
    ids = [id(p) for ps in loss.parameter_groups().values() for p in ps]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in loss.parameters()}


# --------------------------------------------------------------------------- the normaliser
def test_networks_normalise_raw_observations_with_the_data_statistics():
    data = shifted_data(256)
    stats = observation_statistics(data)
    obs = data["observation"]
    torch.testing.assert_close(stats["observation_loc"], obs.mean(0))
    torch.testing.assert_close(stats["observation_scale"], obs.std(0, correction=0) + 1e-3)
    loss = td3_bc(data)
    plain = td3_bc()  # the same weights, an identity normaliser
    plain.load_state_dict(loss.state_dict())
    plain.actor_network.module.set_observation_normalization()
    plain.qvalue_network.set_input_normalization()
    normed = (obs - stats["observation_loc"]) / stats["observation_scale"]
    act = data["action"].clamp(-1, 1)
    # the policy and the critic (the O3F selector's scorer) take raw observations
    torch.testing.assert_close(loss.actor_network.module(obs), plain.actor_network.module(normed))
    torch.testing.assert_close(
        loss.qvalue_network.values(obs, act), plain.qvalue_network.values(normed, act)
    )
    # the statistics are buffers of both networks (and of their targets): saved, deployed
    state = loss.state_dict()
    for key in (
        "actor_network.module.observation_loc",
        "qvalue_network.observation_scale",
        "target_actor_network_params.module.observation_loc",
    ):
        assert key in state and not torch.equal(state[key], torch.zeros_like(state[key])), key
    assert torch.equal(loss.policy.state_dict()["module.observation_loc"], stats["observation_loc"])


def test_registered_builder_normalises_only_when_configured():
    cfg = algo_config("td3_bc", overrides={"num_cells": CELLS})
    data = shifted_data(256)
    algo = get_algorithm("td3_bc")
    loss = algo.make_loss(cfg, observation_dim=OBS_DIM, action_spec=action_spec(), data=data)
    loc = observation_statistics(data)["observation_loc"]
    torch.testing.assert_close(loss.qvalue_network.observation_loc, loc)
    torch.testing.assert_close(loss.actor_network.module.observation_loc, loc)
    with pytest.raises(ValueError, match="normalize_observations=false"):
        algo.make_loss(cfg, observation_dim=OBS_DIM, action_spec=action_spec(), data=None)
    cfg.normalize_observations = False
    loss = algo.make_loss(cfg, observation_dim=OBS_DIM, action_spec=action_spec(), data=None)
    assert torch.equal(loss.qvalue_network.observation_scale, torch.ones(OBS_DIM))
    assert torch.equal(loss.actor_network.module.observation_loc, torch.zeros(OBS_DIM))


# --------------------------------------------------------------------------- plumbing
def test_targets_follow_the_actor_and_the_critics():
    loss = td3_bc()
    updater = SoftUpdate(loss, tau=0.5)
    with torch.no_grad():
        for p in loss.parameters():
            p.add_(1.0)
    weight = loss.actor_network.module.net[0].weight
    gap = (weight - loss.target_actor_network_params["module", "net", "0", "weight"]).abs().sum()
    updater.step()
    after = (weight - loss.target_actor_network_params["module", "net", "0", "weight"]).abs().sum()
    assert 0 < after < gap


def test_state_dict_round_trip_and_set_keys():
    src, dst = td3_bc(shifted_data()), td3_bc()
    src.alpha = 1.0
    dst.load_state_dict(src.state_dict())
    assert float(dst.alpha) == 1.0
    batch = shifted_data(32, seed=1)
    torch.manual_seed(1)
    a = src(batch)
    torch.manual_seed(1)
    b = dst(batch)
    for k in a.keys():
        torch.testing.assert_close(a[k], b[k])
    names = {"observation": "obs", "action": "act", "reward": "rew", "terminated": "term"}
    dst.set_keys(**names)
    assert torch.isfinite(dst(ted_batch(keys=names))["loss_qvalue"])


def test_bad_arguments_are_clear_errors():
    spec = action_spec()
    q = QEnsemble(OBS_DIM, ACT_DIM, num_members=2, num_cells=CELLS)
    actor = make_deterministic_actor(OBS_DIM, spec, num_cells=CELLS)
    with pytest.raises(TypeError, match="make_deterministic_actor"):
        TD3BCLoss(nn.Linear(OBS_DIM, ACT_DIM), q, action_spec=spec)
    with pytest.raises(ValueError, match="policy_noise"):
        TD3BCLoss(actor, q, action_spec=spec, noise_clip=-1.0)
    with pytest.raises(ValueError, match="backup"):
        TD3BCLoss(actor, q, action_spec=spec, backup="soft")
    with pytest.raises(ValueError, match="alpha"):
        TD3BCLoss(actor, q, action_spec=spec).alpha = -1.0


# --------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_short_offline_run_beats_a_random_policy(one_thread):
    """The registered algorithm (actor delay 2, normalised observations) on Pendulum data."""
    from torchrl.envs import GymEnv
    from torchrl.envs.utils import RandomPolicy

    from torchrl_o3f.trainers.agents import build_agent

    data = pendulum_dataset()
    env = GymEnv("Pendulum-v1")
    lr = {"actor": 1e-3, "qvalue": 1e-3}
    cfg = algo_config("td3_bc", overrides={"num_cells": 64, "gamma": 0.9, "lr": lr})
    agent = build_agent(cfg, env.action_spec, observation_dim=3, data=data)
    for _ in range(1000):
        agent.update(data[torch.randint(0, data.shape[0], (256,))])
    random = pendulum_return(RandomPolicy(env.action_spec), env)
    final = pendulum_return(agent.policy, env)
    assert final > random + 500 and final > -400, (random, final)


# --------------------------------------------------------------------------- trainer, registry
def test_offline_then_online_with_o3f_through_the_trainer(tmp_path_factory, tmp_path):
    from torchrl_o3f.trainers import OfflineOnlineTrainer
    from torchrl_o3f.trainers.deploy import load_policy

    root = str(tmp_path_factory.mktemp("datasets"))
    cfg = smoke_config(tmp_path, root, "td3_bc", **{"exploration.mode": "o3f"})
    trainer = OfflineOnlineTrainer(cfg)
    summary = trainer.train()
    assert summary["online_frames"] == cfg.budget.online_frames
    for key in ("score_after_offline", "score_after_online"):
        assert torch.isfinite(torch.tensor(summary[key])), key
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "online/score_gain" in set().union(*rows)
    # the deployed policy carries the normaliser: it acts as the trained one on raw observations
    obs = torch.randn(4, trainer.observation_dim) * 3
    td = TensorDict({"observation": obs}, [4])
    expected = trainer.agent.policy(td.clone())["action"]
    torch.testing.assert_close(load_policy(tmp_path)(td.clone())["action"], expected)


def test_the_registry_lists_it():
    out = subprocess.run(
        [sys.executable, "-m", "torchrl_o3f", "algorithms"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    line = next(r for r in out.stdout.splitlines() if r.startswith("td3_bc"))
    assert "alpha=2.5" in line and "TD3+BC" in line
