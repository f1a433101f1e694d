"""Training a behavior policy: SAC through the trainer, stopped at a target return.

D4RL made its locomotion datasets by rolling out SAC policies stopped at a given return
(``medium``: about a third of an expert's). :func:`train_behavior` trains such a policy with
the registered SAC (an online-only run of :class:`~torchrl_o3f.trainers.OfflineOnlineTrainer`),
keeps the actor with its measured returns and installs it where
:func:`torchrl_o3f.data.load_behavior_policy` and the dataset builder find it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from torchrl_o3f.data.behavior import (
    MEDIUM_TARGETS,
    POLICY_DIR,
    BehaviorPolicy,
    PolicyInfo,
    load_behavior_policy,
    measure_policy,
)
from torchrl_o3f.envs import get_task
from torchrl_o3f.objectives.registry import algo_config
from torchrl_o3f.trainers.config import (
    BudgetConfig,
    ConfigError,
    ExplorationConfig,
    LoggerConfig,
    TrainerConfig,
)
from torchrl_o3f.trainers.trainer import OfflineOnlineTrainer

__all__ = ["train_behavior"]


def train_behavior(
    family: str,
    *,
    quality: str = "medium",
    target_return: float | None = None,
    tolerance: float = 0.1,
    max_steps: int = 150_000,
    warmup_steps: int = 5_000,
    eval_every: int = 5_000,
    eval_episodes: int = 5,
    final_episodes: int = 10,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    run_dir: str | os.PathLike | None = None,
    algo_overrides: dict[str, Any] | None = None,
    threads: int = 0,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
) -> Path | None:
    """Train a behavior actor with the registered SAC, as an online-only run of the trainer.

    The run is :class:`~torchrl_o3f.trainers.OfflineOnlineTrainer` with ``algo="sac"`` (its
    yaml's numbers, changed by ``algo_overrides``), no offline data, ``warmup_steps`` frames of
    uniform random actions, then one update per env step. After every evaluation (every
    ``eval_every`` env steps, ``eval_episodes`` deterministic episodes) the actor is written to
    ``<run_dir>/behavior/<family>-<quality>-step<N>.{pt,json}`` with its return; the run stops
    as soon as an evaluation after the warm-up is within ``target_return * (1 +- tolerance)``
    (or at ``max_steps``). The snapshot closest to the target is then measured over
    ``final_episodes`` deterministic and stochastic episodes and written as
    ``<out_dir>/<family>-<quality>.{pt,json}``.

    A run stopped by SIGINT/SIGTERM leaves its checkpoint in ``run_dir``: the same call resumes
    it (the trainer's exact resume) and returns ``None`` meanwhile. A finished ``run_dir`` is
    not trained again: its snapshots are selected from anew.

    Args:
        family: ``"halfcheetah"``, ``"hopper"`` or ``"walker2d"``.
        quality: checkpoint name suffix (``"medium"``; ``"expert"`` with a high target).
        target_return: the deterministic return to stop at (default: :data:`MEDIUM_TARGETS`).
        tolerance: relative half-width of the stopping band.
        max_steps: environment steps of the run at most.
        warmup_steps: random-action steps before learning starts.
        eval_every: environment steps between evaluations.
        eval_episodes: episodes per evaluation.
        final_episodes: episodes of each final measurement.
        seed: the run's seed.
        out_dir: where to write the policy. ``None``: the package's shipped policies, which
            are only replaced with ``overwrite=True``.
        overwrite: replace an existing ``<out_dir>/<family>-<quality>`` policy.
        run_dir: the trainer's run directory (default: ``runs/behavior/<name>-seed<k>``).
        algo_overrides: SAC config changes, e.g. ``{"num_cells": 64}``.
        threads: torch threads (0: torch's default).
        progress: show the trainer's progress bar.
        log: progress printer (``None``: silent).

    Returns:
        The path of the written ``.pt`` file, or ``None`` when the run was stopped by a signal.

    Raises:
        ConfigError: (a ``ValueError``) for a family without a locomotion env, settings that
            leave no evaluation after the warm-up, or a SAC override that does not fit its
            config (raised before any training).
        FileExistsError: the policy exists (or ``out_dir`` is the shipped folder) and
            ``overwrite`` is false; raised before any training.
    """
    if family not in MEDIUM_TARGETS:
        raise ConfigError(
            f"train-behavior trains locomotion policies, one of {sorted(MEDIUM_TARGETS)}; got "
            f"{family!r} (pointmaze data come from a scripted controller, antmaze and kitchen "
            "cannot be rebuilt)"
        )
    if max_steps < warmup_steps + eval_every:
        raise ConfigError(
            f"no evaluation after the warm-up: max_steps={max_steps} must be at least "
            f"warmup_steps={warmup_steps} + eval_every={eval_every}"
        )
    name = f"{family}-{quality}"
    target = Path(out_dir if out_dir is not None else POLICY_DIR) / f"{name}.pt"
    if not overwrite and (out_dir is None or target.exists()):
        where = "a shipped policy" if out_dir is None else "a policy"
        raise FileExistsError(
            f"{target} would replace {where}: give another --out-dir, or pass --overwrite "
            "(overwrite=True) to replace it"
            if target.exists()
            else f"writing into the shipped policies ({target.parent}) needs --overwrite "
            "(overwrite=True); or give --out-dir"
        )
    task = get_task(f"{family}-random")  # every quality of a family shares its env
    if target_return is None:
        target_return = MEDIUM_TARGETS[family]
    log = log or (lambda s: None)
    if run_dir is None:
        run_dir = Path("runs", "behavior", f"{name}-seed{seed}")
    run_dir = Path(run_dir)
    snapshots = run_dir / "behavior"
    resume = run_dir / "checkpoints" / "latest.pt"
    cfg = TrainerConfig(
        task=task.name,
        algo=algo_config("sac", task=task.name, overrides=algo_overrides or {}),
        offline_data=False,
        exploration=ExplorationConfig(mode="none"),
        budget=BudgetConfig(
            offline_steps=0,
            online_frames=max_steps,
            warmup_frames=warmup_steps,
            eval_every=eval_every,
            eval_episodes=eval_episodes,
            checkpoint_every=eval_every,
            log_every=min(1000, eval_every),
            dataset_size=None,
        ),
        logger=LoggerConfig(backend="csv", exp_name=f"train-behavior-{name}"),
        seed=seed,
        output_dir=str(run_dir),
        resume=str(run_dir) if resume.exists() else None,
        overwrite=not resume.exists(),  # a run stopped before its first checkpoint restarts
        threads=threads,
        progress=progress,
        method="train-behavior",
    )
    start = time.time()

    def snapshot(trainer, row: dict) -> bool:
        if row["phase"] != "online" or row["frames"] <= warmup_steps:
            return False  # the untrained actor of the warm-up is not a candidate
        spec = trainer.action_spec.space
        snap = PolicyInfo(
            name=name,
            env_id=task.env_id,
            observation_dim=int(trainer.observation_dim),
            action_dim=int(spec.low.numel()),
            action_low=spec.low.detach().cpu().reshape(-1).tolist(),
            action_high=spec.high.detach().cpu().reshape(-1).tolist(),
            num_cells=cfg.algo.num_cells,
            depth=cfg.algo.depth,
            seed=seed,
            train_steps=int(row["frames"]),
        )
        snap.returns = {
            "deterministic": {
                "mean": float(row["return"]),
                "std": float(row.get("return_std", float("nan"))),
                "episodes": int(row["eval_episodes"]),
            }
        }
        snap.extra = {"wall_time_s": round(time.time() - start, 1)}
        mlp = trainer.agent.policy.module[0].module[0]  # make_sac_actor's MLP
        BehaviorPolicy.from_info(snap, mlp.state_dict()).save(
            snapshots / f"{name}-step{row['frames']}"
        )
        log(
            f"[train-behavior {family}] step {row['frames']}: eval return {row['return']:.1f} "
            f"({time.time() - start:.0f}s)"
        )
        return abs(row["return"] - target_return) <= tolerance * abs(target_return)

    if not (run_dir / "summary.json").exists():  # else the run is done: only select again
        trainer = OfflineOnlineTrainer(cfg)
        trainer.register_hook("post_evaluation", snapshot)
        summary = trainer.train()
        if summary.get("stopped"):
            log(f"[train-behavior {family}] stopped; the same command resumes it from {run_dir}")
            return None
    best = None
    for js in sorted(snapshots.glob(f"{name}-step*.json")):
        snap = PolicyInfo(**json.loads(js.read_text()))
        if snap.train_steps <= warmup_steps:
            continue
        gap = abs(snap.returns["deterministic"]["mean"] - target_return)
        if best is None or (gap, snap.train_steps) < best[:2]:
            best = (gap, snap.train_steps, js.with_suffix(""))
    policy = load_behavior_policy(best[2].name, best[2].parent)
    sac = cfg.algo
    policy.info.extra = {
        "algorithm": "SAC (torchrl_o3f's registered sac, an online-only run of the trainer)",
        "sac": {k: v for k, v in sac.hyperparameters().items()},
        "batch_size": sac.batch_size,
        "lr": dict(sac.lr),
        "gamma": sac.gamma,
        "tau": sac.tau,
        "warmup_steps": warmup_steps,
        "target_return": target_return,
        "torch_threads": torch.get_num_threads(),
        "wall_time_s": round(time.time() - start, 1),
    }
    measure_policy(policy, num_episodes=final_episodes)
    det, sto = policy.info.returns["deterministic"], policy.info.returns["stochastic"]
    log(
        f"[train-behavior {family}] kept step {policy.info.train_steps}: deterministic "
        f"{det['mean']:.1f} +- {det['std']:.1f}, stochastic {sto['mean']:.1f} +- {sto['std']:.1f}"
    )
    pt, _ = policy.save(target.with_suffix(""))
    return pt
