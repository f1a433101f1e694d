"""Tests of IQLLoss and LAPOLoss on the shared QEnsemble (tiny specs, see loss_harness)."""

from __future__ import annotations

import math

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

from torchrl_o3f.modules import O3FActionSelector, QEnsemble
from torchrl_o3f.modules.actors import action_bounds, make_iql_actor, make_value_network
from torchrl_o3f.modules.lapo import LAPOCVAE, LAPOPolicy, LatentActor
from torchrl_o3f.objectives import (
    IQLLoss,
    LAPOLoss,
    expectile_loss,
    lapo_reward_config,
    make_iql_loss,
    make_lapo_loss,
)

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")


def iql(**kw) -> IQLLoss:
    kw.setdefault("num_cells", CELLS)
    return make_iql_loss(OBS_DIM, action_spec(), **kw)


def lapo(data=None, **kw) -> LAPOLoss:
    kw.setdefault("num_cells", CELLS)
    kw.setdefault("depth", 2)
    data = ted_batch(64) if data is None else data
    return make_lapo_loss(OBS_DIM, action_spec(), data=data, **kw)


def adam_step(loss, lr=1e-3, key_filter=lambda k: k.startswith("loss_"), batch=None):
    opts = [torch.optim.Adam(p, lr) for p in loss.parameter_groups().values()]
    out = loss(ted_batch(32) if batch is None else batch)
    sum(v for k, v in out.items() if key_filter(k)).backward()
    for o in opts:
        o.step()
    return out


# --------------------------------------------------------------------------- gradient isolation
@pytest.mark.parametrize(
    "method,key,group",
    [
        ("forward", "loss_actor", "actor"),
        ("forward", "loss_qvalue", "qvalue"),
        ("forward", "loss_value", "value"),
        ("actor_loss", "loss_actor", "actor"),
        ("qvalue_loss", "loss_qvalue", "qvalue"),
        ("value_loss", "loss_value", "value"),
    ],
)
def test_iql_each_loss_moves_only_its_network(method, key, group):
    loss = iql()
    groups = loss.parameter_groups()
    out = getattr(loss, method)(ted_batch())
    out[key].backward()
    assert groups_with_grad(groups) == {group}
    for k, v in out.items():
        if not k.startswith("loss_"):
            assert not v.requires_grad, k


@pytest.mark.parametrize(
    "method,keys,group",
    [
        ("forward", ("loss_qvalue", "loss_value"), "critic"),
        ("forward", ("loss_vae",), "vae"),
        ("forward", ("loss_actor",), "actor"),
        ("critic_loss", ("loss_qvalue", "loss_value"), "critic"),
        ("vae_loss", ("loss_vae",), "vae"),
        ("actor_loss", ("loss_actor",), "actor"),
    ],
)
def test_lapo_each_loss_moves_only_its_network(method, keys, group):
    loss = lapo()
    groups = loss.parameter_groups()
    out = getattr(loss, method)(ted_batch())
    sum(out[k] for k in keys).backward()
    assert groups_with_grad(groups) == {group}
    # the decoder used by the actor is the *target* decoder: no gradient reaches it either
    assert all(not t.requires_grad for t in loss.target_decoder_params.values(True, True))


def test_parameter_groups_partition_the_trainable_parameters():
    for loss in (iql(), lapo()):
        groups = loss.parameter_groups()
        ids = [id(p) for ps in groups.values() for p in ps]
        assert len(ids) == len(set(ids))
        assert set(ids) == {id(p) for p in loss.parameters()}


# --------------------------------------------------------------------------- shared ensemble
def test_iql_trains_the_ensemble_the_selector_reads():
    loss = iql()
    selector = O3FActionSelector(loss.qvalue_network, action_spec(), num_candidates=8)
    assert selector.qvalue_network is loss.qvalue_network
    obs, act = torch.randn(4, OBS_DIM), torch.rand(4, ACT_DIM)
    before = selector.qvalue_network.values(obs, act).detach().clone()
    adam_step(loss, lr=1e-2)
    after = selector.qvalue_network.values(obs, act)
    assert not torch.allclose(before, after)
    # the loss holds no copy: its own parameter group is the ensemble's parameters
    assert all(
        p is q
        for p, q in zip(loss.parameter_groups()["qvalue"], selector.qvalue_network.parameters())
    )


