"""The compiled candidate-scoring kernel (torchrl_o3f.modules.kernel) and its fallback."""

import logging
import multiprocessing
import random
import sys
from pathlib import Path

import pytest
import torch

from torchrl_o3f.modules import QEnsemble, kernel

needs_compiler = pytest.mark.skipif(
    kernel._compiler() is None, reason="no C compiler on this machine"
)


def _inputs(q: QEnsemble, n: int, batch=(), spread: float = 0.2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(*batch, q.observation_dim, generator=g)
    anchor = torch.rand(*batch, q.action_dim, generator=g) * 2 - 1
    cands = anchor + spread * torch.randn(n, *batch, q.action_dim, generator=g)
    return obs, cands.clamp(-1, 1), anchor


@needs_compiler
def test_the_kernel_builds_where_a_compiler_is_present():
    """A machine with a C compiler must get the kernel (a silent fallback would hide a broken
    build behind slower selection)."""
    assert kernel.available()
    assert kernel.available(17, 6, 256)
    assert not kernel.available(17, 6, 24)  # hidden width not a multiple of 16
    assert not kernel.available(17, 65, 256)  # more action dimensions than it holds
    assert not kernel.available(500, 20, 256)  # more inputs than it holds


@needs_compiler
@pytest.mark.parametrize("depth", [2, 3])
def test_candidate_values_go_through_the_kernel(monkeypatch, depth):
    """With the kernel, neither the dense product nor the torch sparse layer runs (a deeper
    critic's later layers run densely on the kernel's output), for any number of candidates."""
    torch.manual_seed(0)
    q = QEnsemble(11, 4, num_members=3, num_cells=64, depth=depth)
    with torch.no_grad():
        cases = [_inputs(q, n, batch) for n, batch in [(1, ()), (5, ()), (100, (3,)), (7, (2, 3))]]
        dense = [q.values(obs, cands) for obs, cands, _ in cases]

        def fail(*args, **kwargs):
            raise AssertionError("the torch path ran")

        monkeypatch.setattr(q, "values", fail)
        monkeypatch.setattr(q, "_near_anchor_values", fail)
        for (obs, cands, anchor), ref in zip(cases, dense):
            got = q.candidate_values(obs, cands, anchor)
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@needs_compiler
def test_the_kernel_equals_the_dense_values_over_random_configurations():
    """Input sizes, widths, depths, ensemble sizes, normalisations, batch shapes, candidate
    counts (including the tails of its blocks of 4) and spreads (up to every unit flipping)."""
    rnd = random.Random(1)
    for trial in range(30):
        d, a, m = rnd.randint(1, 40), rnd.randint(1, 12), rnd.randint(1, 7)
        q = QEnsemble(
            d, a, num_members=m, num_cells=rnd.choice([16, 48, 256]), depth=rnd.randint(2, 4)
        )
        q.set_input_normalization(
            torch.randn(d), torch.rand(d) + 0.2, torch.randn(a) * 0.1, torch.rand(a) + 0.2
        )
        batch = rnd.choice([(), (1,), (5,), (2, 3)])
        n = rnd.choice([1, 3, 4, 5, 63, 257])
        spread = rnd.choice([1e-4, 0.1, 1.0, 10.0])
        obs, cands, anchor = _inputs(q, n, batch, spread, seed=trial)
        with torch.no_grad():
            got = q.candidate_values(obs, cands, anchor)
            ref = q.values(obs, cands)
        assert got.shape == ref.shape == (m, n, *batch, 1)
        scale = float(ref.abs().max())
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * scale)


@needs_compiler
def test_units_on_the_edge_of_flipping_are_kept():
    """The kernel evaluates the first layer only on the units some candidate can flip
    (``|z0| <= ||A|| max ||d||``); units sitting at zero at the anchor, which every offset
    can flip, and units just inside that reach must come out as the dense values."""
    torch.manual_seed(4)
    q = QEnsemble(5, 3, num_members=2, num_cells=32)
    obs, anchor = torch.randn(5), torch.rand(3) * 2 - 1
    cands = anchor + 0.05 * torch.randn(200, 3)
    with torch.no_grad():
        x = torch.cat([obs, anchor])
        z0 = torch.einsum("k,mkh->mh", x, q.weights[0]) + q.biases[0][:, 0]
        reach = q.weights[0][:, 5:].norm(dim=1) * (cands - anchor).norm(dim=-1).max()
        q.biases[0][:, 0, :8] -= z0[:, :8]  # units 0-7 at zero at the anchor
        # units 8-15 just inside the reach, on either side of zero
        sign = torch.tensor([1.0, -1.0]).repeat(4)
        q.biases[0][:, 0, 8:16] += sign * 0.999 * reach[:, 8:16] - z0[:, 8:16]
        got = q.candidate_values(obs, cands, anchor)
        torch.testing.assert_close(got, q.values(obs, cands), rtol=1e-5, atol=1e-5)


