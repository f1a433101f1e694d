"""Atomic checkpoints and random-number-generator state capture."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "save_checkpoint",
    "copy_checkpoint",
    "write_atomic",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "seed_everything",
    "CheckpointError",
]


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or belongs to another run."""


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file atomically.

    ``write(f)`` fills a temporary file in the same directory, which is flushed to disk and
    renamed over ``path``. A crash or a kill never leaves a half-written file: the previous
    one stays intact until the new one is complete.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> write_atomic(path, lambda f: f.write(b"hi")).read_text()
        'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` with ``torch.save`` atomically (see :func:`write_atomic`).

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> p = save_checkpoint({"step": 3}, os.path.join(d, "ckpt.pt"))
        >>> load_checkpoint(p)["step"]
        3
    """
    return write_atomic(path, lambda f: torch.save(state, f))


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a checkpoint file atomically (a byte copy, not a second serialisation).

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> p = save_checkpoint({"step": 3}, os.path.join(d, "final.pt"))
        >>> load_checkpoint(copy_checkpoint(p, os.path.join(d, "latest.pt")))["step"]
        3
    """
    with open(src, "rb") as source:
        return write_atomic(dst, lambda f: shutil.copyfileobj(source, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, with a clear error if corrupt.

    ``path`` may be a checkpoint file or a run directory (its ``checkpoints/latest.pt``).
    """
    path = Path(path)
    if path.is_dir():
        candidate = path / "checkpoints" / "latest.pt"
        path = candidate if candidate.exists() else path / "latest.pt"
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint at {path}; give a run directory (with checkpoints/latest.pt) "
            "or a checkpoint file"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated or foreign file
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); it may be "
            "truncated or not a torchrl-o3f checkpoint"
        ) from err


def rng_state() -> dict[str, Any]:
    """The state of every global random generator (python, numpy, torch, CUDA)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators captured by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
