"""Tests of the baseline losses SACLoss, CQLLoss and AWACLoss (tiny specs, see loss_harness)."""

from __future__ import annotations

import importlib.util
import math
import pathlib

import pytest
import torch
from loss_harness import (
    ACT_DIM,
    CELLS,
    OBS_DIM,
    action_spec,
    groups_with_grad,
    pendulum_dataset,
    pendulum_return,
    ted_batch,
    train_offline,
)
from tensordict import TensorDict
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SoftUpdate

from torchrl_o3f.modules import O3FActionSelector
from torchrl_o3f.objectives import (
    AWACLoss,
    CQLLoss,
    SACLoss,
    make_awac_loss,
    make_cql_loss,
    make_sac_loss,
)
from torchrl_o3f.objectives.registry import algo_config, get_algorithm

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")


def sac(**kw) -> SACLoss:
    return make_sac_loss(OBS_DIM, kw.pop("spec", action_spec()), num_cells=CELLS, **kw)


def cql(**kw) -> CQLLoss:
    kw.setdefault("depth", 2)
    kw.setdefault("n_action_samples", 3)
    return make_cql_loss(OBS_DIM, kw.pop("spec", action_spec()), num_cells=CELLS, **kw)


def cql_lagrange(**kw) -> CQLLoss:
    return cql(lagrange=True, lagrange_threshold=1.0, **kw)


def awac(**kw) -> AWACLoss:
    return make_awac_loss(OBS_DIM, kw.pop("spec", action_spec()), num_cells=CELLS, **kw)


MAKERS = [sac, cql, cql_lagrange, awac]


def bench_module():
    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "bench_losses.py"
    spec = importlib.util.spec_from_file_location("bench_losses", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def adam_step(loss, lr=1e-2):
    opts = [torch.optim.Adam(p, lr) for p in loss.parameter_groups().values()]
    out = loss(ted_batch(32))
    sum(v for k, v in out.items() if k.startswith("loss_")).backward()
    for o in opts:
        o.step()
    return out


# --------------------------------------------------------------------------- gradient isolation
ISOLATION = [
    (sac, "forward", "loss_actor", "actor"),
    (sac, "forward", "loss_qvalue", "qvalue"),
    (sac, "forward", "loss_alpha", "alpha"),
    (sac, "critic_loss", "loss_qvalue", "qvalue"),
    (sac, "actor_loss", "loss_actor", "actor"),
    (sac, "actor_loss", "loss_alpha", "alpha"),
    (cql, "forward", "loss_actor", "actor"),
    (cql, "forward", "loss_qvalue", "qvalue"),
    (cql, "forward", "loss_cql", "qvalue"),
    (cql, "forward", "loss_alpha", "alpha"),
    (cql, "critic_loss", "loss_cql", "qvalue"),
    (cql_lagrange, "forward", "loss_cql", "qvalue"),
    (cql_lagrange, "forward", "loss_alpha_prime", "alpha_prime"),
    (cql_lagrange, "critic_loss", "loss_alpha_prime", "alpha_prime"),
    (awac, "forward", "loss_actor", "actor"),
    (awac, "forward", "loss_qvalue", "qvalue"),
    (awac, "critic_loss", "loss_qvalue", "qvalue"),
    (awac, "actor_loss", "loss_actor", "actor"),
]


@pytest.mark.parametrize(
    "make,method,key,group", ISOLATION, ids=[f"{m.__name__}-{f}-{k}" for m, f, k, _ in ISOLATION]
)
def test_each_loss_moves_only_its_group(make, method, key, group):
    loss = make()
    groups = loss.parameter_groups()
    out = getattr(loss, method)(ted_batch())
    out[key].backward()
    assert groups_with_grad(groups) == {group}
    for k, v in out.items():
        if not k.startswith("loss_"):
            assert not v.requires_grad, k


@pytest.mark.parametrize("make", MAKERS)
def test_outputs_groups_and_yaml_learning_rates(make):
    loss = make()
    out = loss(ted_batch())
    assert set(out.keys()) <= set(loss.out_keys)
    assert "qvalue_mean" in out.keys()
    assert all(torch.isfinite(v) for v in out.values())
    # the groups partition the trainable parameters
    groups = loss.parameter_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in loss.parameters()}
    # critic_loss holds the critic's terms only
    critic = loss.critic_loss(ted_batch())
    expected = {"loss_qvalue"} | ({"loss_cql"} if isinstance(loss, CQLLoss) else set())
    if isinstance(loss, CQLLoss) and loss.lagrange:
        expected.add("loss_alpha_prime")
    assert {k for k in critic.keys() if k.startswith("loss_")} == expected


