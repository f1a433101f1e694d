"""Checkpoints that load safely and prove their integrity; RNG state capture; stop signals.

A checkpoint is a ``torch.save`` file holding tensors and plain data only (dicts, lists,
tuples, strings, numbers, booleans, ``None``), so ``torch.load(path, weights_only=True)``
reads it and a file carrying any other Python object is refused without being executed.
TensorDicts are stored as tagged plain dicts and come back as TensorDicts from
:func:`load_checkpoint`. Next to the state the file records its format and the sha256 of its
content (every tensor's bytes, every key and value), which :func:`load_checkpoint` recomputes:
a file changed after it was written is a one-line error naming it.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchrl_o3f._atomic import (
    DiskFullError,
    link_atomic,
    previous_path,
    remove_stale_temporaries,
    write_atomic,
)
from torchrl_o3f.errors import O3FError

__all__ = [
    "EXIT_RESUMABLE",
    "CHECKPOINT_FORMAT",
    "save_checkpoint",
    "copy_checkpoint",
    "write_atomic",
    "load_checkpoint",
    "copy_state",
    "rng_state",
    "set_rng_state",
    "seed_everything",
    "StopSignals",
    "StopNow",
    "CheckpointError",
    "CheckpointFallbackWarning",
    "DiskFullError",
]

EXIT_RESUMABLE = 75
"""Exit status of a run stopped by a signal after writing a checkpoint it can resume from.

75 is ``EX_TEMPFAIL`` of ``sysexits.h`` ("try again later"); a finished run exits 0, a failed
one 1. Sweeps resubmit the runs that end with it (``resume=<run dir>``)."""

CHECKPOINT_FORMAT = "torchrl-o3f-checkpoint/2"
"""The format record of the checkpoints this version writes (key ``o3f_format``)."""

_FORMAT_KEY, _DIGEST_KEY, _TYPE_KEY = "o3f_format", "o3f_sha256", "__o3f_type__"


class CheckpointError(O3FError, RuntimeError):
    """A checkpoint that is missing, unreadable, damaged, unsafe, or belongs to another run."""


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint of a run is damaged; an older intact one is used instead."""


# ---------------------------------------------------------------- plain-data encoding
def _compact(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if isinstance(t, torch.nn.Parameter):
        t = t.data
    # a view saves its whole storage: store only what it shows
    if t.untyped_storage().nbytes() != t.nbytes or not t.is_contiguous():
        t = t.clone(memory_format=torch.contiguous_format)
    return t


def _encode(obj: Any, where: str) -> Any:
    from tensordict import TensorDictBase

    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, torch.Tensor):
        return _compact(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return {
            _TYPE_KEY: "ndarray",
            "dtype": str(obj.dtype),
            "data": torch.from_numpy(
                np.ascontiguousarray(obj).astype(np.int64 if obj.dtype.kind in "ub" else obj.dtype)
            ),
        }
    if isinstance(obj, TensorDictBase):
        return {
            _TYPE_KEY: "TensorDict",
            "batch_size": list(obj.batch_size),
            "data": _encode(obj.to_dict(), where),
        }
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not (k is None or isinstance(k, bool | int | float | str)):
                raise TypeError(f"cannot checkpoint {where}: key {k!r} is not plain data")
            out[k] = _encode(v, f"{where}.{k}")
        return out
    if isinstance(obj, list | tuple):
        seq = [_encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return seq if isinstance(obj, list) else tuple(seq)
    raise TypeError(
        f"cannot checkpoint {where}: a {type(obj).__name__} is neither a tensor nor plain data "
        "(dict, list, tuple, str, int, float, bool, None); convert it before saving"
    )


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        kind = obj.get(_TYPE_KEY)
        if kind == "TensorDict":
            from tensordict import TensorDict

            return TensorDict(_decode(obj["data"]), batch_size=obj["batch_size"])
        if kind == "ndarray":
            return obj["data"].numpy().astype(np.dtype(obj["dtype"]))
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_decode(v) for v in obj)
    return obj


def _digest(obj: Any) -> str:
    """sha256 of a plain-data tree: structure, keys, values and every tensor's bytes."""
    h = hashlib.sha256()

    def walk(o):
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(o.shape)}:".encode())
            if t.numel():
                h.update(memoryview(t.view(torch.uint8).numpy()))
        elif isinstance(o, dict):
            h.update(f"D{len(o)}:".encode())
            for k, v in o.items():
                h.update(f"{type(k).__name__}{k!r}=".encode())
                walk(v)
        elif isinstance(o, list | tuple):
            h.update(f"{type(o).__name__[0]}{len(o)}:".encode())
            for v in o:
                walk(v)
        else:
            h.update(f"{type(o).__name__}{o!r};".encode())

    walk(obj)
    return h.hexdigest()


