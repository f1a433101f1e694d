import itertools
import math

import pytest
import torch
from loss_harness import ted_batch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torchrl.collectors import Collector
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_o3f.modules import O3FActionSelector, QEnsemble, StackedCritic, make_mlp

OBS, ACT = 4, 2


def _spec(low=-1.0, high=1.0, n=ACT):
    return Bounded(low=low, high=high, shape=(n,))


def _member_value(q: QEnsemble, i: int, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """Reference Q_i(s, a) for one unbatched pair: a plain loop over layers, no broadcasting."""
    h = torch.cat([obs, act], -1)
    n = len(q.weights)
    for j in range(n):
        h = h @ q.weights[j][i] + q.biases[j][i, 0]
        if j < n - 1:
            h = torch.relu(h)
    return h.squeeze()


def _brute_force(q, obs, action, sigma, omega, n, seed, low=-1.0, high=1.0):
    """Same draws as the selector (one randn call), then a python loop over candidates/members."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, *action.shape), generator=g)
    batch = action.shape[:-1]
    out = torch.empty_like(action)
    for idx in itertools.product(*[range(b) for b in batch]):
        best, best_a = -math.inf, None
        for c in range(n):
            cand = (action[idx] + sigma * noise[(c, *idx)]).clamp(low, high)
            with torch.no_grad():
                vals = [float(_member_value(q, i, obs[idx], cand)) for i in range(q.num_members)]
            mean = sum(vals) / len(vals)
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
            f = mean + omega * std
            if f > best:
                best, best_a = f, cand
        out[idx] = best_a
    return out


@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
@pytest.mark.parametrize("omega", [0.0, 1.5])
def test_chosen_action_is_brute_force_argmax(batch, omega):
    q = QEnsemble(OBS, ACT, num_members=3, num_cells=8)
    sel = O3FActionSelector(
        q,
        _spec(),
        num_candidates=17,
        sigma=0.5,
        omega=omega,
        generator=torch.Generator().manual_seed(7),
    )
    obs, action = torch.randn(*batch, OBS), torch.rand(*batch, ACT) * 2 - 1
    td = TensorDict({"observation": obs, "action": action}, batch)
    out = sel(td.clone())
    expected = _brute_force(q, obs, action, 0.5, omega, 17, seed=7)
    torch.testing.assert_close(out["action"], expected)
    assert out.batch_size == batch


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_brute_force_argmax_with_many_candidates(batch):
    """Hundreds of candidates close to the policy action on a wider critic: the dense batched
    product picks what a loop over candidates and members picks."""
    n = {(): 400, (3,): 150, (2, 3): 300}[batch]
    torch.manual_seed(3)
    q = QEnsemble(OBS, ACT, num_members=3, num_cells=64)
    sel = O3FActionSelector(
        q, _spec(), num_candidates=n, sigma=0.1, omega=0.5, generator=torch.Generator()
    )
    obs, action = torch.randn(*batch, OBS), torch.rand(*batch, ACT) * 2 - 1
    td = TensorDict({"observation": obs, "action": action}, batch)
    sel.generator.manual_seed(11)
    out = sel(td.clone())
    expected = _brute_force(q, obs, action, 0.1, 0.5, n, seed=11)
    torch.testing.assert_close(out["action"], expected)


def test_candidates_follow_gaussian_before_projection():
    sigma = torch.tensor([0.1, 0.7])
    sel = O3FActionSelector(
        QEnsemble(OBS, ACT, num_members=2, num_cells=8), _spec(), num_candidates=20000, sigma=sigma
    )
    action = torch.tensor([[0.95, -0.3], [0.0, 0.5]])  # near a bound: projection comes later
    cands = sel.sample_candidates(action)
    assert cands.shape == (20000, 2, ACT)
    n = cands.shape[0]
    # standard error of the mean: sigma / sqrt(n); of the std: sigma / sqrt(2n); 5 of them
    mean_err = (cands.mean(0) - action).abs()
    assert (mean_err < 5 * sigma / math.sqrt(n)).all(), mean_err
    std_err = (cands.std(0) - sigma).abs()
    assert (std_err < 5 * sigma / math.sqrt(2 * n)).all(), std_err
    assert (cands > 1.0).any()  # unprojected: the samples spill over the bound


def test_executed_actions_lie_in_spec():
    spec = Bounded(low=torch.tensor([-1.0, 0.0]), high=torch.tensor([0.5, 3.0]), shape=(2,))
    sel = O3FActionSelector(QEnsemble(OBS, 2, num_members=2, num_cells=8), spec, sigma=2.0)
    action = torch.tensor([[0.5, 0.0], [-1.0, 3.0], [0.0, 1.0]]).repeat(20, 1)
    td = TensorDict({"observation": torch.randn(60, OBS), "action": action}, [60])
    out = sel(td)["action"]
    assert spec.is_in(out)
    assert (out >= spec.space.low).all() and (out <= spec.space.high).all()


@pytest.mark.parametrize(
    "expl", [ExplorationType.DETERMINISTIC, ExplorationType.MODE, ExplorationType.MEAN]
)
def test_passes_through_unless_random(expl):
    sel = O3FActionSelector(QEnsemble(OBS, ACT, num_members=2, num_cells=8), _spec(), sigma=0.5)
    action = torch.rand(5, ACT)
    td = TensorDict({"observation": torch.randn(5, OBS), "action": action.clone()}, [5])
    with set_exploration_type(expl):
        assert torch.equal(sel(td)["action"], action)
    with set_exploration_type(ExplorationType.RANDOM):
        assert not torch.equal(sel(td)["action"], action)


def test_diagnostics_keys_and_gain():
    sel = O3FActionSelector(
        QEnsemble(OBS, ACT, num_members=3, num_cells=8),
        _spec(),
        sigma=0.3,
        diagnostics=True,
        include_policy_action=True,
    )
    action = torch.rand(6, ACT) * 2 - 1
    td = sel(TensorDict({"observation": torch.randn(6, OBS), "action": action.clone()}, [6]))
    assert set(sel.out_keys) == {"action", "policy_action", "o3f_score", "o3f_score_gain"}
    assert torch.equal(td["policy_action"], action)
    assert td["o3f_score"].shape == td["o3f_score_gain"].shape == (6, 1)
    torch.testing.assert_close(
        td["o3f_score"], sel.score(td["observation"], td["action"][None])[0, :, None]
    )
    policy_score = sel.score(td["observation"], action[None])[0, :, None]
    torch.testing.assert_close(td["o3f_score_gain"], td["o3f_score"] - policy_score)
    assert (td["o3f_score_gain"] >= 0).all()  # the policy action is a candidate


def test_include_policy_action():
    a0 = torch.tensor([0.3, -0.2])

    def critic(obs, act):  # peaked at a0: the policy action is the best possible candidate
        return -((act - a0) ** 2).sum(-1, keepdim=True).unsqueeze(0).expand(2, *act.shape[:-1], 1)

    td = TensorDict({"observation": torch.randn(OBS), "action": a0.clone()}, [])
    with_a = O3FActionSelector(critic, _spec(), num_candidates=10, include_policy_action=True)
    without = O3FActionSelector(critic, _spec(), num_candidates=10)
    assert torch.equal(with_a(td.clone())["action"], a0)
    assert not torch.equal(without(td.clone())["action"], a0)


def test_omega_prefers_uncertain_candidates():
    # two members: Q1 = x0 + x1, Q2 = x0 - x1 -> mean x0, std |x1|
    def critic(obs, act):
        return torch.stack([act[..., :1] + act[..., 1:], act[..., :1] - act[..., 1:]])

    obs = torch.zeros(OBS)
    cands = torch.tensor([[0.5, 0.0], [0.4, 0.9], [0.1, 0.2]])
    greedy = O3FActionSelector(critic, _spec(), omega=0.0)
    optimistic = O3FActionSelector(critic, _spec(), omega=1.0)
    torch.testing.assert_close(optimistic.score(obs, cands), torch.tensor([0.5, 1.3, 0.3]))
    assert greedy.score(obs, cands).argmax() == 0
    assert optimistic.score(obs, cands).argmax() == 1
    # end to end: the optimistic selector executes a more uncertain action on average
    td = TensorDict({"observation": torch.zeros(500, OBS), "action": torch.zeros(500, 2)}, [500])
    g = greedy(td.clone())["action"][:, 1].abs().mean()
    o = optimistic(td.clone())["action"][:, 1].abs().mean()
    assert o > g + 0.1


def test_reproducible_with_seeded_generator():
    q = QEnsemble(OBS, ACT, num_members=2, num_cells=8)
    td = TensorDict({"observation": torch.randn(4, OBS), "action": torch.zeros(4, ACT)}, [4])
    outs = [
        O3FActionSelector(q, _spec(), generator=torch.Generator().manual_seed(3))(td.clone())[
            "action"
        ]
        for _ in range(2)
    ]
    assert torch.equal(*outs)


def test_constructor_errors():
    q = QEnsemble(OBS, ACT, num_members=2, num_cells=8)
    with pytest.raises(ValueError, match="num_candidates"):
        O3FActionSelector(q, _spec(), num_candidates=0)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        O3FActionSelector(q, _spec(), sigma=-0.1)
    with pytest.raises(ValueError, match="sigma must be finite"):
        O3FActionSelector(q, _spec(), sigma=float("nan"))
    with pytest.raises(ValueError, match="sigma must be a float or a tensor of 2"):
        O3FActionSelector(q, _spec(), sigma=torch.ones(3))
    with pytest.raises(ValueError, match="omega must be one finite"):
        O3FActionSelector(q, _spec(), omega=float("inf"))
    with pytest.raises(ValueError, match="needs the action spec"):
        O3FActionSelector(q, None)
    with pytest.raises(ValueError, match="3 action dimensions.*size 2"):
        O3FActionSelector(q, _spec(n=3))
    with pytest.raises(TypeError, match="continuous Bounded or Unbounded"):
        O3FActionSelector(q, Categorical(4))
    with pytest.raises(KeyError, match="no entry"):
        O3FActionSelector(q, Composite(other=_spec()))
    with pytest.raises(TypeError, match="qvalue_network must be"):
        O3FActionSelector(object(), _spec())
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        O3FActionSelector(q, _spec(), sigma_end=-1.0)
    with pytest.raises(ValueError, match="annealing_num_steps must be an integer >= 1"):
        O3FActionSelector(q, _spec(), sigma_end=0.1, annealing_num_steps=0)
    # composite and unbounded specs are accepted
    O3FActionSelector(q, Composite(action=_spec()))
    sel = O3FActionSelector(q, Unbounded(shape=(ACT,)), sigma=5.0)
    assert (
        sel(TensorDict({"observation": torch.randn(OBS), "action": torch.zeros(ACT)}))["action"]
        .abs()
        .max()
        > 1
    )


def test_forward_errors():
    sel = O3FActionSelector(QEnsemble(OBS, ACT, num_members=2, num_cells=8), _spec())
    with pytest.raises(KeyError, match="reads 'observation' and 'action'"):
        sel(TensorDict({"action": torch.zeros(ACT)}))
    with pytest.raises(ValueError, match=r"expected actions \[..., 2\]"):
        sel(TensorDict({"observation": torch.zeros(OBS), "action": torch.zeros(3)}))

    def bad_critic(obs, act):
        return act.sum(-1)[None, None]

    sel = O3FActionSelector(bad_critic, _spec())
    with pytest.raises(ValueError, match="member dimension leading"):
        sel(TensorDict({"observation": torch.zeros(OBS), "action": torch.zeros(ACT)}))


def test_schedules_and_state_dict_round_trip():
    """sigma anneals linearly over annealing_num_steps frames of step() (torchrl's style), then
    stays; omega (and sigma) can be written in place by any other schedule."""
    q = QEnsemble(OBS, ACT, num_members=2, num_cells=8)
    sel = O3FActionSelector(q, _spec(), sigma=0.4, sigma_end=0.1, annealing_num_steps=100)
    assert float(sel.sigma) == pytest.approx(0.4) and float(sel.omega) == 0.0
    sel.step(50)
    sel.omega.fill_(1.0)  # the documented hook for other schedules
    assert float(sel.sigma) == pytest.approx(0.25) and float(sel.omega) == pytest.approx(1.0)
    sel.step(1000)
    assert float(sel.sigma) == pytest.approx(0.1) and int(sel.frames) == 1050
    # a per-dimension sigma annealing to a float; without sigma_end step leaves sigma alone
    per_dim = O3FActionSelector(
        q, _spec(), sigma=torch.tensor([0.2, 0.4]), sigma_end=0.0, annealing_num_steps=4
    )
    per_dim.step(1)
    torch.testing.assert_close(per_dim.sigma, torch.tensor([0.15, 0.3]))
    fixed = O3FActionSelector(q, _spec(), sigma=torch.tensor([0.1, 0.3]))
    fixed.step(10)
    assert torch.equal(fixed.sigma, torch.tensor([0.1, 0.3]))
    fixed.sigma.copy_(torch.tensor([0.5, 0.6]))  # written in place by another schedule
    fixed.step(1)
    assert torch.equal(fixed.sigma, torch.tensor([0.5, 0.6]))

    state = sel.state_dict()
    assert set(state) == {"sigma", "omega", "frames", "low", "high"}  # no critic parameters
    assert list(sel.parameters()) == []
    fresh = O3FActionSelector(q, _spec(), sigma=0.9, omega=0.0)
    fresh.load_state_dict(state)
    assert float(fresh.sigma) == pytest.approx(0.1)
    assert float(fresh.omega) == pytest.approx(1.0) and int(fresh.frames) == 1050


def _td_step(q, opt, obs, cands, targets, steps):
    for _ in range(steps):
        loss = ((q.values(obs, cands).squeeze(-1) - targets) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_loss_step_on_ensemble_changes_selector_scores():
    """The selector reads the parameters the optimiser trains: no stale copy."""
    q = QEnsemble(OBS, ACT, num_members=3, num_cells=16)
    g = torch.Generator().manual_seed(11)
    sel = O3FActionSelector(q, _spec(), num_candidates=12, sigma=0.5, generator=g)
    obs, action = torch.randn(OBS), torch.zeros(ACT)
    cands = sel.project(sel.sample_candidates(action))
    before = sel.score(obs, cands)

    # one TD-like step: regress Q(s, c) onto r + gamma * min_j Q(s', c) (detached target)
    opt = torch.optim.Adam(q.parameters(), lr=3e-2)
    target = 1.0 + 0.9 * q.reduce(obs, cands, "min").detach().squeeze(-1)
    _td_step(q, opt, obs, cands, target, steps=1)
    after = sel.score(obs, cands)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, q.values(obs, cands).mean(0).squeeze(-1))

    # train the worst candidate to be the best: the selector's forward now executes it
    k = int(before.argmin())
    targets = torch.zeros(12)
    targets[k] = 5.0
    _td_step(q, opt, obs, cands, targets, steps=40)
    assert int(sel.score(obs, cands).argmax()) == k
    g.manual_seed(11)  # same draws as `cands`
    out = sel(TensorDict({"observation": obs, "action": action}))
    torch.testing.assert_close(out["action"], cands[k])


def test_package_iql_step_changes_selector_scores():
    """The package's IQLLoss trains its QEnsemble in place; the selector sees the step."""
    from torchrl_o3f.objectives import make_iql_loss

    loss = make_iql_loss(OBS, _spec(), num_cells=16)
    sel = O3FActionSelector(loss.qvalue_network, _spec(), num_candidates=8)
    obs, cands = torch.randn(3, OBS), torch.rand(8, 3, ACT) * 2 - 1
    before = sel.score(obs, cands)
    batch = ted_batch(16, OBS, ACT, terminated_frac=0.0)
    opt = torch.optim.Adam(loss.parameters(), lr=1e-2)
    out = loss(batch)
    opt.zero_grad()
    (out["loss_actor"] + out["loss_qvalue"] + out["loss_value"]).backward()
    opt.step()
    after = sel.score(obs, cands)
    assert not torch.allclose(before, after)
    q = loss.qvalue_network
    torch.testing.assert_close(after, q.values(obs, cands).mean(0).squeeze(-1))


def _sac(obs_dim=OBS, act_dim=ACT):
    from tensordict.nn import NormalParamExtractor
    from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator
    from torchrl.objectives import SACLoss

    spec = _spec(n=act_dim)
    actor = ProbabilisticActor(
        TensorDictModule(
            torch.nn.Sequential(
                make_mlp(obs_dim, 2 * act_dim, num_cells=16), NormalParamExtractor()
            ),
            in_keys=["observation"],
            out_keys=["loc", "scale"],
        ),
        in_keys=["loc", "scale"],
        spec=spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": spec.space.low, "high": spec.space.high},
    )

    class Critic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = make_mlp(obs_dim + act_dim, 1, num_cells=16)

        def forward(self, obs, act):
            return self.net(torch.cat([obs, act], -1))

    critic = ValueOperator(Critic(), in_keys=["observation", "action"])
    loss = SACLoss(actor, critic, num_qvalue_nets=2, loss_function="l2")
    loss.make_value_estimator(gamma=0.99)
    return actor, critic, loss, spec


def test_sac_critic_reuse_with_trained_params():
    """A torchrl SAC critic: the selector from from_loss scores with the params SACLoss trains."""
    actor, critic, loss, spec = _sac()
    sel = O3FActionSelector.from_loss(loss, spec, num_candidates=9)
    obs, cands = torch.randn(3, OBS), torch.rand(9, 3, ACT) * 2 - 1

    def reference(params):
        out = []
        for i in range(params.shape[0]):
            with params[i].to_module(critic):
                td = TensorDict({"observation": obs.expand(9, 3, OBS), "action": cands}, [9, 3])
                out.append(critic(td)["state_action_value"])
        return torch.stack(out).mean(0).squeeze(-1)

    torch.testing.assert_close(sel.score(obs, cands), reference(loss.qvalue_network_params))

    opt = torch.optim.Adam(loss.parameters(), lr=1e-2)
    batch = ted_batch(32, OBS, ACT, terminated_frac=0.0)
    batch["next", "reward"] = torch.ones(32, 1)
    before = sel.score(obs, cands)
    for _ in range(3):
        losses = loss(batch)
        opt.zero_grad()
        (losses["loss_actor"] + losses["loss_qvalue"] + losses["loss_alpha"]).backward()
        opt.step()
    after = sel.score(obs, cands)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, reference(loss.qvalue_network_params))
    # the module handed to SACLoss was never trained: scoring with it would be stale
    untrained = critic(TensorDict({"observation": obs.expand(9, 3, OBS), "action": cands}, [9, 3]))
    assert not torch.allclose(after, untrained["state_action_value"].squeeze(-1))

    # policy + selector, unbatched and batched
    policy = TensorDictSequential(actor, sel)
    with set_exploration_type(ExplorationType.RANDOM):
        assert spec.is_in(policy(TensorDict({"observation": torch.randn(OBS)}))["action"])
        assert policy(TensorDict({"observation": obs}, [3]))["action"].shape == (3, ACT)


def test_a_bare_tensordict_module_critic_is_an_error_naming_from_loss():
    """A loss's qvalue_network (or the module handed to SACLoss) alone holds weights nothing
    trains: the selector refuses it and names the way that reads the trained ones."""
    _, critic, loss, spec = _sac()
    for module in (loss.qvalue_network, critic):
        with pytest.raises(TypeError, match=r"from_loss\(loss, action_spec\)"):
            O3FActionSelector(module, spec)
    with pytest.raises(TypeError, match="no qvalue_network"):
        O3FActionSelector.from_loss(torch.nn.Linear(2, 2), spec)
    with pytest.raises(ValueError, match="leading member dimension"):
        StackedCritic(critic, TensorDict.from_module(critic))  # one member's, not stacked


@pytest.mark.parametrize("loss_name", ["td3", "redq", "cql"])
def test_from_loss_reads_any_torchrl_loss_with_stacked_critics(loss_name):
    """TD3, REDQ and CQL: from_loss scores with each member of qvalue_network_params."""
    from torchrl.modules import ValueOperator
    from torchrl.objectives import CQLLoss, REDQLoss, TD3Loss

    actor, _, _, spec = _sac()
    critic = ValueOperator(make_mlp(OBS + ACT, 1, num_cells=16), in_keys=["observation", "action"])
    if loss_name == "td3":
        det = TensorDictModule(
            torch.nn.Sequential(make_mlp(OBS, ACT, num_cells=16), torch.nn.Tanh()),
            in_keys=["observation"],
            out_keys=["action"],
        )
        loss = TD3Loss(det, critic, action_spec=spec, num_qvalue_nets=2)
    elif loss_name == "redq":
        loss = REDQLoss(actor, critic, num_qvalue_nets=4)
    else:
        loss = CQLLoss(actor, critic)
    sel = O3FActionSelector.from_loss(loss, spec, num_candidates=6)
    params = loss.qvalue_network_params
    obs, cands = torch.randn(3, OBS), torch.rand(6, 3, ACT) * 2 - 1
    ref = []
    for i in range(params.shape[0]):
        with params[i].to_module(critic):
            x = torch.cat([obs.expand(6, 3, OBS), cands], -1)
            ref.append(critic.module(x))
    torch.testing.assert_close(sel.score(obs, cands), torch.stack(ref).mean(0).squeeze(-1))
    with set_exploration_type(ExplorationType.RANDOM):
        td = sel(TensorDict({"observation": obs, "action": torch.zeros(3, ACT)}, [3]))
    assert spec.is_in(td["action"])


@pytest.mark.parametrize("layout", ["members_last_dim", "members_no_last_dim", "single"])
def test_plain_callable_critics_of_every_documented_layout(layout):
    """A callable returning [m, N, *batch, 1], [m, N, *batch] or a single critic's
    [N, *batch, 1] (m = 1) is scored as the mean over its members."""
    w = torch.randn(3, OBS + ACT)

    def members(obs, act):  # [3, N, *batch]
        x = torch.cat([obs.expand(*act.shape[:-1], OBS), act], -1)
        return torch.einsum("...i,mi->m...", x, w)

    critic = {
        "members_last_dim": lambda o, a: members(o, a).unsqueeze(-1),
        "members_no_last_dim": members,
        "single": lambda o, a: members(o, a)[0].unsqueeze(-1),
    }[layout]
    sel = O3FActionSelector(critic, _spec(), num_candidates=5)
    obs, cands = torch.randn(2, OBS), torch.rand(5, 2, ACT)
    expected = members(obs, cands)[:1] if layout == "single" else members(obs, cands)
    torch.testing.assert_close(sel.score(obs, cands), expected.mean(0))
    td = TensorDict({"observation": obs, "action": torch.zeros(2, ACT)}, [2])
    assert sel(td)["action"].shape == (2, ACT)


def test_stacked_critic_of_one_member_and_its_device():
    """StackedCritic on a module's own parameters (one member) equals the module itself."""
    net = make_mlp(OBS + ACT, 1, num_cells=8)

    class Critic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, obs, act):
            return self.net(torch.cat([obs, act], -1))

    from torchrl.modules import ValueOperator

    module = ValueOperator(Critic(), in_keys=["observation", "action"])
    critic = StackedCritic(module, TensorDict.from_module(module).unsqueeze(0))
    assert critic.device == torch.device("cpu")
    sel = O3FActionSelector(critic, _spec(), num_candidates=5)
    obs, cands = torch.randn(OBS), torch.rand(5, ACT)
    torch.testing.assert_close(
        sel.score(obs, cands), net(torch.cat([obs.expand(5, OBS), cands], -1)).squeeze(-1)
    )


