"""The compiled CPU kernel behind :meth:`QEnsemble.candidate_values`.

``near_anchor.c`` (beside this file) scores many candidate actions near an anchor with a ReLU
ensemble: the maths of the torch fallback (``QEnsemble._near_anchor_values``) in one call
instead of ~30 small tensor operations, which is what one environment step of O3F costs on a
CPU (docs/performance.md). It is built once per process, on first use, with the system C
compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) into a private temporary folder and
loaded with :mod:`ctypes` (0.4 s with gcc 12 on a 2-core CPU). Where no compiler is found, or
the build or the load fails, a warning is logged once and the ensemble keeps to torch
operations (the same values). Setting the environment variable ``TORCHRL_O3F_KERNEL=0`` turns
the kernel off.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["available", "near_anchor"]

_log = logging.getLogger(__name__)
_SOURCE = Path(__file__).with_name("near_anchor.c")
_lock = threading.Lock()
_state: dict = {}


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build() -> ctypes.CDLL | None:
    if os.environ.get("TORCHRL_O3F_KERNEL", "1").strip().lower() in ("0", "false", "off", "no"):
        return None
    cc = _compiler()
    if cc is None:
        _log.warning(
            "torchrl_o3f: no C compiler found (set CC, or install gcc/clang): QEnsemble scores "
            "candidates with torch operations, several times slower on CPU"
        )
        return None
    folder = tempfile.mkdtemp(prefix="torchrl_o3f_kernel_")
    lib, errors = None, ""
    try:
        target = os.path.join(folder, "near_anchor.so")
        # this machine's vector units and OpenMP first, then without what the compiler refuses
        native, omp = ["-march=native"], ["-fopenmp"]
        for flags in (native + omp, omp, native, []):
            cmd = [cc, "-O3", *flags, "-shared", "-fPIC", str(_SOURCE), "-o", target]
            try:
                run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.SubprocessError) as err:
                errors = str(err)
                continue
            if run.returncode != 0:
                errors = run.stderr[-2000:]
                continue
            try:
                lib = ctypes.CDLL(target)  # stays mapped after the folder is removed
            except OSError as err:  # e.g. a temporary folder mounted noexec
                errors = f"loading the built library: {err}"
            break
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if lib is None:
        _log.warning(
            "torchrl_o3f: building the candidate-scoring kernel with %s failed; QEnsemble "
            "scores candidates with torch operations instead:\n%s",
            cc,
            errors,
        )
        return None
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    lib.near_anchor.restype = None
    lib.near_anchor.argtypes = [i32] * 7 + [ptr] * 15
    lib.near_anchor_work_floats.restype = ctypes.c_long
    lib.near_anchor_work_floats.argtypes = [i32, i32]
    lib.near_anchor_max_action.restype = i32
    lib.near_anchor_max_input.restype = i32
    lib.near_anchor_parallel.restype = i32
    return lib


def _one_openmp() -> bool:
    """Whether one OpenMP runtime is loaded (the kernel's threads are then torch's own).

    The kernel asks for ``libgomp.so.1``, which resolves to the copy torch's wheel has already
    loaded; a torch built on another runtime would give the process two thread pools, which
    would fight over the cores, so the kernel then runs on one thread.
    """
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux: the runtimes cannot be told apart
        return False
    names = ("libgomp", "libiomp", "libomp")
    paths = {line.split()[-1] for line in maps.splitlines() if any(n in line for n in names)}
    return len(paths) == 1


def _library() -> ctypes.CDLL | None:
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                lib = _build()
                if lib is not None:
                    _state["max_action"] = lib.near_anchor_max_action()
                    _state["max_input"] = lib.near_anchor_max_input()
                    _state["parallel"] = bool(lib.near_anchor_parallel()) and _one_openmp()
                _state["lib"] = lib
    return _state["lib"]


def available(observation_dim: int | None = None, action_dim: int | None = None, hidden=None):
    """Whether the compiled kernel is built (building it on first call) and serves these sizes.

    Args:
        observation_dim: the critic's observation size (checked when given).
        action_dim: its action size (checked when given).
        hidden: its hidden width (a multiple of 16 is needed; checked when given).

    Example:
        >>> from torchrl_o3f.modules import kernel
        >>> isinstance(kernel.available(17, 6, 256), bool)
        True
    """
    if _library() is None:
        return False
    if action_dim is not None and not 0 < action_dim <= _state["max_action"]:
        return False
    if observation_dim is not None and observation_dim + (action_dim or 0) > _state["max_input"]:
        return False
    return hidden is None or hidden % 16 == 0


def near_anchor(
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    normalization: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    observation: torch.Tensor,
    candidates: torch.Tensor,
    anchor: torch.Tensor,
) -> torch.Tensor:
    """Values (two hidden layers) or second-layer pre-activations of candidates near anchors.

    The caller (:meth:`QEnsemble.candidate_values`) has checked :func:`available`, float32
    CPU tensors and a ReLU critic without LayerNorm.

    Args:
        weights: the ensemble's stacked weights, ``[m, in, out]`` per layer (a list or an
            ``nn.ParameterList``).
        biases: its stacked biases, ``[m, 1, out]`` per layer.
        normalization: ``(observation_loc, observation_scale, action_loc, action_scale)``,
            of sizes ``d, d, a, a``.
        observation: ``[B, d]``.
        candidates: ``[N, B, a]``.
        anchor: ``[B, a]``, the action the candidates lie around.

    Returns:
        ``[m, N, B]`` values when the critic has two hidden layers, else the second layer's
        pre-activations ``[m, B, N, hidden]`` for the remaining layers.
    """
    lib = _library()
    w0 = weights[0]
    m, d_a, h = w0.shape
    n, nb, a = candidates.shape
    d = d_a - a
    two_layers = len(weights) == 3
    out = torch.empty((m, n, nb) if two_layers else (m, nb, n, h), dtype=torch.float32)
    last = (weights[2].contiguous(), biases[2].contiguous()) if two_layers else (None, None)
    tensors = (
        w0.contiguous(),
        biases[0].contiguous(),
        weights[1].contiguous(),
        biases[1].contiguous(),
        *last,
        *(t.contiguous() for t in normalization),  # [d], [d], [a], [a]
        observation.contiguous(),
        anchor.contiguous(),
        candidates.contiguous(),
        out,
    )
    pointers = [None if t is None else t.data_ptr() for t in tensors]
    pairs = m * nb
    # torch's threads are awake between its own operations, so even 5 pairs x 10 candidates
    # gain from the split (docs/performance.md)
    threads = min(torch.get_num_threads(), pairs) if _state["parallel"] else 1
    work = torch.empty(threads, lib.near_anchor_work_floats(a, h), dtype=torch.float32)
    lib.near_anchor(m, nb, n, d, a, h, threads, *pointers, work.data_ptr())
    return out
