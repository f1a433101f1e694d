import pytest
import torch
from tensordict import TensorDict

from torchrl_o3f.modules import QEnsemble, ensemble_reduce, make_mlp


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
    net = make_mlp(4, 3, num_cells=8, depth=3, activation="elu", layer_norm=True)
    assert net(torch.zeros(2, 4)).shape == (2, 3)
    with pytest.raises(ValueError, match="unknown activation"):
        make_mlp(4, 3, activation="nope")


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


def test_inputs_of_another_dtype_are_a_clear_error():
    """A float64 env (gymnasium's MuJoCo observations) against float32 critics: the error names
    the cast; a float64 ensemble takes float64 inputs."""
    q = QEnsemble(5, 2, num_members=3, num_cells=16)
    obs, act = torch.randn(4, 5, dtype=torch.float64), torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="DoubleToFloat"):
        q.values(obs, act)
    out = q.to(torch.float64).values(obs, act + torch.zeros(100, 4, 2).double())
    assert out.dtype == torch.float64