@pytest.mark.parametrize("num_envs", [1, 2])
def test_collector_stores_the_selected_actions(num_envs):
    from torchrl_o3f.envs import make_env

    env = make_env("hopper-medium", seed=0, num_envs=num_envs)
    obs_dim = env.observation_spec["observation"].shape[-1]
    act_dim = env.action_spec.shape[-1]
    q = QEnsemble(obs_dim, act_dim, num_members=3, num_cells=16)
    actor = TensorDictModule(
        torch.nn.Sequential(make_mlp(obs_dim, act_dim, num_cells=16), torch.nn.Tanh()),
        in_keys=["observation"],
        out_keys=["action"],
    )

    def make_selector():
        return O3FActionSelector(
            q,
            env.action_spec,
            num_candidates=20,
            sigma=0.5,
            diagnostics=True,
            generator=torch.Generator().manual_seed(5),
        )

    sel = make_selector()
    collector = Collector(
        env,
        TensorDictSequential(actor, sel),
        frames_per_batch=30,
        total_frames=30,
        auto_register_policy_transforms=False,
    )
    sel.generator.manual_seed(5)  # the collector ran the policy once to read its outputs
    data = next(iter(collector))
    collector.shutdown()
    steps = 30 // num_envs
    assert data.batch_size == ((steps,) if num_envs == 1 else (num_envs, steps))
    low = env.action_spec.space.low.reshape(-1, act_dim)[0]
    high = env.action_spec.space.high.reshape(-1, act_dim)[0]
    assert ((data["action"] >= low) & (data["action"] <= high)).all()
    # the executed actions are the stored ones: replay the same draws step by step
    replay = make_selector()
    for t in range(steps):
        step = data[..., t]
        chosen, _, _ = replay.select(step["observation"], step["policy_action"])
        torch.testing.assert_close(step["action"], chosen)
    assert not torch.allclose(data["action"], data["policy_action"])