# ---------------------------------------------------------------------------- writing
def save_checkpoint(
    state: Mapping[str, Any], path: str | os.PathLike, *, keep_previous: bool = False
) -> Path:
    """Write ``state`` atomically as a safe, self-verifying checkpoint.

    ``state`` holds tensors, TensorDicts, numpy arrays/scalars and plain data; anything else
    is a ``TypeError`` naming its place. The file records :data:`CHECKPOINT_FORMAT` and the
    sha256 of its content (see the module documentation).

    Args:
        state: a mapping with string keys.
        path: the file to write (see :func:`write_atomic`).
        keep_previous: keep the file being replaced as ``<stem>.prev.pt``, so a damaged newest
            checkpoint still leaves one to resume from.

    Raises:
        TypeError: a value that is neither a tensor nor plain data.
        DiskFullError: the device is full (the previous file is intact).

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> p = save_checkpoint({"step": 3}, os.path.join(d, "ckpt.pt"))
        >>> load_checkpoint(p)["step"]
        3
        >>> sorted(torch.load(p, weights_only=True))  # plain torch reads it too
        ['o3f_format', 'o3f_sha256', 'step']
    """
    encoded = _encode(dict(state), "state")
    for key in (_FORMAT_KEY, _DIGEST_KEY):
        if key in encoded:
            raise TypeError(f"cannot checkpoint a state with the reserved key {key!r}")
    encoded[_FORMAT_KEY] = CHECKPOINT_FORMAT
    encoded[_DIGEST_KEY] = _digest(encoded)
    return write_atomic(path, lambda f: torch.save(encoded, f), keep_previous=keep_previous)


def copy_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, *, keep_previous: bool = False
) -> Path:
    """Make ``dst`` the same checkpoint as ``src``, atomically, without a second copy on disk.

    A hard link (e.g. ``latest.pt`` of ``final.pt``), a byte copy where links are not possible.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> p = save_checkpoint({"step": 3}, os.path.join(d, "final.pt"))
        >>> load_checkpoint(copy_checkpoint(p, os.path.join(d, "latest.pt")))["step"]
        3
    """
    return link_atomic(src, dst, keep_previous=keep_previous)


# ---------------------------------------------------------------------------- loading
_EXPECTED = (
    "expected a checkpoint written by torchrl-o3f's trainer (checkpoints/latest.pt, offline.pt "
    "or final.pt of a run directory)"
)


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        shape = list(obj.shape)
        return f"a single tensor (shape {shape}, {obj.dtype}), as torch.save(tensor) writes"
    if isinstance(obj, Mapping):
        keys = list(obj)
        shown = ", ".join(map(str, keys[:5])) + (", ..." if len(keys) > 5 else "")
        if keys and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return f"a state dict of {len(keys)} tensors ({shown}): a module's weights"
        return f"a dict with keys {shown}"
    return f"a {type(obj).__name__}"


def _read(path: Path, map_location) -> dict:
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:
        text = str(err)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found is not None:
            raise CheckpointError(
                f"refused to load {path}: it holds Python objects other than tensors and plain "
                f"data ({found.group(1)}), and unpickling them could run code from the file. "
                "torchrl-o3f checkpoints never hold such objects: this file is foreign or was "
                "tampered with"
            ) from None
        detail = re.search(r"WeightsUnpickler error: \s*(.+)", text)
        detail = detail.group(1).strip() if detail else text.strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(err).__name__}: {detail}); it is "
            f"truncated or not a checkpoint: {_EXPECTED}"
        ) from None
    if not isinstance(raw, dict) or raw.get(_FORMAT_KEY) != CHECKPOINT_FORMAT:
        if isinstance(raw, dict) and isinstance(raw.get(_FORMAT_KEY), str):
            raise CheckpointError(
                f"{path} has format {raw[_FORMAT_KEY]!r}; this version reads {CHECKPOINT_FORMAT!r}"
            )
        raise CheckpointError(f"{path} is {_describe(raw)}, not a checkpoint: {_EXPECTED}")
    recorded = raw.pop(_DIGEST_KEY, None)
    if recorded != _digest(raw):
        raise CheckpointError(
            f"checkpoint {path} is damaged: its content does not match the sha256 recorded "
            "when it was written (a disk error, a partial copy or an edit)"
        )
    raw.pop(_FORMAT_KEY)
    state = _decode(raw)
    if str(map_location) != "cpu":
        state = _to_device(state, map_location)
    return state