def test_fixed_weight_cql_keeps_its_multiplier_frozen():
    loss = cql()
    assert "loss_alpha_prime" not in loss(ted_batch()).keys()
    assert not loss.log_alpha_prime.requires_grad
    assert loss.parameter_groups()["alpha_prime"] == [loss.log_alpha_prime]
    assert cql_lagrange().log_alpha_prime.requires_grad


# --------------------------------------------------------------------------- shared ensemble
@pytest.mark.parametrize("make", MAKERS)
def test_a_loss_step_changes_what_the_shared_ensemble_returns(make):
    loss = make()
    selector = O3FActionSelector(loss.qvalue_network, action_spec(), num_candidates=8)
    obs, act = torch.randn(4, OBS_DIM), torch.rand(4, ACT_DIM) * 2 - 1
    before = selector.qvalue_network.values(obs, act).detach().clone()
    adam_step(loss)
    assert not torch.allclose(before, selector.qvalue_network.values(obs, act))
    assert all(
        p is q
        for p, q in zip(loss.parameter_groups()["qvalue"], selector.qvalue_network.parameters())
    )


@pytest.mark.parametrize("make", MAKERS)
def test_soft_update_moves_targets_towards_online(make):
    loss = make()
    updater = SoftUpdate(loss, tau=0.5)
    adam_step(loss)
    online = loss.qvalue_network.weights[1].detach()
    gap = (online - loss.target_qvalue_network_params["weights", "1"]).abs().sum()
    assert gap > 0
    updater.step()
    assert (online - loss.target_qvalue_network_params["weights", "1"]).abs().sum() < gap
    assert not any(t.requires_grad for t in loss.target_qvalue_network_params.values(True, True))


# --------------------------------------------------------------------------- state dict, keys
@pytest.mark.parametrize("make", MAKERS)
def test_state_dict_round_trip(make):
    src = make()
    SoftUpdate(src, tau=0.1)
    adam_step(src)
    if isinstance(src, CQLLoss):
        src.cql_weight = 2.5
        if src.lagrange:
            src.lagrange_threshold = 0.5
    if isinstance(src, AWACLoss):
        src.lam = 0.1
    dst = make()
    dst.load_state_dict(src.state_dict())
    for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert torch.equal(a, b), k
    batch = ted_batch()
    torch.manual_seed(1)
    out_src = src(batch)
    torch.manual_seed(1)
    out_dst = dst(batch)
    for k in out_src.keys():
        torch.testing.assert_close(out_src[k], out_dst[k])


@pytest.mark.parametrize("make", MAKERS)
def test_set_keys(make):
    loss = make()
    names = {"observation": "obs", "action": "act", "reward": "rew", "terminated": "term"}
    batch = ted_batch(keys=names)
    with pytest.raises(KeyError, match="set_keys"):
        loss(batch)
    loss.set_keys(**names)
    assert torch.isfinite(loss(batch)["loss_qvalue"])
    assert ("next", "rew") in loss.in_keys


