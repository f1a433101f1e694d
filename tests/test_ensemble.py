import random

import pytest
import torch
from tensordict import TensorDict

from torchrl_o3f.modules import QEnsemble, build_mlp, ensemble_reduce


def _member_forward(q: QEnsemble, i: int, x: torch.Tensor) -> torch.Tensor:
    """Reference: member i as a plain loop of linear layers."""
    h = x
    n = len(q.weights)
    for j in range(n):
        h = h @ q.weights[j][i] + q.biases[j][i, 0]
        if j < n - 1:
            if q.layer_norm:
                h = torch.nn.functional.layer_norm(h, h.shape[-1:])
                h = h * q.norm_weights[j][i, 0] + q.norm_biases[j][i, 0]
            h = torch.relu(h)
    return h


@pytest.mark.parametrize("layer_norm", [False, True])
def test_values_match_member_by_member_reference(layer_norm):
    q = QEnsemble(5, 2, num_members=3, num_cells=16, depth=2, layer_norm=layer_norm)
    obs, act = torch.randn(7, 5), torch.rand(7, 2)
    v = q.values(obs, act)
    assert v.shape == (3, 7, 1)
    x = torch.cat([obs, act], -1)
    for i in range(3):
        torch.testing.assert_close(v[i], _member_forward(q, i, x))


def test_members_are_initialised_independently():
    q = QEnsemble(5, 2, num_members=4, num_cells=16)
    w = q.weights[0]
    for i in range(1, 4):
        assert not torch.equal(w[0], w[i])


def test_broadcast_candidates_against_observations():
    q = QEnsemble(5, 2, num_members=3, num_cells=16)
    obs, cand = torch.randn(4, 5), torch.rand(10, 4, 2)
    v = q.values(obs, cand)
    assert v.shape == (3, 10, 4, 1)
    torch.testing.assert_close(v, q.values(obs.expand(10, 4, 5), cand))
    # unbatched
    assert q.values(torch.randn(5), torch.rand(2)).shape == (3, 1)


def test_tensordict_forward_has_leading_ensemble_dim():
    q = QEnsemble(5, 2, num_members=3, num_cells=16)
    td = TensorDict({"observation": torch.randn(4, 5), "action": torch.rand(4, 2)}, [4])
    out = q(td)
    assert out.batch_size == (3, 4)
    torch.testing.assert_close(out["state_action_value"], q.values(td["observation"], td["action"]))
    q2 = QEnsemble(5, 2, num_members=3, in_keys=("obs", "act"), out_keys=("q",))
    out = q2(TensorDict({"obs": torch.randn(5), "act": torch.rand(2)}, []))
    assert out["q"].shape == (3, 1)


def test_mean_std_use_population_std():
    q = QEnsemble(5, 2, num_members=4, num_cells=16)
    obs, act = torch.randn(6, 5), torch.rand(6, 2)
    v = q.values(obs, act)
    mean, std = q.mean_std(obs, act)
    torch.testing.assert_close(mean, v.mean(0))
    torch.testing.assert_close(std, ((v - v.mean(0)) ** 2).mean(0).sqrt())


def test_reductions():
    v = torch.tensor([[[1.0]], [[4.0]], [[2.0]], [[3.0]]])
    assert ensemble_reduce(v, "min").item() == 1.0
    assert ensemble_reduce(v, "max").item() == 4.0
    assert ensemble_reduce(v, "mean").item() == 2.5
    g = torch.Generator().manual_seed(0)
    subset = {
        ensemble_reduce(v, "subset_min", subset_size=2, generator=g).item() for _ in range(50)
    }
    assert subset <= {1.0, 2.0, 3.0} and len(subset) > 1
    with pytest.raises(ValueError, match="subset_size"):
        ensemble_reduce(v, "subset_min", subset_size=5)
    with pytest.raises(ValueError, match="unknown reduction"):
        ensemble_reduce(v, "median")


