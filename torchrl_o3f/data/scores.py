"""Normalised scores: D4RL's 0-100 scale, the dataset's own (Minari) references, success rates."""

from __future__ import annotations

import os

import numpy as np

from torchrl_o3f.data.loader import read_metadata
from torchrl_o3f.envs import Task, get_task

__all__ = ["SCORE_LABELS", "normalized_score", "score_label"]

SCORE_LABELS = {
    "return": "D4RL-normalised score (0 random, 100 expert)",
    "success": "success rate (%)",
    "tasks": "tasks completed (% of 4)",
    "raw": "episode return (no reference returns)",
}
"""What :func:`normalized_score` gives for each ``Task.score`` kind, as an axis or table label."""


def score_label(task: str | Task) -> str:
    """The label of ``task``'s normalised score (:data:`SCORE_LABELS` of its ``score`` kind).

    Raises:
        UnknownTaskError: for a task that is not registered.

    Example:
        >>> score_label("antmaze-umaze")
        'success rate (%)'
    """
    return SCORE_LABELS[get_task(task).score]


def normalized_score(
    task: str | Task,
    returns: float | np.ndarray | list[float],
    *,
    scale: str = "d4rl",
    root: str | os.PathLike | None = None,
    dataset_id: str | None = None,
) -> float | np.ndarray:
    """Normalise undiscounted episode returns, per episode, on a 0-100 scale.

    What ``returns`` must hold, and what comes back, depends on the task's ``score``:

    - ``"return"`` (locomotion, pointmaze): episode returns;
      ``100 * (R - ref_min) / (ref_max - ref_min)``.
    - ``"success"`` (antmaze): episode returns of the raw (unshifted) rewards; an episode is a
      success if its return is positive (the env gives a positive reward only at the goal), so
      each episode scores ``100`` or ``0`` and the mean over episodes is the success rate in
      percent.
    - ``"tasks"`` (kitchen): episode returns, which count the sub-tasks completed (one reward
      per completed task); each episode scores ``100 * R / 4``.
    - ``"raw"`` (a user's task without reference returns): the returns themselves, unscaled.

    Scores are per episode (same shape as ``returns``; a float for a scalar): average them
    over episodes for the usual D4RL number.

    Args:
        task: a task name or :class:`~torchrl_o3f.envs.Task`.
        returns: one return or an array of per-episode returns.
        scale: ``"d4rl"`` uses the registry's D4RL reference returns (v2 envs);
            ``"minari"`` uses the ``ref_min_score``/``ref_max_score`` stored in the task's
            local dataset (random and best shipped policy measured on the same v5 env and
            mujoco as the data), times 100. Success and tasks scores are the same on both.
        root: the Minari datasets folder holding the dataset (``scale="minari"``).
        dataset_id: the dataset to read the references from (default: the task's
            ``dataset_id``; pass the id :func:`~torchrl_o3f.data.ensure_dataset` returned for a
            build of non-default size).

    Raises:
        ValueError: unknown ``scale``, or a task without reference returns on that scale.
        DatasetNotFoundError: ``scale="minari"`` and the dataset is not on disk.

    Example:
        >>> round(normalized_score("halfcheetah-medium", 4000.0), 2)
        34.48
        >>> normalized_score("antmaze-umaze", [0.0, 3.0, 1.0]).tolist()
        [0.0, 100.0, 100.0]
        >>> normalized_score("kitchen-mixed", 2.0)
        50.0
    """
    task = get_task(task)
    if scale not in ("d4rl", "minari"):
        raise ValueError(f"scale must be 'd4rl' or 'minari', got {scale!r}")
    values = np.asarray(returns, dtype=np.float64)
    if task.score == "raw":  # a task without reference returns: the return itself
        return values if values.ndim else float(values)
    if task.score == "success":
        out = 100.0 * (values > 0)
    elif task.score == "tasks":
        out = 100.0 * values / 4.0
    else:
        if scale == "d4rl":
            lo, hi = task.ref_min_score, task.ref_max_score
            where = "the task registry"
        else:
            meta = read_metadata(dataset_id or task, root=root)
            lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
            where = f"dataset {dataset_id or task.dataset_id!r}"
        if lo is None or hi is None or hi == lo:
            raise ValueError(
                f"no usable reference returns for {task.name!r} in {where} (ref_min_score="
                f"{lo}, ref_max_score={hi}); "
                + (
                    "use scale='d4rl'"
                    if scale == "minari"
                    else "register the task with ref_min_score/ref_max_score"
                )
            )
        out = 100.0 * (values - lo) / (hi - lo)
    return float(out) if out.ndim == 0 else out