def test_lapo_ensemble_takes_raw_inputs_and_is_shared():
    data = ted_batch(128)
    data["observation"] = data["observation"] * 5 + 3
    loss = lapo(data)
    q = loss.qvalue_network
    assert torch.allclose(q.observation_loc, loss.cvae.observation_loc)
    assert torch.allclose(q.action_scale, loss.cvae.action_scale)
    selector = O3FActionSelector(q, action_spec(), num_candidates=8)
    before = q.values(data["observation"][:4], data["action"][:4]).detach().clone()
    opt = torch.optim.Adam(loss.parameter_groups()["critic"], 1e-2)
    loss.critic_loss(data)["loss_qvalue"].backward()
    opt.step()
    assert not torch.allclose(
        before, selector.qvalue_network.values(data["observation"][:4], data["action"][:4])
    )


# --------------------------------------------------------------------------- target networks
@pytest.mark.parametrize("make", [iql, lapo])
def test_soft_update_moves_targets_towards_online(make):
    loss = make()
    updater = SoftUpdate(loss, tau=0.5)
    adam_step(loss, lr=1e-2)
    online = loss.qvalue_network.weights[1].detach()
    target = loss.target_qvalue_network_params["weights", "1"]
    gap = (online - target).abs().sum()
    assert gap > 0
    updater.step()
    assert (online - loss.target_qvalue_network_params["weights", "1"]).abs().sum() < gap
    assert not any(t.requires_grad for t in loss.target_qvalue_network_params.values(True, True))


def test_lapo_policy_acts_through_the_target_decoder():
    loss = lapo()
    updater = SoftUpdate(loss, tau=0.9)
    policy = loss.policy
    obs = TensorDict({"observation": torch.randn(5, OBS_DIM)}, [5])
    a0 = policy(obs.clone())["action"]
    # training the online decoder alone does not move the acting policy ...
    opt = torch.optim.SGD(loss.parameter_groups()["vae"], lr=1.0)
    loss.vae_loss(ted_batch())["loss_vae"].backward()
    opt.step()
    assert torch.equal(policy(obs.clone())["action"], a0)
    # ... until the target decoder follows it
    updater.step()
    assert not torch.equal(policy(obs.clone())["action"], a0)


# --------------------------------------------------------------------------- state dict, keys
@pytest.mark.parametrize("make", [iql, lapo])
def test_state_dict_round_trip(make):
    src = make()
    SoftUpdate(src, tau=0.1)
    adam_step(src, lr=1e-2)
    if isinstance(src, IQLLoss):
        src.expectile, src.temperature = 0.85, 5.0
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


@pytest.mark.parametrize("make", [iql, lapo])
def test_set_keys(make):
    loss = make()
    names = {"observation": "obs", "action": "act", "reward": "rew", "terminated": "term"}
    batch = ted_batch(keys=names)
    with pytest.raises(KeyError, match="set_keys"):
        loss(batch)
    loss.set_keys(**names)
    out = loss(batch)
    assert torch.isfinite(out["loss_qvalue"])
    assert ("next", "rew") in loss.in_keys


def test_missing_key_error_names_the_fix():
    with pytest.raises(KeyError, match="set_keys"):
        iql()(ted_batch().exclude("action"))


def test_iql_matches_torchrl_maths_on_one_batch():
    """Same networks, same batch: our IQL losses equal a direct re-computation."""
    loss = iql(qvalue_reduction="min")
    loss.make_value_estimator(gamma=0.9)
    batch = ted_batch(16)
    out = loss(batch)
    q, v = loss.qvalue_network, loss.value_network.module
    s, a = batch["observation"], batch["action"]
    r, d, s2 = batch["next", "reward"], batch["next", "terminated"], batch["next", "observation"]
    tq = (
        torch.stack([q.values(s, a, loss.target_qvalue_network_params)[i] for i in range(5)])
        .min(0)
        .values
    )
    vs = v(s)
    exp_value = torch.where(tq - vs > 0, 0.7, 0.3) * (tq - vs) ** 2
    w = torch.exp(3.0 * (tq - vs)).clamp_max(100)
    logp = loss.actor_network.get_dist(batch.select("observation")).log_prob(a)[:, None]
    target = r + 0.9 * (~d) * v(s2)
    exp_q = ((q.values(s, a) - target) ** 2).mean((1, 2)).sum()
    torch.testing.assert_close(out["loss_value"], exp_value.mean())
    torch.testing.assert_close(out["loss_actor"], -(w * logp).mean())
    torch.testing.assert_close(out["loss_qvalue"], exp_q)