@pytest.mark.gpu
def test_device_follows_ensemble():
    """Buffers are made on the critic's device and follow .to(); forward moves nothing."""
    q = QEnsemble(OBS, ACT, num_members=2, num_cells=8, device="cuda")
    sel = O3FActionSelector(q, _spec(), generator=torch.Generator("cuda").manual_seed(0))
    assert sel.sigma.device.type == "cuda" and sel.low.device.type == "cuda"
    td = TensorDict({"observation": torch.randn(3, OBS), "action": torch.zeros(3, ACT)}, [3])
    out = sel(td.to("cuda"))
    assert out["action"].device.type == "cuda"
    with pytest.raises(ValueError, match="generator is on"):
        O3FActionSelector(q, _spec(), generator=torch.Generator())
    q.to("cpu")
    sel.to("cpu")
    sel.generator = None
    assert sel.sigma.device.type == "cpu" and sel.low.device.type == "cpu"
    assert sel(td)["action"].device.type == "cpu"


def test_docs_examples_run():
    """Every python block of docs/selector.md runs as written."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[1] / "docs" / "selector.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3
    for block in blocks:
        exec(compile(block, "docs/selector.md", "exec"), {"__name__": "docs_example"})


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize(
    "obs_shape,act_shape",
    [
        ((7, 5), (7, 2)),
        ((4, 5), (10, 4, 2)),
        ((5,), (10, 2)),
        ((3, 1, 5), (1, 6, 2)),
        ((4, 5), (2,)),
    ],
)
def test_ensemble_candidate_path_matches_reference_values_and_gradients(
    layer_norm, obs_shape, act_shape
):
    """QEnsemble's speed paths (shared observation term, in-place ReLU, last layer as a
    multiply-and-sum) give the same values and gradients as a member-by-member loop."""
    q = QEnsemble(5, 2, num_members=3, num_cells=16, layer_norm=layer_norm)
    obs, act = torch.randn(*obs_shape), torch.rand(*act_shape)
    values = q.values(obs, act)
    batch = torch.broadcast_shapes(obs.shape[:-1], act.shape[:-1])
    x = torch.cat([obs.expand(*batch, 5), act.expand(*batch, 2)], -1)
    ref = []
    for i in range(3):
        h = x
        for j in range(len(q.weights)):
            h = h @ q.weights[j][i] + q.biases[j][i, 0]
            if j < len(q.weights) - 1:
                if layer_norm:
                    h = torch.nn.functional.layer_norm(h, h.shape[-1:])
                    h = h * q.norm_weights[j][i, 0] + q.norm_biases[j][i, 0]
                h = torch.relu(h)
        ref.append(h)
    ref = torch.stack(ref)
    torch.testing.assert_close(values, ref)
    params = list(q.parameters())
    grads = torch.autograd.grad(values.square().sum(), params)
    ref_grads = torch.autograd.grad(ref.square().sum(), params)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


def test_ensemble_batch_broadcast_error():
    q = QEnsemble(OBS, ACT, num_members=2, num_cells=8)
    with pytest.raises(ValueError, match=r"observation batch \(3,\) and action batch \(4,\)"):
        q.values(torch.randn(3, OBS), torch.rand(4, ACT))


def test_selector_benchmark_peers_pick_the_same_candidates():
    """benchmarks/bench_selector.py checks, before timing, that every method (the selector on a
    QEnsemble and on torchrl's IQLLoss critic through from_loss, the hand-written vmap over
    IQLLoss's params, the naive loop) picks the same candidate from the same draws; run two
    cells of it with a tiny budget."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "bench_selector.py"
    spec = importlib.util.spec_from_file_location("bench_selector", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    methods = {"o3f", "o3f from_loss", "torchrl IQLLoss vmap", "naive loop"}
    for n, b in ((100, 1), (20, 4)):
        res = bench.measure_cell(n, 2, b, torch.device("cpu"), budget_s=0.01)
        assert set(res) == methods
        assert all(ms > 0 and calls >= 5 for ms, calls in res.values())


def test_from_loss_on_the_packages_loss_reads_its_ensemble():
    """The package's losses train their QEnsemble in place: from_loss scores with it directly,
    and make_exploration builds the same selector from a loss or from its critic."""
    from torchrl_o3f.modules import make_exploration
    from torchrl_o3f.objectives import make_iql_loss

    loss = make_iql_loss(OBS, _spec(), num_cells=16)
    sel = O3FActionSelector.from_loss(loss, _spec(), num_candidates=8)
    assert sel.qvalue_network is loss.qvalue_network
    for critic in (loss, loss.qvalue_network):
        explore = make_exploration("o3f", critic, _spec(), sigma=0.3, num_candidates=8)
        assert explore.qvalue_network is loss.qvalue_network and explore.diagnostics
    _, _, sac, spec = _sac()
    explore = make_exploration("o3f", sac, spec, sigma=0.3, num_candidates=8)
    assert isinstance(explore.qvalue_network, StackedCritic)
    assert explore.qvalue_network.params is sac.qvalue_network_params