def test_params_argument_evaluates_other_parameters():
    q = QEnsemble(5, 2, num_members=3, num_cells=16)
    params = TensorDict.from_module(q).detach().clone()
    obs, act = torch.randn(4, 5), torch.rand(4, 2)
    torch.testing.assert_close(q.values(obs, act, params), q.values(obs, act))
    params.apply_(lambda p: p.zero_())
    assert torch.all(q.values(obs, act, params) == 0)


def test_bad_shapes_and_arguments_fail_clearly():
    q = QEnsemble(5, 2, num_members=3, num_cells=16)
    with pytest.raises(ValueError, match="expects observations"):
        q.values(torch.randn(4, 6), torch.rand(4, 2))
    with pytest.raises(ValueError, match="num_members"):
        QEnsemble(5, 2, num_members=0)
    with pytest.raises(KeyError, match="reads"):
        q(TensorDict({"obs": torch.randn(5)}, []))


def test_gradients_reach_every_member():
    q = QEnsemble(5, 2, num_members=3, num_cells=16, layer_norm=True)
    q.values(torch.randn(8, 5), torch.rand(8, 2)).sum().backward()
    for p in q.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_build_mlp():
    net = build_mlp(4, 3, num_cells=8, depth=3, activation="elu", layer_norm=True)
    assert net(torch.zeros(2, 4)).shape == (2, 3)
    with pytest.raises(ValueError, match="unknown activation"):
        build_mlp(4, 3, activation="nope")


def test_input_normalisation_is_applied_and_saved():
    q = QEnsemble(3, 2, num_members=2, num_cells=8)
    obs, act = torch.randn(4, 3), torch.rand(4, 2)
    ref = q.values(obs, act)
    loc_o, sc_o = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 4.0])
    loc_a, sc_a = torch.tensor([0.5, -0.5]), torch.tensor([0.1, 3.0])
    q.set_input_normalization(loc_o, sc_o, loc_a, sc_a)
    torch.testing.assert_close(q.values(obs * sc_o + loc_o, act * sc_a + loc_a), ref)
    q2 = QEnsemble(3, 2, num_members=2, num_cells=8)
    q2.load_state_dict(q.state_dict())
    torch.testing.assert_close(q2.values(obs * sc_o + loc_o, act * sc_a + loc_a), ref)
    with pytest.raises(ValueError, match="> 0"):
        q.set_input_normalization(observation_scale=torch.zeros(3))


def test_members_subset_evaluates_only_those_members():
    q = QEnsemble(5, 2, num_members=5, num_cells=16, layer_norm=True)
    obs, act = torch.randn(4, 5), torch.rand(4, 2)
    full = q.values(obs, act)
    idx = torch.tensor([3, 1])
    torch.testing.assert_close(q.values(obs, act, members=idx), full[idx])
    params = TensorDict.from_module(q).detach().clone()
    torch.testing.assert_close(q.values(obs, act, params, members=idx), full[idx])


def _trained_like(q: QEnsemble, obs_scale: float = 3.0) -> QEnsemble:
    """Give the first layer large observation weights, so few units flip near an anchor (as
    in a trained critic, whose first layer is dominated by the observation)."""
    with torch.no_grad():
        q.weights[0][:, : q.observation_dim] *= obs_scale
    return q


@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.parametrize("batch", [(), (16,), (2, 3)])
@pytest.mark.parametrize("sigma", [1e-6, 0.05, 0.3, 3.0])
def test_candidate_values_equal_the_dense_values(batch, sigma, kernel):
    torch.manual_seed(0)
    q = _trained_like(QEnsemble(11, 4, num_members=5, num_cells=64, kernel=kernel))
    q.set_input_normalization(
        torch.randn(11), torch.rand(11) + 0.5, torch.randn(4) * 0.1, torch.rand(4) + 0.5
    )
    obs = torch.randn(*batch, 11)
    anchor = torch.rand(*batch, 4) * 2 - 1
    cands = (anchor + sigma * torch.randn(500, *batch, 4)).clamp(-1, 1)
    with torch.no_grad():
        fast = q.candidate_values(obs, cands, anchor)
        dense = q.values(obs, cands)
    assert fast.shape == dense.shape == (5, 500, *batch, 1)
    torch.testing.assert_close(fast, dense, rtol=1e-5, atol=1e-5)