# --------------------------------------------------------------------------- hyper-parameters
def test_iql_expectile_and_temperature_can_be_annealed():
    loss = iql()
    batch = ted_batch()
    lv, la = loss(batch)["loss_value"], loss(batch)["loss_actor"]
    loss.expectile = 0.95
    loss.temperature.fill_(0.0)  # in place works too
    out = loss(batch)
    assert not torch.allclose(out["loss_value"], lv)
    assert torch.allclose(out["weight_mean"], torch.tensor(1.0))  # exp(0 * A) = 1
    assert not torch.allclose(out["loss_actor"], la)
    assert "_expectile" in loss.state_dict() and "_temperature" in loss.state_dict()
    with pytest.raises(ValueError, match="expectile"):
        loss.expectile = 1.5


def test_iql_reductions_and_bad_arguments():
    batch = ted_batch()
    for how in ("min", "mean", "subset_min"):
        assert torch.isfinite(iql(qvalue_reduction=how)(batch)["loss_value"])
    with pytest.raises(ValueError, match="qvalue_reduction"):
        iql(qvalue_reduction="max2")
    with pytest.raises(ValueError, match="subset_size"):
        iql(qvalue_reduction="subset_min", subset_size=9)
    with pytest.raises(TypeError, match="QEnsemble"):
        actor = make_iql_actor(OBS_DIM, action_spec(), num_cells=CELLS)
        IQLLoss(actor, make_value_network(OBS_DIM), make_value_network(OBS_DIM))
    with pytest.raises(ValueError, match="gamma"):
        iql().make_value_estimator(gamma=2.0)
    with pytest.raises(TypeError, match="unexpected"):
        iql().make_value_estimator(gamma=0.9, lmbda=0.9)


def test_expectile_loss():
    d = torch.tensor([2.0, -2.0])
    torch.testing.assert_close(expectile_loss(d, 0.8), torch.tensor([3.2, 0.8]))


def test_iql_log_prob_at_the_bounds_is_finite():
    spec = action_spec(low=-2.0, high=2.0)
    actor = make_iql_actor(OBS_DIM, spec, num_cells=CELLS)
    td = TensorDict({"observation": torch.randn(4, OBS_DIM)}, [4])
    bounds = torch.tensor([[-2.0, 2.0]] * 4)
    assert torch.isfinite(actor.get_dist(td).log_prob(bounds)).all()


def test_iql_policy_bounds_and_exploration():
    spec = action_spec(low=-0.5, high=0.5)
    loss = make_iql_loss(OBS_DIM, spec, num_cells=CELLS)
    with torch.no_grad():
        loss.actor_network.module[0].module.log_std.fill_(2.0)  # very wide
    td = TensorDict({"observation": torch.randn(256, OBS_DIM)}, [256])
    with set_exploration_type(ExplorationType.RANDOM):
        a1 = loss.policy(td.clone())["action"]
        a2 = loss.policy(td.clone())["action"]
    assert not torch.equal(a1, a2) and a1.abs().max() <= 0.5
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        d1 = loss.policy(td.clone())["action"]
        d2 = loss.policy(td.clone())["action"]
    assert torch.equal(d1, d2) and d1.abs().max() <= 0.5


def test_lapo_policy_unbatched_clipped_and_deterministic():
    cvae = LAPOCVAE(OBS_DIM, ACT_DIM, num_cells=CELLS, action_loc=torch.ones(ACT_DIM) * 5)
    policy = LAPOPolicy(cvae, LatentActor(OBS_DIM, 2 * ACT_DIM, num_cells=CELLS), -1.0, 1.0)
    td = TensorDict({"observation": torch.randn(OBS_DIM)}, [])
    with set_exploration_type(ExplorationType.RANDOM):
        a = policy(td)["action"]
    assert a.shape == (ACT_DIM,) and torch.equal(a, torch.ones(ACT_DIM))  # clipped at high
    with pytest.raises(KeyError, match="observation"):
        policy(TensorDict({"obs": torch.randn(OBS_DIM)}, []))


def test_lapo_reward_config():
    r = torch.tensor([0.0, 1.0, 4.0])
    cfg = lapo_reward_config(r, kind="max", gamma=0.99)
    assert cfg["reward_scale"] == 0.25 and math.isclose(cfg["value_max"], 100.0)
    assert lapo_reward_config(r, kind="antmaze")["reward_scale"] == 100.0
    neg = lapo_reward_config(torch.tensor([-4.0, -2.0]), kind="max", gamma=0.5)
    assert neg["reward_scale"] == 0.25 and neg["value_max"] == -1.0
    with pytest.raises(ValueError, match="kind"):
        lapo_reward_config(r, kind="min")
    # the registered builder takes antmaze's values from lapo.yaml
    from torchrl_o3f.objectives import algo_config, build_lapo

    cfg = algo_config("lapo", task="antmaze-umaze", overrides={"num_cells": CELLS, "depth": 1})
    loss = build_lapo(cfg, observation_dim=OBS_DIM, action_spec=action_spec(), data=ted_batch())
    assert loss.q_min_weight == 0.7 and loss.value_max == 100.0