def _to_device(obj, device):
    if isinstance(obj, torch.Tensor) or hasattr(obj, "batch_size"):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _progress(state: dict) -> tuple:
    c = state.get("counters", {})
    return (c.get("phase") == "online", c.get("step", 0), c.get("frames", 0))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load and verify a checkpoint written by :func:`save_checkpoint`.

    ``path`` may be a checkpoint file or a run directory (its ``checkpoints/latest.pt``). If
    the newest checkpoint (``latest.pt``, or the file given when it has a ``.prev`` sibling)
    is damaged, the most advanced intact one among ``latest.prev.pt`` and, for a run
    directory, ``offline.pt`` and ``final.pt`` is loaded instead, with a
    :class:`CheckpointFallbackWarning` naming both.

    Raises:
        CheckpointError: no checkpoint there; an unreadable, damaged (sha256 mismatch) or
            foreign file (the message says what it is and what was expected); a file holding
            objects other than tensors and plain data (refused without being executed).

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> p = save_checkpoint({"counters": {"step": 1}}, os.path.join(d, "latest.pt"))
        >>> p = save_checkpoint({"counters": {"step": 2}}, p, keep_previous=True)
        >>> with open(p, "r+b") as f:  # damage the newest
        ...     _ = f.seek(-200, 2); _ = f.write(b"x" * 100)
        >>> import warnings
        >>> with warnings.catch_warnings(record=True):
        ...     warnings.simplefilter("always")
        ...     load_checkpoint(p)["counters"]
        {'step': 1}
    """
    path = Path(path)
    others: list[Path] = []
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        path = folder / "latest.pt"
        others = [previous_path(path), folder / "offline.pt", folder / "final.pt"]
    elif previous_path(path).exists():
        others = [previous_path(path)]
    remove_stale_temporaries(path.parent)
    if not path.exists():
        intact = [p for p in others if p.exists()]
        if not intact:
            raise CheckpointError(
                f"no checkpoint at {path}; give a run directory (with checkpoints/latest.pt) "
                "or a checkpoint file"
            )
    try:
        return _read(path, map_location)
    except (CheckpointError, FileNotFoundError) as err:
        first = err
    candidates = []
    for other in others:
        if other.exists():
            try:
                candidates.append((other, _read(other, map_location)))
            except CheckpointError:
                continue
    if not candidates:
        if isinstance(first, FileNotFoundError):
            raise CheckpointError(f"no intact checkpoint at {path}") from None
        raise first
    other, state = max(candidates, key=lambda c: _progress(c[1]))
    c = state.get("counters", {})
    reason = str(first).splitlines()[0] if isinstance(first, CheckpointError) else "missing"
    warnings.warn(
        f"{path} cannot be used ({reason}); using the newest intact checkpoint {other} "
        f"instead (phase {c.get('phase')}, step {c.get('step')}, frames {c.get('frames')})",
        CheckpointFallbackWarning,
        stacklevel=2,
    )
    return state


def copy_state(state: Mapping[str, Any], *, share: tuple[str, ...] = ()) -> dict[str, Any]:
    """A deep copy of a checkpoint state: containers rebuilt, tensors cloned.

    Top-level entries named in ``share`` are kept by reference (e.g. append-only data that
    later steps never rewrite), so a snapshot of the state costs a copy of the rest only.

    Example:
        >>> s = {"w": torch.zeros(2), "data": torch.ones(3)}
        >>> c = copy_state(s, share=("data",))
        >>> _ = s["w"].add_(1)
        >>> c["w"].tolist(), c["data"] is s["data"]
        ([0.0, 0.0], True)
    """

    def copy(o):
        if isinstance(o, torch.Tensor):
            return o.detach().clone()
        if hasattr(o, "batch_size") and hasattr(o, "clone"):
            return o.clone()
        if isinstance(o, Mapping):
            return {k: copy(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return type(o)(copy(v) for v in o)
        return o

    return {k: (v if k in share else copy(v)) for k, v in state.items()}


# -------------------------------------------------------------------------------- RNGs
def rng_state() -> dict[str, Any]:
    """The state of every global random generator (python, numpy, torch, CUDA).

    Tensors and plain data only (numpy's key as an int64 tensor), so checkpoints holding it
    load with ``weights_only=True``.

    Example:
        >>> s = rng_state(); a = torch.rand(1); set_rng_state(s)
        >>> bool(torch.rand(1) == a)
        True
    """
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators captured by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    key = np_state["key"]
    key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
    np.random.set_state(
        (
            np_state["bit_generator"],
            key.astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------ signals
class StopNow(BaseException):
    """Raised by :class:`StopSignals` at a second stop signal: stop at once.

    A ``BaseException`` (like ``KeyboardInterrupt``), so ``except Exception`` blocks on the
    way do not swallow it.
    """


class StopSignals:
    """SIGINT/SIGTERM handling of a run: the first asks to stop, the second stops at once.

    After :meth:`install`, the first signal sets :attr:`requested` (the run finishes the
    unit of work in progress, writes a checkpoint and ends) and prints how to stop at once;
    a second one raises :class:`StopNow` wherever the run is. :meth:`restore` puts the
    previous handlers back. Outside the main thread nothing is installed.

    Example:
        >>> stop = StopSignals(); stop.install()
        >>> os.kill(os.getpid(), signal.SIGTERM)
        >>> stop.requested
        True
        >>> try:
        ...     os.kill(os.getpid(), signal.SIGTERM)
        ... except StopNow:
        ...     print("stopped at once")
        stopped at once
        >>> stop.restore()
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, *, message: str = "stopping after the current step"):
        self.requested = False
        self.signum: int | None = None
        self.message = message
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame):
        if self.requested:
            raise StopNow(signum)
        self.requested, self.signum = True, signum
        print(
            f"{signal.Signals(signum).name}: {self.message} (send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def install(self) -> None:
        """Install the handlers (main thread only; elsewhere a no-op)."""
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for sig, h in self._previous.items():
            signal.signal(sig, h)
        self._previous.clear()