@pytest.mark.parametrize("make", MAKERS)
def test_missing_key_error_names_the_fix(make):
    with pytest.raises(KeyError, match="set_keys"):
        make()(ted_batch().exclude("action"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="backup"):
        sac(backup="greedy")
    with pytest.raises(ValueError, match="backup"):
        awac(backup="soft")  # AWAC has no entropy coefficient
    with pytest.raises(ValueError, match="qvalue_reduction"):
        cql(qvalue_reduction="max")
    with pytest.raises(ValueError, match="subset_size"):
        sac(qvalue_reduction="subset_min", subset_size=3)
    with pytest.raises(ValueError, match="n_action_samples"):
        cql(n_action_samples=0)
    with pytest.raises(TypeError, match="QEnsemble"):
        SACLoss(sac().actor_network, torch.nn.Linear(5, 1), action_spec=action_spec())
    with pytest.raises(ValueError, match="dimensions"):
        SACLoss(sac().actor_network, sac().qvalue_network, action_spec=action_spec(3))
    for how in ("min", "mean", "subset_min"):
        for backup in ("soft", "sampled", "mean"):
            out = sac(qvalue_reduction=how, backup=backup)(ted_batch())
            assert torch.isfinite(out["loss_qvalue"])


# --------------------------------------------------------------------------- reference checks
def test_sac_matches_torchrl_sacloss_on_one_batch():
    """torchrl's SACLoss (v2, 2 critics) with the same weights and the same random draws."""
    from torchrl.objectives import SACLoss as TorchRLSACLoss

    bench = bench_module()
    ours = sac(alpha_init=0.3)
    ours.make_value_estimator(gamma=0.9)
    with torch.no_grad():  # targets that differ from the online critics
        for t in ours.target_qvalue_network_params.values(True, True):
            t.add_(0.05 * torch.randn_like(t))
    bench.OBS, bench.ACT, bench.CELLS = OBS_DIM, ACT_DIM, CELLS
    theirs = TorchRLSACLoss(
        ours.actor_network,
        bench.torchrl_critic(2),
        num_qvalue_nets=2,
        loss_function="l2",
        action_spec=action_spec(),
        alpha_init=0.3,
    )
    theirs.make_value_estimator(gamma=0.9)
    bench.copy_ensemble(ours, theirs)
    batch = ted_batch(64)
    torch.manual_seed(5)
    a = ours(batch.clone())
    torch.manual_seed(5)
    b = theirs(batch.clone())
    for key in ("loss_actor", "loss_qvalue", "loss_alpha", "entropy", "alpha"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_cql_matches_torchrl_cqlloss_and_a_hand_computation():
    bench = bench_module()
    ours = bench.OursCQL()
    ref, got = bench.cql_agreement(ours, bench.TorchRLCQL(ours), bench.make_data(64))
    assert bench.rel_diff(ref, got) < 1e-5, (ref, got)
    assert ours.loss.n_action_samples == bench.CQL_SAMPLES  # restored

    # the conservative term with n > 1 samples: logsumexp over all 3n actions of a state
    loss = cql(n_action_samples=4, cql_weight=2.0, spec=Bounded(-2.0, 2.0, shape=(ACT_DIM,)))
    batch = ted_batch(16, low=-2.0, high=2.0)
    obs, act, s2 = batch["observation"], batch["action"], batch["next", "observation"]
    torch.manual_seed(3)
    out = loss.critic_loss(batch)
    torch.manual_seed(3)
    loss._next_value(s2)  # the backup's draws come first
    uniform = -2.0 + 4.0 * torch.rand(16, 4, ACT_DIM)
    a_pi, logp_pi = loss._sample(obs, 4)
    a_next, logp_next = loss._sample(s2, 4)
    q = loss.qvalue_network
    expected = 0.0
    for i in range(2):
        rows = []
        for b in range(16):
            acts = torch.cat([uniform[b], a_pi[b], a_next[b]])
            dens = torch.cat([torch.full((4,), -ACT_DIM * math.log(4.0)), logp_pi[b, :, 0]])
            dens = torch.cat([dens, logp_next[b, :, 0]])
            qs = q.values(obs[b].expand(12, -1), acts)[i, :, 0]
            rows.append(torch.logsumexp(qs - dens, 0) - q.values(obs[b], act[b])[i, 0])
        expected = expected + torch.stack(rows).mean()
    torch.testing.assert_close(out["loss_cql"], 2.0 * expected, rtol=1e-5, atol=1e-5)


def test_cql_lagrange_terms():
    loss = cql_lagrange(alpha_prime_init=2.0)
    loss.lagrange_threshold = 0.25
    batch = ted_batch()
    torch.manual_seed(0)
    gap = loss._conservative_gap(
        batch["observation"],
        batch["next", "observation"],
        loss.qvalue_network.values(batch["observation"], batch["action"]),
    )
    torch.manual_seed(0)
    loss._next_value(batch["next", "observation"])  # the backup draws first in critic_loss
    torch.manual_seed(0)
    out = loss.critic_loss(batch)
    torch.testing.assert_close(out["loss_cql"], 2.0 * 5.0 * (gap - 0.25).sum().detach())
    torch.testing.assert_close(out["loss_alpha_prime"], -(2.0 * 5.0 * (gap.detach() - 0.25)).mean())
    # the multiplier grows while the gap exceeds the threshold
    opt = torch.optim.SGD(loss.parameter_groups()["alpha_prime"], lr=0.1)
    before = float(loss.alpha_prime)
    sign = float(torch.sign((gap.detach() - 0.25).mean()))
    out["loss_alpha_prime"].backward()
    opt.step()
    assert (float(loss.alpha_prime) - before) * sign > 0


def test_awac_matches_plain_pytorch_on_one_batch():
    bench = bench_module()
    ours = bench.OursAWAC()
    ref, rows = bench.agreement(ours, [bench.PlainAWAC(ours)], bench.make_data(64))
    for name, _, diff in rows:
        assert diff < 1e-5, name


def test_awac_weights_are_normalised_over_the_batch():
    loss = awac(lam=0.5)
    out = loss(ted_batch(64))
    torch.testing.assert_close(out["weight_mean"], torch.tensor(1.0))
    loss.lam = 1e6  # flat weights: the actor loss is the negative log-likelihood
    out = loss(ted_batch(64))
    assert float(out["weight_max"]) == pytest.approx(1.0, abs=1e-4)
    assert out["loss_actor"].item() == pytest.approx(-float(out["log_prob_mean"]), rel=1e-4)


# --------------------------------------------------------------------------- policies
@pytest.mark.parametrize("make", [sac, cql, awac])
def test_policy_bounds_and_exploration(make):
    spec = Bounded(-2.0, 2.0, shape=(ACT_DIM,))
    policy = make(spec=spec).policy
    td = TensorDict({"observation": torch.randn(256, OBS_DIM) * 3}, [256])
    with set_exploration_type(ExplorationType.RANDOM):
        a1, a2 = policy(td.clone())["action"], policy(td.clone())["action"]
    assert not torch.equal(a1, a2)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        d1, d2 = policy(td.clone())["action"], policy(td.clone())["action"]
        single = policy(TensorDict({"observation": torch.randn(OBS_DIM)}, []))["action"]
    assert torch.equal(d1, d2) and single.shape == (ACT_DIM,)
    for a in (a1, a2, d1):
        assert a.shape == (256, ACT_DIM) and bool((a.abs() <= 2.0).all())


@pytest.mark.parametrize("make", [sac, awac])
def test_samples_inside_the_loss_are_random_under_deterministic(make):
    """torchrl runs forward under DETERMINISTIC; the loss samples anyway (RANDOM inside)."""
    loss = make()
    obs = torch.randn(64, OBS_DIM)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        a1, _ = loss._sample(obs)
        a2, _ = loss._sample(obs)
    assert not torch.equal(a1, a2)


# --------------------------------------------------------------------------- hyper-parameters
def test_cql_weight_and_threshold_can_be_annealed():
    loss = cql_lagrange()
    batch = ted_batch()
    torch.manual_seed(0)
    before = loss(batch)["loss_cql"]
    loss.lagrange_threshold = 0.5
    loss.cql_weight = 1.0
    torch.manual_seed(0)
    assert not torch.allclose(loss(batch)["loss_cql"], before)
    assert float(loss.lagrange_threshold) == 0.5 and float(loss.cql_weight) == 1.0
    assert {"_cql_weight", "_lagrange_threshold"} <= set(loss.state_dict())
    with pytest.raises(ValueError, match="cql_weight"):
        loss.cql_weight = -1.0
    with pytest.raises(ValueError, match="lagrange_threshold"):
        loss.lagrange_threshold = float("nan")
    with pytest.raises(ValueError, match="lagrange=True"):
        cql().lagrange_threshold = 0.5  # no effect on the fixed-weight variant


def test_awac_lambda_can_be_annealed():
    loss = awac()
    batch = ted_batch()
    torch.manual_seed(0)
    before = loss(batch)["weight_max"]
    loss.lam = 0.01
    torch.manual_seed(0)
    assert loss(batch)["weight_max"] > before
    assert "_lam" in loss.state_dict()
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="lam"):
            loss.lam = bad


# --------------------------------------------------------------------------- registry
TASKS = ["halfcheetah-medium", "hopper-medium", "pointmaze-umaze", "antmaze-umaze"]


@pytest.mark.parametrize("name", ["sac", "cql", "awac"])
@pytest.mark.parametrize("task", TASKS)
def test_registry_resolves_and_builds(name, task):
    cfg = algo_config(name, task=task, overrides={"num_cells": CELLS})
    assert cfg.name == name
    loss = get_algorithm(name).make_loss(cfg, observation_dim=OBS_DIM, action_spec=action_spec())
    groups = loss.parameter_groups()
    assert set(cfg.lr) == set(groups) == set(cfg.lr_schedule)
    assert float(loss.gamma) == pytest.approx(cfg.gamma)
    assert loss.qvalue_network.num_members == cfg.num_qvalue
    for key, value in cfg.hyperparameters().items():
        if not hasattr(loss, key):
            continue  # a builder setting (e.g. reward_normalization) or a network size
        if isinstance(value, str):
            assert getattr(loss, key) == value, key
        else:
            assert float(getattr(loss, key)) == pytest.approx(float(value)), key
    if cfg.loosening:  # the loosened hyper-parameter is a settable attribute of the loss
        setattr(loss, cfg.loosening["param"], cfg.loosening["end"])
        assert float(getattr(loss, cfg.loosening["param"])) == pytest.approx(cfg.loosening["end"])


def test_registry_family_values():
    assert algo_config("cql", task="antmaze-umaze").lagrange is True
    assert algo_config("cql", task="halfcheetah-medium").lagrange is False
    assert algo_config("cql", task="halfcheetah-medium").loosening["param"] == "cql_weight"
    assert algo_config("awac", task="antmaze-umaze").reward_shift == -1.0
    assert algo_config("awac", task="hopper-medium").loosening == {"param": "lam", "end": 0.1}
    sac_cfg = algo_config("sac", task="hopper-medium")
    assert (sac_cfg.batch_size, sac_cfg.tau, sac_cfg.alpha_init) == (256, 0.005, 1.0)
    assert set(sac_cfg.lr.values()) == {3e-4}


# --------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_awac_short_offline_run_improves_the_return(one_thread):
    from torchrl.envs import GymEnv

    data = pendulum_dataset()
    eval_env = GymEnv("Pendulum-v1")
    loss = make_awac_loss(3, eval_env.action_spec, num_cells=64, gamma=0.9)
    initial = pendulum_return(loss.policy, eval_env)
    train_offline(loss, data, 600)
    final = pendulum_return(loss.policy, eval_env)
    assert final > initial + 400, (initial, final)


def contextual_data(n: int, noise: float, generator: torch.Generator) -> TensorDict:
    """One-step task: reward ``-|a - a*(s)|^2`` with ``a*(s) = tanh(2 s_0) * [1, -0.5]``."""
    obs = torch.rand(n, OBS_DIM, generator=generator) * 2 - 1
    best = best_action(obs)
    action = (best + noise * torch.randn(n, ACT_DIM, generator=generator)).clamp(-1, 1)
    done = torch.ones(n, 1, dtype=torch.bool)
    reward = -(action - best).square().sum(-1, keepdim=True)
    next_ = {"observation": obs, "reward": reward, "done": done, "terminated": done.clone()}
    return TensorDict({"observation": obs, "action": action, "next": next_}, [n])


def best_action(obs: torch.Tensor) -> torch.Tensor:
    return torch.tanh(2 * obs[:, :1]) * torch.tensor([1.0, -0.5])


def mean_reward(policy, obs: torch.Tensor) -> float:
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        action = policy(TensorDict({"observation": obs}, [obs.shape[0]]))["action"]
    return -(action - best_action(obs)).square().sum(-1).mean().item()


@pytest.mark.slow
@pytest.mark.parametrize("name,noise", [("sac", 1.0), ("cql", 0.3)])
def test_q_maximising_actor_learns_from_an_offline_dataset(name, noise, one_thread):
    """SAC and CQL improve the policy through the critic alone (no likelihood term).

    On the Pendulum dataset of the AWAC and IQL tests, their critics need far more updates than
    a test affords before the actor's Q-gradient points the right way (no return improvement
    was seen within 5000 updates), so this runs the same offline loop on a one-step task whose
    best action depends on the state: SAC on broad data, CQL on a narrow behavior policy.
    """
    g = torch.Generator().manual_seed(0)
    data = contextual_data(4096, noise, g)
    make = make_sac_loss if name == "sac" else make_cql_loss
    kwargs = {"n_action_samples": 4} if name == "cql" else {}
    loss = make(OBS_DIM, action_spec(), num_cells=64, depth=2, alpha_init=0.05, **kwargs)
    test_obs = torch.rand(512, OBS_DIM, generator=g) * 2 - 1
    initial = mean_reward(loss.policy, test_obs)
    train_offline(loss, data, 400)
    final = mean_reward(loss.policy, test_obs)
    assert final > 0.2 * initial and final > -0.15, (initial, final)