def test_lapo_bad_arguments():
    cvae = LAPOCVAE(OBS_DIM, ACT_DIM, num_cells=CELLS)
    actor = LatentActor(OBS_DIM, 2 * ACT_DIM, num_cells=CELLS)
    q = QEnsemble(OBS_DIM, ACT_DIM, num_cells=CELLS)
    v = torch.nn.Linear(OBS_DIM, 1)
    with pytest.raises(ValueError, match="target_subset_size"):
        LAPOLoss(cvae, actor, q, v, action_spec=action_spec(), target_subset_size=6)
    with pytest.raises(ValueError, match="disagree"):
        LAPOLoss(cvae, actor, QEnsemble(OBS_DIM + 1, ACT_DIM), v, action_spec=action_spec())
    with pytest.raises(KeyError, match="TED"):
        make_lapo_loss(OBS_DIM, action_spec(), data=TensorDict({}, []))


# --------------------------------------------------------------------------- learning checks
def bandit_data(actions: torch.Tensor, rewards: torch.Tensor, obs_dim: int = 1) -> TensorDict:
    """One-step bandit transitions: every transition terminates, so Q(s, a) should equal r."""
    n = actions.shape[0]
    obs = 0.01 * torch.randn(n, obs_dim)
    done = torch.ones(n, 1, dtype=torch.bool)
    return TensorDict(
        {
            "observation": obs,
            "action": actions,
            "next": {"observation": obs, "reward": rewards, "done": done, "terminated": done},
        },
        batch_size=[n],
    )


@pytest.mark.slow
def test_iql_bandit_q_fits_rewards_and_value_tends_to_best_action(one_thread):
    arms = torch.tensor([-0.8, -0.2, 0.4, 0.9])
    arm_rewards = torch.tensor([0.1, 0.5, 1.0, 0.3])
    idx = torch.arange(64) % 4
    data = bandit_data(arms[idx, None], arm_rewards[idx, None])
    spec = action_spec(act_dim=1)
    loss = make_iql_loss(1, spec, num_cells=32, num_qvalue=3, expectile=0.5)
    updater = SoftUpdate(loss, tau=0.5)
    groups = loss.parameter_groups()
    opt_q = torch.optim.Adam(groups["qvalue"], 1e-2)
    for _ in range(250):
        opt_q.zero_grad()
        loss.qvalue_loss(data)["loss_qvalue"].backward()
        opt_q.step()
        updater.step()
    obs = torch.zeros(4, 1)
    q = loss.qvalue_network.values(obs, arms[:, None]).detach()  # [m, 4, 1]
    torch.testing.assert_close(q.squeeze(-1), arm_rewards.expand(3, 4), atol=0.05, rtol=0)
    opt_v = torch.optim.Adam(groups["value"], 1e-2)
    fitted = []
    for expectile in (0.5, 0.9, 0.99):
        loss.expectile = expectile
        for _ in range(200):
            opt_v.zero_grad()
            loss.value_loss(data)["loss_value"].backward()
            opt_v.step()
        fitted.append(loss.value_network.module(torch.zeros(1, 1)).item())
    assert abs(fitted[0] - arm_rewards.mean().item()) < 0.05  # expectile 0.5: the mean
    assert fitted[0] < fitted[1] < fitted[2]
    assert fitted[2] > 0.9  # -> max over in-data actions (1.0) as expectile -> 1


@pytest.mark.slow
def test_lapo_bandit_cvae_keeps_both_modes_and_policy_picks_the_good_one(one_thread):
    # 3-d actions: with LAPO's KL weight of 1 a 1-d bandit is cheaper to fit with one mode
    n, dim = 256, 3
    good = torch.arange(n) % 2 == 0
    actions = torch.where(good, 0.6, -0.6)[:, None].expand(n, dim) + 0.03 * torch.randn(n, dim)
    data = bandit_data(actions, good.float()[:, None])
    loss = make_lapo_loss(1, action_spec(act_dim=dim), data=data, num_cells=32, depth=2)
    updater = SoftUpdate(loss, tau=0.05)
    opts = {k: torch.optim.Adam(v, 3e-3) for k, v in loss.parameter_groups().items()}
    for _ in range(600):
        out = loss(data[torch.randint(0, n, (64,))])
        for o in opts.values():
            o.zero_grad()
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        for o in opts.values():
            o.step()
        updater.step()
    vae = loss.cvae
    with torch.no_grad():
        obs = vae.normalize_observation(torch.zeros(2, 1))
        modes = torch.tensor([[0.6], [-0.6]]).expand(2, dim)
        mu, _ = vae.encode(obs, vae.normalize_action(modes))
        recon = vae.unnormalize_action(vae.decoder(obs, mu))
        action = loss.policy(TensorDict({"observation": torch.zeros(1)}, []))["action"]
    torch.testing.assert_close(recon, modes, atol=0.15, rtol=0)  # both modes survive
    torch.testing.assert_close(action, modes[0], atol=0.2, rtol=0)  # the good one is chosen


