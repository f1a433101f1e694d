"""A run's folder and where a run starts from: the files it owns, resume and phase checks.

Everything here is decided from the config and the files on disk, before any work starts, so a
wrong ``output_dir``, ``resume`` or ``offline_checkpoint`` is one line, not a lost hour.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torchrl_o3f.errors import ConfigError
from torchrl_o3f.trainers.checkpoint import CheckpointError, load_checkpoint
from torchrl_o3f.trainers.config import TrainerConfig
from torchrl_o3f.trainers.record import resume_conflicts

__all__ = [
    "RUN_FILES",
    "check_output_dir",
    "checkpoint_file",
    "clear_output_dir",
    "load_start_state",
]

RUN_FILES = (
    "config.yaml",
    "checkpoints",
    "metrics.jsonl",
    "summary.json",
    "evaluations.csv",
    "learning_curve.png",
    "policy.pt",
    "switch.json",
    "logs",
)
"""The files a run writes into its ``output_dir`` (what ``overwrite=True`` removes)."""

_RUN_MARKERS = ("checkpoints", "metrics.jsonl", "summary.json", "policy.pt")
"""Names only a run writes, the first two as it starts: a folder with one of them holds a run
(``config.yaml`` or ``logs/`` alone may be anyone's)."""


def check_output_dir(cfg: TrainerConfig) -> None:
    """Refuse an ``output_dir`` that holds another run, unless resumed there or overwritten.

    Raises:
        ConfigError: naming the run's files found and the three ways out.
    """
    out = Path(cfg.output_dir)
    held = [name for name in _RUN_MARKERS if (out / name).exists()]
    if not held or cfg.overwrite:
        return
    resume = Path(cfg.resume) if cfg.resume else None
    if resume is not None and out.resolve() in (resume.resolve(), *resume.resolve().parents[:2]):
        return  # the run resumed here is this folder's run
    raise ConfigError(
        f"output_dir={out} holds another run ({', '.join(held[:3])}); resume it with "
        f"resume={out}, give this run another output_dir, or set overwrite=true to replace it"
    )


def clear_output_dir(out: str | Path) -> None:
    """Remove the files of the run ``overwrite=True`` replaces (only :data:`RUN_FILES`)."""
    for name in RUN_FILES:
        path = Path(out) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def checkpoint_file(src: str | Path) -> str:
    """The checkpoint file ``src`` (a run directory, its ``checkpoints/`` or a file) names."""
    path = Path(src)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        path = folder / "latest.pt"
    return str(path)


def load_start_state(cfg: TrainerConfig) -> tuple[dict[str, Any] | None, str | None]:
    """The checkpoint a run starts from (``resume`` / ``offline_checkpoint``), checked.

    Returns:
        ``(state, file)``, or ``(None, None)`` for a fresh run.

    Raises:
        CheckpointError: for a missing or corrupt checkpoint, one of another task or algorithm,
            or an ``offline_checkpoint`` that is not a phase boundary.
        ConfigError: for a resume that would change the run (its config or a budget below
            what is done) or continue a finished run without ``extend=true``.
    """
    src = cfg.resume or cfg.offline_checkpoint
    if not src:
        return None, None
    key = "resume" if cfg.resume else "offline_checkpoint"
    try:
        state = load_checkpoint(src)
    except CheckpointError as err:
        raise CheckpointError(f"{key}={src}: {err}") from None
    meta = state.get("meta", {})
    for key in ("task", "algo"):
        mine = cfg.task if key == "task" else cfg.algo.name
        if meta.get(key) != mine:
            raise CheckpointError(
                f"checkpoint {src} is from {key}={meta.get(key)!r}, this run has "
                f"{key}={mine!r}; resume with the same {key} or start a new run"
            )
    if cfg.resume:
        _check_same_run(cfg, src, state)
    if cfg.offline_checkpoint and state["counters"]["phase"] != "online":
        raise CheckpointError(
            f"{src} is not a phase-boundary checkpoint (phase="
            f"{state['counters']['phase']!r}); use checkpoints/offline.pt of a run"
        )
    return state, checkpoint_file(src)


def _check_same_run(cfg: TrainerConfig, src, state: dict[str, Any]) -> None:
    """A resumed run is the same run: its config, and a budget not below what is done."""
    stored = state.get("meta", {}).get("config")
    if isinstance(stored, dict) and "derived" in stored:
        conflicts = resume_conflicts(cfg, stored)
        if conflicts:
            lines = "; ".join(f"{k}={a!r} (the run has {b!r})" for k, a, b in conflicts[:6])
            raise ConfigError(
                f"resume={src} would change the run: {lines}. Resume without these overrides "
                "(the run's config.yaml is reloaded), or start a new run"
            )
    c, b = state["counters"], cfg.budget
    if c["frames"] > b.online_frames or c["step"] > b.offline_steps:
        raise ConfigError(
            f"resume={src}: the run has done {c['step']} offline steps and {c['frames']} "
            f"online frames, more than budget.offline_steps={b.offline_steps} / "
            f"budget.online_frames={b.online_frames}; a resumed budget cannot shrink"
        )
    finished = c["phase"] == "online" and c["frames"] >= b.online_frames
    if finished and c["step"] >= b.offline_steps and not cfg.extend:
        raise ConfigError(
            f"resume={src}: the run has finished its budget ({c['step']} offline steps, "
            f"{c['frames']} online frames); to continue it, pass extend=true with a larger "
            "budget.online_frames"
        )
