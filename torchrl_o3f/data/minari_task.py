"""The task of any Minari dataset on disk: its env from the dataset's own record, its scores.

A run given ``dataset=<minari id>`` and no ``task`` trains on that dataset and acts in the env
the dataset records (its ``eval_env_spec``, else its ``env_spec``). :func:`dataset_task`
registers that task under a name made of the id (``mujoco/hopper/medium-v0`` ->
``mujoco-hopper-medium-v0``), so everything that takes a task name (the recipes, sweeps,
evaluation, the analysis) takes it too.
"""

from __future__ import annotations

import json
import os
from typing import Any

from torchrl_o3f.data.loader import (
    DatasetFormatError,
    DatasetNotFoundError,
    dataset_path,
    read_metadata,
    resolve_dataset,
)
from torchrl_o3f.envs import Task, get_task, register_task
from torchrl_o3f.envs.tasks import UnknownTaskError

__all__ = ["dataset_task", "dataset_task_name"]

NAVIGATION_SIGMA = 0.05
"""The paper's candidate sigma on navigation, antmaze and kitchen tasks (0.2 elsewhere)."""
NAVIGATION_FAMILIES = ("antmaze", "pointmaze", "kitchen")


def dataset_task_name(dataset_id: str) -> str:
    """The task name of a dataset id: its parts joined by ``-``.

    Example:
        >>> dataset_task_name("D4RL/antmaze/large-diverse-v1")
        'D4RL-antmaze-large-diverse-v1'
    """
    return dataset_id.strip("/").replace("/", "-")


def _spec(meta: dict[str, Any], dataset_id: str) -> dict[str, Any]:
    raw = meta.get("eval_env_spec") or meta.get("env_spec")
    if not raw:
        raise DatasetFormatError(
            f"dataset {dataset_id!r} records no env (no eval_env_spec nor env_spec in its "
            "metadata.json); name the env to act in with task=<a registered task>"
        )
    try:
        spec = json.loads(raw) if isinstance(raw, str) else dict(raw)
        spec["id"]
    except (TypeError, ValueError, KeyError) as err:
        raise DatasetFormatError(
            f"dataset {dataset_id!r} has an unreadable env spec in its metadata.json ({err}); "
            "name the env to act in with task=<a registered task>"
        ) from None
    return spec


def dataset_task(dataset_id: str, *, root: str | os.PathLike | None = None) -> Task:
    """The task of a Minari dataset on disk, registered (idempotent) and returned.

    - env: the dataset's ``eval_env_spec`` (else ``env_spec``): its id, keyword arguments and
      episode cap;
    - scores: the dataset's ``ref_min_score`` / ``ref_max_score`` when it has both (0-100);
      raw returns otherwise (score kind ``"raw"``, labelled so in tables and figures);
      antmaze and kitchen datasets keep their success / tasks-completed scores;
    - family and sigma: those of the registered task the id mirrors (``mujoco/hopper/medium-v0``
      is ``hopper-medium``'s hub id), else the family is the id's middle part and sigma the
      paper's (0.05 for antmaze, pointmaze and kitchen, 0.2 otherwise).

    Args:
        dataset_id: a Minari id (``namespace/name-vN`` or ``namespace/family/name-vN``).
        root: the Minari datasets folder (default: ``MINARI_DATASETS_PATH`` or Minari's).

    Raises:
        DatasetNotFoundError: the dataset is not on disk (the message says how to get it).
        DatasetFormatError: it records no readable env spec.

    Example:
        >>> import tempfile
        >>> try:
        ...     dataset_task("mujoco/hopper/medium-v0", root=tempfile.mkdtemp())
        ... except Exception as err:
        ...     print(type(err).__name__)
        DatasetNotFoundError
    """
    where = dataset_path(dataset_id, root)
    if not (where / "data").is_dir():
        raise DatasetNotFoundError(
            f"dataset {dataset_id!r} is not on disk (looked in {where}): download it where a "
            f"network exists (`minari download {dataset_id}`) and copy the datasets folder here, "
            "or set dataset_root= (MINARI_DATASETS_PATH) to the folder that holds it"
        )
    meta = read_metadata(dataset_id, root=root)
    spec = _spec(meta, dataset_id)
    _, mirrored = resolve_dataset(dataset_id)
    name = dataset_task_name(dataset_id)
    if mirrored is not None and mirrored.name == name:
        return mirrored  # registered before, from this very dataset
    parts = dataset_id.split("/")
    family = mirrored.family if mirrored else (parts[1] if len(parts) > 2 else parts[0])
    quality = parts[-1].rsplit("-v", 1)[0]
    lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
    has_refs = lo is not None and hi is not None and hi != lo
    if mirrored is not None and mirrored.score in ("success", "tasks"):
        score = mirrored.score
    else:
        score = "return" if has_refs else "raw"
    if mirrored is not None:
        sigma = mirrored.sigma
    else:
        sigma = NAVIGATION_SIGMA if family in NAVIGATION_FAMILIES else 0.2
    obs_space = meta.get("observation_space")
    dict_obs = isinstance(obs_space, str) and json.loads(obs_space).get("type") == "Dict"
    task = Task(
        name=name,
        family=family,
        quality=quality,
        env_id=spec["id"],
        env_kwargs=dict(spec.get("kwargs") or {}),
        max_episode_steps=int(
            spec.get("max_episode_steps") or (mirrored.max_episode_steps if mirrored else 1000)
        ),
        dataset_id=dataset_id,
        hub_dataset_id=dataset_id,
        buildable=False,
        sigma=sigma,
        score=score,
        ref_min_score=float(lo) if has_refs and score == "return" else None,
        ref_max_score=float(hi) if has_refs and score == "return" else None,
        dict_observation=dict_obs or bool(mirrored and mirrored.dict_observation),
    )
    try:
        if get_task(name) == task:
            return get_task(name)
    except UnknownTaskError:
        pass
    return register_task(task, overwrite=True)