@pytest.mark.slow
def test_iql_short_offline_run_improves_the_return(one_thread):
    from torchrl.envs import GymEnv

    data = pendulum_dataset()
    eval_env = GymEnv("Pendulum-v1")
    loss = make_iql_loss(3, eval_env.action_spec, num_cells=64, gamma=0.9)
    initial = pendulum_return(loss.policy, eval_env)
    train_offline(loss, data, 600)
    final = pendulum_return(loss.policy, eval_env)
    assert final > initial + 400, (initial, final)


def test_docs_examples_run():
    """The python blocks of docs/losses.md run as written (in order, one namespace)."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[1] / "docs" / "losses.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    namespace = {"__name__": "docs_example"}
    for block in blocks:
        exec(compile(block, "docs/losses.md", "exec"), namespace)
    assert float(namespace["loss"].expectile) == pytest.approx(0.85)


@pytest.mark.parametrize("make", ["iql", "lapo"])
def test_policy_and_selector_in_a_collector(make):
    from tensordict.nn import TensorDictSequential
    from torchrl.collectors import Collector
    from torchrl.envs import GymEnv

    env = GymEnv("Pendulum-v1")
    spec = env.action_spec
    if make == "iql":
        loss = make_iql_loss(3, spec, num_cells=CELLS)
    else:
        data = ted_batch(64, 3, 1, low=-2.0, high=2.0)
        loss = make_lapo_loss(3, spec, data=data, num_cells=CELLS, depth=1)
    selector = O3FActionSelector(loss.qvalue_network, spec, num_candidates=8, sigma=0.2)
    policy = TensorDictSequential(loss.policy, selector)
    collector = Collector(
        env, policy, frames_per_batch=20, total_frames=20, auto_register_policy_transforms=False
    )
    for batch in collector:
        assert batch["action"].shape == (20, 1)
        assert batch["action"].abs().max() <= 2.0
    collector.shutdown()


def test_iql_fast_log_prob_equals_the_distribution():
    loss = iql()
    batch = ted_batch()
    obs, act = batch["observation"], batch["action"]
    fast = loss._log_prob(batch, obs, act)
    dist = loss.actor_network.get_dist(batch.select("observation"))
    torch.testing.assert_close(fast, dist.log_prob(act)[:, None])


def test_iql_agrees_with_torchrl_and_plain_pytorch_on_one_batch():
    """The benchmark's peers (torchrl's IQLLoss, CORL-style PyTorch) compute the same losses."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "bench_losses.py"
    spec = importlib.util.spec_from_file_location("bench_losses", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ours = bench.Ours()
    _, rows = bench.agreement(
        ours, [bench.TorchRL(ours), bench.PlainCORL(ours)], bench.make_data(64)
    )
    for name, _, diff in rows:
        assert diff < 1e-5, name


def test_actor_from_a_batched_env_spec():
    """A SerialEnv's action spec ([num_envs, action_dim]) gives one env's actor, which serves
    batched and unbatched tensordicts; envs with different bounds are refused clearly."""
    spec = Bounded(-torch.ones(16, 3) * 0.5, torch.ones(16, 3) * 0.5, shape=(16, 3))
    low, high = action_bounds(spec)
    assert low.shape == high.shape == (3,)
    actor = make_iql_actor(OBS_DIM, spec, num_cells=CELLS)
    with set_exploration_type(ExplorationType.RANDOM):
        batched = actor(TensorDict({"observation": torch.randn(16, OBS_DIM)}, [16]))["action"]
        single = actor(TensorDict({"observation": torch.randn(OBS_DIM)}, []))["action"]
    assert batched.shape == (16, 3) and single.shape == (3,)
    assert batched.abs().max() <= 0.5
    low = -torch.ones(2, 3)
    low[1] = -2.0
    with pytest.raises(ValueError, match="different bounds"):
        make_iql_actor(OBS_DIM, Bounded(low, torch.ones(2, 3), shape=(2, 3)), num_cells=CELLS)
