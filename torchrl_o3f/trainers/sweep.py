"""One job of a sweep: idempotent, resumable, sharing one offline phase among its variants.

A study is a hydra multirun (``python recipes/sweep.py experiment=<name>``) whose jobs each
call :func:`run_sweep_job`. A job's folder is named by what it is
(``<study root>/<budget>/<task>/<method>/seed<k>``), so running a sweep again

- skips the runs that finished (their ``summary.json`` is there and their budget is met),
- resumes the ones that were interrupted (``checkpoints/latest.pt``), through the trainer's
  exact resume,
- and runs the rest.

The online variants of one base algorithm (O3F, noise, no exploration, omega, loosening,
objective switches) start from one offline phase per (task, algorithm config, seed, offline
budget), trained once in ``<study root>/<budget>/offline/<task>/<algo>-<hash>/seed<k>`` under a
file lock, so concurrent jobs (joblib, SLURM array) never train it twice or read a half-written
one.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchrl_o3f.data import ensure_dataset
from torchrl_o3f.trainers.config import AnnealConfig, TrainerConfig, resolve_device
from torchrl_o3f.trainers.trainer import OfflineOnlineTrainer

__all__ = ["SweepConfig", "offline_key", "offline_run_dir", "run_sweep_job", "threads_per_job"]


@dataclass
class SweepConfig(TrainerConfig):
    """A sweep job's config: a trainer config and where the study keeps shared offline phases.

    Example:
        >>> SweepConfig(task="hopper-medium", algo="iql").study_root
        'studies'
    """

    study_root: str = "studies"


def threads_per_job(launcher: dict[str, Any] | None = None, cores: int | None = None) -> int:
    """Torch/OpenMP threads for one job: the cores shared out over the parallel jobs.

    ``launcher`` is the hydra launcher config: joblib's ``n_jobs`` shares the machine's cores,
    submitit's ``cpus_per_task`` is the job's own allocation, and so is Ray's
    ``ray.remote.num_cpus`` (1 when unset: Ray then runs one job per core); any other launcher
    (the basic, sequential one) gets every core. Always at least 1.

    Example:
        >>> threads_per_job({"n_jobs": 2}, cores=2), threads_per_job({}, cores=2)
        (1, 2)
        >>> threads_per_job({"cpus_per_task": 8}, cores=64)
        8
        >>> threads_per_job({"ray": {"init": {}, "remote": {}}}, cores=64)
        1
    """
    cores = cores or os.cpu_count() or 1
    launcher = launcher or {}
    if launcher.get("cpus_per_task"):
        return max(1, int(launcher["cpus_per_task"]))
    if isinstance(launcher.get("ray"), dict):
        return max(1, int((launcher["ray"].get("remote") or {}).get("num_cpus") or 1))
    n_jobs = launcher.get("n_jobs")
    if n_jobs:
        n_jobs = cores if int(n_jobs) < 0 else int(n_jobs)
        return max(1, cores // max(1, n_jobs))
    return cores


def offline_key(cfg: TrainerConfig) -> str:
    """A short hash of what the offline phase depends on besides its seed (not online settings).

    Example:
        >>> a = TrainerConfig(task="hopper-medium", algo="iql")
        >>> b = TrainerConfig(task="hopper-medium", algo="iql")
        >>> b.exploration.mode, b.budget.online_frames = "none", 5
        >>> offline_key(a) == offline_key(b)
        True
    """
    b = cfg.budget
    parts = {
        "task": cfg.task,
        "algo": dataclasses.asdict(cfg.algo),
        "dataset_seed": cfg.dataset_seed,
        "threads": cfg.threads,
        "budget": [b.offline_steps, b.dataset_size, b.eval_every, b.eval_episodes],
        "budget2": [b.checkpoint_every, b.log_every, cfg.max_episode_steps()],
        "offline_fraction": cfg.offline_fraction,
    }
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def offline_run_dir(cfg: TrainerConfig, root: str | Path) -> Path:
    """Where the shared offline phase of ``cfg`` lives under a study ``root``."""
    return (
        Path(root)
        / "offline"
        / cfg.task
        / f"{cfg.algo.name}-{offline_key(cfg)}"
        / (f"seed{cfg.seed}")
    )


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _finished(out: Path, cfg: TrainerConfig) -> bool:
    summary = out / "summary.json"
    if not summary.exists():
        return False
    done = json.loads(summary.read_text())
    return (
        done.get("offline_steps", -1) >= cfg.budget.offline_steps
        and done.get("online_frames", -1) >= cfg.budget.online_frames
    )


def _ensure_offline(cfg: TrainerConfig, root: Path) -> Path:
    """Train (or finish, or find) the shared offline phase of ``cfg``; its ``offline.pt``."""
    out = offline_run_dir(cfg, root)
    boundary = out / "checkpoints" / "offline.pt"
    with _locked(out.with_suffix(".lock")):
        if not boundary.exists():
            base = dataclasses.replace(
                cfg,
                online_algo=None,
                online_overrides={},
                anneal=AnnealConfig(),
                budget=dataclasses.replace(cfg.budget, online_frames=0),
                output_dir=str(out),
                resume=str(out) if (out / "checkpoints" / "latest.pt").exists() else None,
                overwrite=not (out / "checkpoints" / "latest.pt").exists(),  # nothing to resume
                offline_checkpoint=None,
                method=f"{cfg.algo.name} (offline)",
            )
            base.exploration = dataclasses.replace(cfg.exploration, mode="none")
            summary = OfflineOnlineTrainer(base.validate()).train()
            if summary.get("stopped"):
                raise _Stopped
    return boundary


class _Stopped(Exception):
    pass


def run_sweep_job(cfg: TrainerConfig, *, study_root: str | Path | None) -> dict[str, Any]:
    """Run one sweep job in ``cfg.output_dir``: skip it, resume it or start it.

    Args:
        cfg: the job's validated config; ``output_dir`` is its named folder.
        study_root: where shared offline phases live (``None``: each job trains its own).

    Returns:
        The run's summary, with ``"skipped": True`` for a finished run and ``"stopped": True``
        for one interrupted by a signal (it resumes on the next sweep).
    """
    resolve_device(cfg.device)  # this machine has the job's device, before any work
    out = Path(cfg.output_dir)
    if _finished(out, cfg):
        summary = json.loads((out / "summary.json").read_text())
        return {**summary, "skipped": True}
    if study_root is not None:  # concurrent jobs must not build the same dataset twice
        with _locked(Path(study_root) / "datasets.lock"):
            ensure_dataset(
                cfg.task,
                size=cfg.budget.dataset_size,
                seed=cfg.dataset_seed,
                root=cfg.dataset_root,
                progress=False,
            )
    if (out / "checkpoints" / "latest.pt").exists():
        cfg = dataclasses.replace(cfg, resume=str(out), offline_checkpoint=None)
    else:  # a start: what the folder may hold is a run stopped before its first checkpoint
        cfg = dataclasses.replace(cfg, overwrite=True)
        if study_root is not None and cfg.offline_checkpoint is None and cfg.budget.online_frames:
            try:
                boundary = _ensure_offline(cfg, Path(study_root))
            except _Stopped:
                return {"stopped": True, "step": 0, "frames": 0}
            cfg = dataclasses.replace(cfg, offline_checkpoint=str(boundary))
    return OfflineOnlineTrainer(cfg.validate()).train()