def test_candidate_values_take_the_sparse_path_and_count_flips(monkeypatch):
    """The torch fallback (no compiled kernel): near the anchor the dense path is not called;
    far from it (most units flip) it is."""
    torch.manual_seed(1)
    q = _trained_like(QEnsemble(11, 4, num_members=3, num_cells=64, depth=3, kernel=False))
    obs, anchor = torch.randn(11), torch.rand(4) * 2 - 1
    near = anchor + 0.05 * torch.randn(500, 4)
    with torch.no_grad():
        dense = q.values(obs, near)
        calls = []
        real = q.values
        monkeypatch.setattr(q, "values", lambda *a, **k: calls.append(1) or real(*a, **k))
        torch.testing.assert_close(q.candidate_values(obs, near, anchor), dense)
        assert not calls  # exact sparse path (depth 3: the later layers run densely)
        far = anchor + 50.0 * torch.randn(500, 4)
        q.candidate_values(obs, near[:190], anchor)
        assert calls  # too few rows (3 members x 190 < min_rows): dense
        calls.clear()
        q.candidate_values(obs.expand(8, 11), near[:50, None].expand(50, 8, 4), anchor.expand(8, 4))
        assert calls  # 400 rows but too few candidates per observation (50 < 64): dense
        calls.clear()
        q.candidate_values(obs, far, anchor, max_active=0.05)
        assert calls  # too many flipped units: dense


def test_candidate_values_in_groups_of_observations(monkeypatch):
    """Observations are scored in groups of about ``chunk_rows`` rows; with the torch fallback
    each group picks its own path (here the first observation's anchor is far from its
    candidates: its group is dense, the others sparse) and the values come back in the
    caller's batch layout."""
    torch.manual_seed(3)
    q = _trained_like(QEnsemble(11, 4, num_members=3, num_cells=64, kernel=False))
    obs = torch.randn(2, 3, 11)
    anchor = torch.rand(2, 3, 4) * 2 - 1
    cands = anchor + 0.05 * torch.randn(100, 2, 3, 4)
    far = anchor.clone()
    far[0, 0] += 40.0
    with torch.no_grad():
        dense = q.values(obs, cands)
        calls = []
        real = q.values
        monkeypatch.setattr(q, "values", lambda *a, **k: calls.append(a[1].shape) or real(*a, **k))
        # 300 rows per observation, groups of 2 observations: [0, 1], [2, 3], [4, 5]
        got = q.candidate_values(obs, cands, far, max_active=0.2, chunk_rows=600)
        assert got.shape == dense.shape == (3, 100, 2, 3, 1)
        torch.testing.assert_close(got, dense, rtol=1e-5, atol=1e-5)
        assert calls == [torch.Size([100, 2, 4])]  # the first group only, densely
        calls.clear()
        torch.testing.assert_close(q.candidate_values(obs, cands, anchor, chunk_rows=1), dense)
        assert not calls  # one observation per group, all sparse