@needs_compiler
def test_pairs_split_over_threads_give_the_same_values():
    """Each (member, observation) pair is computed whole by one of torch's threads: the number
    of threads changes nothing, bit for bit."""
    torch.manual_seed(0)
    q = QEnsemble(17, 6, num_members=5, num_cells=64)
    obs, cands, anchor = _inputs(q, 300, (4,))
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(1)
            one = q.candidate_values(obs, cands, anchor)
            torch.set_num_threads(3)
            split = q.candidate_values(obs, cands, anchor)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, split)


@needs_compiler
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_the_kernel_shares_torchs_openmp_runtime():
    """Its threads are torch's own: loading it maps no second OpenMP runtime."""
    assert kernel.available()
    maps = Path("/proc/self/maps").read_text()
    runtimes = {line.split()[-1] for line in maps.splitlines() if "libgomp" in line}
    assert len(runtimes) <= 1, runtimes
    built_with_openmp = bool(kernel._library().near_anchor_parallel())
    assert kernel._state["parallel"] == (built_with_openmp and len(runtimes) == 1)


def _score_in_child(q, inputs, queue):
    torch.set_num_threads(1)  # as torch's DataLoader workers: GNU OpenMP cannot fork
    with torch.no_grad():
        queue.put(q.candidate_values(*inputs).tolist())  # plain floats: no shared memory


@needs_compiler
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork start method")
def test_a_forked_child_on_one_thread_gets_the_same_values():
    """After the parent ran the kernel on torch's threads, a forked child on one thread (the
    kernel then opens no parallel region) scores the same values instead of hanging."""
    torch.manual_seed(0)
    q = QEnsemble(17, 6, num_members=5, num_cells=64)
    inputs = _inputs(q, 100, (4,))
    with torch.no_grad():
        ref = q.candidate_values(*inputs)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_score_in_child, args=(q, inputs, queue))
    child.start()
    try:
        values = torch.tensor(queue.get(timeout=60))
    finally:
        child.join(10)
        if child.exitcode is None:
            child.kill()
    assert child.exitcode == 0
    assert torch.equal(values, ref)


@needs_compiler
def test_the_kernel_reads_strided_inputs_and_the_current_parameters():
    torch.manual_seed(0)
    q = QEnsemble(6, 3, num_members=2, num_cells=32)
    obs, cands, anchor = _inputs(q, 50, (4,))
    strided = cands.permute(1, 0, 2).contiguous().permute(1, 0, 2)  # same values, other strides
    assert not strided.is_contiguous()
    with torch.no_grad():
        before = q.candidate_values(obs, strided, anchor)
        torch.testing.assert_close(before, q.values(obs, cands), rtol=1e-5, atol=1e-5)
        q.weights[1].mul_(1.5)  # an in-place update, as an optimiser step does
        after = q.candidate_values(obs.expand(4, 6), strided, anchor)
        torch.testing.assert_close(after, q.values(obs, cands), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)


def test_without_a_compiler_the_ensemble_keeps_to_torch(monkeypatch, caplog):
    monkeypatch.setattr(kernel, "_state", {})  # a process that has not built it yet
    monkeypatch.setattr(kernel.shutil, "which", lambda name: None)
    with caplog.at_level(logging.WARNING, logger=kernel.__name__):
        assert not kernel.available()
    assert "no C compiler" in caplog.text
    q = QEnsemble(6, 3, num_members=2, num_cells=32)
    obs, cands, anchor = _inputs(q, 200, (2,))
    with torch.no_grad():
        got = q.candidate_values(obs, cands, anchor)
        torch.testing.assert_close(got, q.values(obs, cands), rtol=1e-5, atol=1e-5)


def test_a_failed_build_is_reported_and_falls_back(monkeypatch, caplog, tmp_path):
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\necho 'cc: error: no usable target' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(kernel, "_state", {})
    monkeypatch.setenv("CC", str(broken))
    with caplog.at_level(logging.WARNING, logger=kernel.__name__):
        assert not kernel.available()
    assert "failed" in caplog.text and "no usable target" in caplog.text


@needs_compiler
def test_a_library_that_cannot_be_loaded_falls_back(monkeypatch, caplog):
    """A build that cannot be mapped (e.g. a temporary folder mounted noexec) is a warning."""

    def refuse(path):
        raise OSError(f"{path}: failed to map segment from shared object")

    monkeypatch.setattr(kernel, "_state", {})
    monkeypatch.setattr(kernel.ctypes, "CDLL", refuse)
    with caplog.at_level(logging.WARNING, logger=kernel.__name__):
        assert not kernel.available()
    assert "failed to map segment" in caplog.text


def test_the_environment_switches_the_kernel_off(monkeypatch):
    monkeypatch.setattr(kernel, "_state", {})
    monkeypatch.setenv("TORCHRL_O3F_KERNEL", "0")
    assert not kernel.available()