def test_candidate_values_match_an_anchor_far_from_the_candidates():
    """Any anchor gives the same values (the decomposition is exact, not a linearisation)."""
    torch.manual_seed(2)
    q = QEnsemble(6, 3, num_members=2, num_cells=32)
    obs = torch.randn(6)
    cands = torch.rand(500, 3) * 2 - 1
    with torch.no_grad():
        dense = q.values(obs, cands)
        for anchor in (cands[0], torch.zeros(3), torch.full((3,), 5.0)):
            got = q.candidate_values(obs, cands, anchor, max_active=1.0)
            torch.testing.assert_close(got, dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", [{"layer_norm": True}, {"activation": "tanh"}, {"depth": 1}])
def test_candidate_values_fall_back_for_other_critics(kwargs):
    q = QEnsemble(6, 3, num_members=2, num_cells=32, **kwargs)
    obs, anchor = torch.randn(4, 6), torch.rand(4, 3)
    cands = anchor + 0.1 * torch.randn(100, 4, 3)
    with torch.no_grad():
        dense = q.values(obs, cands)
        torch.testing.assert_close(q.candidate_values(obs, cands, anchor), dense)
        # scored densely, one observation per group
        torch.testing.assert_close(q.candidate_values(obs, cands, anchor, chunk_rows=1), dense)
        # one observation with more rows than a group: one dense group
        got = q.candidate_values(obs[0], cands[:, 0], anchor[0], chunk_rows=1)
        torch.testing.assert_close(got, dense[:, :, 0])
    # with autograd on, the dense path runs and gradients flow
    q.candidate_values(obs, cands, anchor).sum().backward()
    assert q.weights[0].grad is not None


def test_candidate_values_reject_mismatched_action_sizes():
    q = QEnsemble(6, 3, num_members=2, num_cells=16)
    with pytest.raises(ValueError, match=r"candidates \[N, \*batch, 3\]"):
        q.candidate_values(torch.randn(6), torch.rand(40, 2), torch.rand(2))


@pytest.mark.parametrize("kernel", [True, False])
def test_candidate_values_equal_the_dense_values_over_random_configurations(kernel):
    """Sizes, depths, ensemble sizes, dtypes, spreads and thresholds drawn at random, with the
    compiled kernel (where it serves the sizes) and with torch operations only."""
    rnd = random.Random(0)
    for _ in range(24):
        d, a, m = rnd.randint(1, 30), rnd.randint(1, 8), rnd.randint(1, 7)
        dtype = rnd.choice([torch.float32, torch.float64])
        cells, depth = rnd.choice([4, 16, 64]), rnd.randint(2, 4)
        q = QEnsemble(d, a, num_members=m, num_cells=cells, depth=depth, kernel=kernel).to(dtype)
        batch = rnd.choice([(), (1,), (5,), (2, 3)])
        obs = torch.randn(*batch, d, dtype=dtype)
        anchor = torch.randn(*batch, a, dtype=dtype)
        spread = rnd.choice([1e-4, 0.1, 1.0, 10.0])
        cands = anchor + spread * torch.randn(rnd.choice([64, 400]), *batch, a, dtype=dtype)
        with torch.no_grad():
            chunk_rows = rnd.choice([1, 700, 4096])
            fast = q.candidate_values(
                obs, cands, anchor, max_active=1.0, min_rows=1, chunk_rows=chunk_rows
            )
            dense = q.values(obs, cands)
        tol = 1e-5 if dtype == torch.float32 else 1e-10
        torch.testing.assert_close(fast, dense, rtol=tol, atol=tol * float(dense.abs().max()))


def test_inputs_of_another_dtype_are_a_clear_error():
    """A float64 env (gymnasium's MuJoCo observations) against float32 critics: the error names
    the cast, on the dense and on the sparse path."""
    q = QEnsemble(5, 2, num_members=3, num_cells=16)
    obs, act = torch.randn(4, 5, dtype=torch.float64), torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="DoubleToFloat"):
        q.values(obs, act)
    with torch.no_grad(), pytest.raises(TypeError, match="float64"):
        q.candidate_values(obs, act + 0.1 * torch.randn(1000, 4, 2, dtype=torch.float64), act)
    with torch.no_grad():
        out = q.to(torch.float64).candidate_values(obs, act + torch.zeros(1000, 4, 2).double(), act)
    assert out.dtype == torch.float64
