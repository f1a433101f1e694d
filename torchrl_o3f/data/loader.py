"""Loading Minari datasets into TorchRL's TED layout.

:func:`load_offline_dataset` reads any Minari dataset on disk (built by this package or
downloaded from the hub) into one :class:`~tensordict.TensorDict` of transitions:

==========================  =================  ==========================================
key                         shape / dtype      content
==========================  =================  ==========================================
``observation``             ``[T, d]`` float32  observation (dict observations flattened)
``action``                  ``[T, a]`` float32  action
``done``/``terminated``/    ``[T, 1]`` bool     all ``False`` (a stored step is never done)
``truncated``
``next/observation``        ``[T, d]`` float32  the observation after the step
``next/reward``             ``[T, 1]`` float32  raw reward (no shift or scale)
``next/done``               ``[T, 1]`` bool     ``terminated | truncated``
``next/terminated``         ``[T, 1]`` bool     the episode ended in a terminal state
``next/truncated``          ``[T, 1]`` bool     the episode was cut (time limit, dataset end)
``episode``                 ``[T]`` int64       the Minari episode index of the step
==========================  =================  ==========================================

The first load reads Minari's files (episode by episode, straight into the preallocated
tensors, so the peak memory stays near the result's size), checks them, and keeps the TED
tensors as memory-mapped files in ``<dataset folder>/o3f_cache``; later loads copy from there
(several times faster), until the dataset's files change. The cache records the sha256 of
every file it holds, verified at each load: a damaged cache is reported (a warning naming the
file) and replaced by a fresh read of the dataset. Datasets built by this package record the
sha256 of their data file, verified when it is read. On every path, the values are checked as
they will be used (float32, after the cast): NaN, infinity or a magnitude above
:data:`MAX_ABS_VALUE` is an error naming the field and the episode.

torchrl 0.14.1's ``MinariExperienceReplay`` is not used: for a local dataset it returns
all-zero tensors (it fills a tensordict, then ``memmap_like`` allocates an empty copy of it;
``tests/test_data_loader.py`` keeps a check of that behavior).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict

from torchrl_o3f._atomic import (
    file_sha256,
)
from torchrl_o3f.data.cache import cache_stamp, read_cache, write_cache
from torchrl_o3f.envs import Task, flatten_observation, list_tasks, make_gym_env
from torchrl_o3f.errors import O3FError

__all__ = [
    "DatasetNotFoundError",
    "DatasetFormatError",
    "load_offline_dataset",
    "resolve_dataset",
    "dataset_path",
    "minari_root",
    "read_metadata",
    "build_command",
    "MAX_ABS_VALUE",
]

MAX_ABS_VALUE = 1e15
"""Largest magnitude accepted in observations, actions and rewards.

Nothing physical comes near it; past it a value is a unit or conversion error, and it breaks
training: a reward of 1e17 makes Q-values of 1e19 at a discount of 0.99, whose squared errors
overflow float32 (3.4e38)."""


class DatasetNotFoundError(O3FError, FileNotFoundError):
    """No dataset with this id on disk (and no download asked for, or possible)."""


class DatasetFormatError(O3FError, ValueError):
    """A dataset on disk is corrupt, truncated, or disagrees with its task's environment."""


@contextlib.contextmanager
def minari_root(root: str | os.PathLike | None) -> Iterator[Path]:
    """Point Minari at ``root`` for the duration of the block (``None``: leave it as is).

    Minari reads its datasets folder from the ``MINARI_DATASETS_PATH`` environment variable
    at every call; this sets it temporarily (not thread-safe) and yields the folder in use.

    Example:
        >>> import tempfile, minari
        >>> with tempfile.TemporaryDirectory() as d, minari_root(d) as path:
        ...     minari.list_local_datasets()
        {}
    """
    old = os.environ.get("MINARI_DATASETS_PATH")
    if root is not None:
        # absolute: Minari and the builder join it to other paths (a relative one doubled)
        os.environ["MINARI_DATASETS_PATH"] = os.path.abspath(os.fspath(root))
    try:
        from minari.storage.datasets_root_dir import get_dataset_path

        yield Path(get_dataset_path())
    finally:
        if root is not None:
            if old is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = old


def dataset_path(dataset_id: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of a Minari dataset id under ``root`` (default: Minari's root).

    Example:
        >>> dataset_path("o3f/hopper/medium-v0", root="datasets").as_posix()
        'datasets/o3f/hopper/medium-v0'
    """
    if root is not None:
        return Path(root) / dataset_id
    with minari_root(None) as base:
        return base / dataset_id


# A derived id: the canonical one with a non-default size and/or seed ("medium-n100000-seed1").
_DERIVED = re.compile(r"^(?P<head>.+?)(?:-n(?P<size>\d+))?(?:-seed(?P<seed>\d+))?(?P<ver>-v\d+)$")


def resolve_dataset(name: str | Task) -> tuple[str, Task | None]:
    """Resolve a task name, a Task or a Minari dataset id to ``(dataset_id, task or None)``.

    A task name gives the task's ``dataset_id``. A dataset id is returned as is, with the task
    whose ``dataset_id``/``hub_dataset_id`` it is (or derives from, for the size/seed variants
    that :func:`~torchrl_o3f.data.ensure_dataset` builds), so its env can check the shapes.

    Raises:
        DatasetNotFoundError: neither a task nor something shaped like a Minari id; the
            message lists the tasks and the build command.

    Example:
        >>> resolve_dataset("halfcheetah-medium")[0]
        'o3f/halfcheetah/medium-v0'
        >>> resolve_dataset("o3f/hopper/random-n5000-v0")[1].name
        'hopper-random'
    """
    if isinstance(name, Task):
        return name.dataset_id, name
    names = {t.name: t for t in list_tasks()}
    if name in names:
        return names[name].dataset_id, names[name]
    if not isinstance(name, str) or "/" not in name or not re.search(r"-v\d+$", name):
        raise DatasetNotFoundError(
            f"{name!r} is neither a registered task nor a Minari dataset id "
            "('namespace/name-vN'). Known tasks: "
            f"{', '.join(sorted(names))}. Build a local dataset with "
            "`python -m torchrl_o3f.data build <task> [--size N] [--seed S]`."
        )
    by_id: dict[str, Task] = {}
    for t in names.values():
        by_id.setdefault(t.dataset_id, t)
        if t.hub_dataset_id:
            by_id.setdefault(t.hub_dataset_id, t)
    if name in by_id:
        return name, by_id[name]
    m = _DERIVED.match(name)
    if m and (m["size"] or m["seed"]):
        return name, by_id.get(m["head"] + m["ver"])
    return name, None


def read_metadata(name: str | Task, *, root: str | os.PathLike | None = None) -> dict:
    """The raw ``metadata.json`` of a local dataset (reference scores, build details, ...).

    Raises:
        DatasetNotFoundError: no such dataset under the root.
        DatasetFormatError: the metadata file is unreadable.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     try:
        ...         read_metadata("hopper-random", root=d)
        ...     except DatasetNotFoundError as e:
        ...         print("not built")
        not built
    """
    dataset_id, task = resolve_dataset(name)
    data = dataset_path(dataset_id, root) / "data"
    if not data.is_dir():
        raise DatasetNotFoundError(_missing_message(dataset_id, task, data.parent, root))
    try:
        return json.loads((data / "metadata.json").read_text())
    except (OSError, ValueError) as err:
        raise DatasetFormatError(
            f"dataset {dataset_id!r} at {data.parent} has an unreadable metadata.json ({err}); "
            f"{_fix_hint(dataset_id, task, root)}"
        ) from err


DEFAULT_SIZE = 1_000_000
"""Transitions of a dataset built without ``size`` (D4RL's size)."""


def build_command(
    task: Task, dataset_id: str | None = None, root=None, *, overwrite: bool = False
) -> str:
    """The exact command that builds ``dataset_id`` (default: the task's own) again.

    The size and seed come from the id (:func:`~torchrl_o3f.data.dataset_id_for`), so
    following it rebuilds the very same dataset id, under ``root`` when one is given.

    Example:
        >>> from torchrl_o3f.envs import get_task
        >>> build_command(get_task("hopper-random"), "o3f/hopper/random-n300-seed3-v0",
        ...               overwrite=True)
        'python -m torchrl_o3f.data build hopper-random --size 300 --seed 3 --overwrite'
    """
    m = _DERIVED.match(dataset_id or task.dataset_id)
    size = int(m["size"]) if m and m["size"] else DEFAULT_SIZE
    seed = int(m["seed"]) if m and m["seed"] else 0
    cmd = f"python -m torchrl_o3f.data build {task.name} --size {size} --seed {seed}"
    if root is not None:
        cmd += f" --root {os.fspath(root)}"
    return cmd + (" --overwrite" if overwrite else "")


def _fix_hint(dataset_id: str, task: Task | None, root=None) -> str:
    if task is not None and task.buildable:
        return f"rebuild it with `{build_command(task, dataset_id, root, overwrite=True)}`"
    return "delete the folder and download it again (load_offline_dataset(..., download=True))"


def _missing_message(dataset_id: str, task: Task | None, where: Path, root=None) -> str:
    msg = f"dataset {dataset_id!r} is not on disk (looked in {where}). "
    if task is not None and task.buildable:
        msg += (
            f"Build it with `{build_command(task, dataset_id, root)}` (or call "
            f"torchrl_o3f.data.ensure_dataset({task.name!r}))"
        )
        if task.hub_dataset_id:
            msg += f", or download the hub's {task.hub_dataset_id!r} with download=True"
        return msg + "."
    hub = (task.hub_dataset_id if task is not None else None) or dataset_id
    if hub != dataset_id:
        msg += f"Nor is the hub's {hub!r} (looked in {dataset_path(hub, root)}). "
    how = "load_offline_dataset(..., download=True) or " if hub == dataset_id else ""
    then = f"task={task.name}" if task is not None else f"dataset={hub}"
    return msg + (
        f"It cannot be built locally: download {hub!r} where a network exists ({how}`minari "
        f"download {hub}`, into the datasets folder), or copy a Minari dataset folder to "
        f"{where}; then `python recipes/o3f_iql.py {then}` trains on it. Set "
        "MINARI_DATASETS_PATH (or pass root=, dataset_root=) to use another datasets folder."
    )


def _flat(x) -> np.ndarray:
    if isinstance(x, dict):
        return flatten_observation(x)
    if isinstance(x, tuple):
        raise DatasetFormatError("tuple observation/action spaces are not supported")
    x = np.asarray(x)
    return x.reshape(len(x), -1) if x.ndim != 2 else x


def load_offline_dataset(
    name: str | Task,
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
    memmap_prefix: str | os.PathLike | None = None,
    check_env: bool = True,
    cache: bool = True,
) -> TensorDict:
    """Load a Minari dataset as a TensorDict of transitions in TorchRL's TED layout.

    See the module documentation for the keys. Episodes are laid out one after the other, in
    Minari's episode order; ``episode`` holds each step's episode index, so boundaries are
    kept (``next/done`` is ``True`` on the last step of every episode, ``next/truncated`` when
    it was cut rather than terminated). Rewards are raw: the losses apply shifts and scales.

    The result plugs into a replay buffer directly, e.g.
    ``ReplayBuffer(storage=LazyTensorStorage(len(td)))`` then ``rb.extend(td)``.

    Args:
        name: a task name (its ``dataset_id`` is loaded), a :class:`~torchrl_o3f.envs.Task`,
            or a Minari dataset id (``"D4RL/antmaze/umaze-v1"``, ``"o3f/hopper/medium-v0"``).
        root: the Minari datasets folder (default: ``MINARI_DATASETS_PATH`` or Minari's
            default ``~/.minari/datasets``).
        download: fetch the dataset from the Minari hub (through ``minari.download_dataset``)
            if it is not on disk. Needs a network.
        memmap_prefix: write the tensors as memory-mapped files in this folder (so the data
            lives in the page cache and can be shared between processes) instead of RAM;
            ``TensorDict.load_memmap(memmap_prefix)`` reopens them.
        check_env: compare the observation and action sizes with the task's environment when
            the dataset belongs to a registered task.
        cache: keep the checked TED tensors as memory-mapped files in ``<dataset>/o3f_cache``
            after the first load, and load later calls from there (a copy into RAM, or into
            ``memmap_prefix``: the cache itself is never handed out, so in-place changes to
            the result cannot alter it). The cache is rebuilt when the dataset's files change
            (size or modification time); a read-only dataset folder just goes without.

    Returns:
        A TensorDict with batch size ``[T]`` (``T`` = total steps of the dataset).

    Raises:
        DatasetNotFoundError: unknown name, or the dataset is not on disk (the message says
            how to build or where to put it), or the download failed.
        DatasetFormatError: a corrupt or truncated file, inconsistent episode lengths,
            NaN/inf values, or observation/action sizes that disagree with the task's env.

    Example:
        >>> import tempfile
        >>> from torchrl_o3f.data import build_dataset
        >>> with tempfile.TemporaryDirectory() as root:
        ...     dataset_id = build_dataset("hopper-random", size=50, root=root, progress=False)
        ...     td = load_offline_dataset(dataset_id, root=root)
        >>> td.batch_size, td["observation"].shape, td["next", "reward"].shape
        (torch.Size([50]), torch.Size([50, 11]), torch.Size([50, 1]))
    """
    import minari

    dataset_id, task = resolve_dataset(name)
    folder = dataset_path(dataset_id, root)
    if not (folder / "data").is_dir():
        if not download:
            raise DatasetNotFoundError(_missing_message(dataset_id, task, folder, root))
        with minari_root(root):
            try:
                minari.download_dataset(dataset_id)
            except Exception as err:  # network, auth, unknown remote id: all end here
                raise DatasetNotFoundError(
                    f"could not download {dataset_id!r} from the Minari hub ({err}). "
                    + _missing_message(dataset_id, task, folder, root)
                ) from err
    stamp = cache_stamp(folder)
    td = read_cache(folder, stamp, dataset_id, memmap_prefix) if cache else None
    if td is not None:
        _check_cached_values(td, dataset_id, task, root)
        if check_env and task is not None:
            _check_shapes(td, dataset_id, task)
        return td
    _verify_data_files(folder, dataset_id, task, root)
    try:
        with minari_root(root):
            dataset = minari.load_dataset(dataset_id)
        storage = dataset.storage
        meta = storage.metadata
        num_episodes = int(meta["total_episodes"])
        total = int(meta["total_steps"])
        episodes = storage.get_episodes(range(num_episodes))
        td = None
        offset = 0
        for index, ep in enumerate(episodes):
            obs = _flat(ep["observations"])
            act = _flat(ep["actions"])
            rew = np.asarray(ep["rewards"]).reshape(-1)
            term = np.asarray(ep["terminations"]).reshape(-1).astype(bool)
            trunc = np.asarray(ep["truncations"]).reshape(-1).astype(bool)
            steps = len(act)
            if not (len(obs) == steps + 1 and len(rew) == len(term) == len(trunc) == steps):
                raise DatasetFormatError(
                    f"episode {index} of {dataset_id!r} is inconsistent: {len(obs)} "
                    f"observations, {steps} actions, {len(rew)} rewards, {len(term)} "
                    f"terminations, {len(trunc)} truncations (expected T+1 observations and "
                    f"T of the rest); {_fix_hint(dataset_id, task, root)}"
                )
            if offset + steps > total:
                raise DatasetFormatError(
                    f"{dataset_id!r} holds more steps than its metadata's total_steps={total}; "
                    f"{_fix_hint(dataset_id, task, root)}"
                )
            if td is None:
                td = _allocate(total, obs.shape[-1], act.shape[-1], memmap_prefix)
                # numpy views of the result: writes cast (e.g. float64 -> float32) in place
                out = {k: td[k].numpy() for k in td.keys(True, True)}
            if obs.shape[-1] != out["observation"].shape[-1] or (
                act.shape[-1] != out["action"].shape[-1]
            ):
                raise DatasetFormatError(
                    f"episode {index} of {dataset_id!r} has observations of size "
                    f"{obs.shape[-1]} and actions of size {act.shape[-1]}, unlike episode 0; "
                    f"{_fix_hint(dataset_id, task, root)}"
                )
            sl = slice(offset, offset + steps)
            out["observation"][sl] = obs[:-1]
            out["next", "observation"][sl] = obs[1:]
            out["action"][sl] = act
            out["next", "reward"][sl, 0] = rew
            out["next", "terminated"][sl, 0] = term
            out["next", "truncated"][sl, 0] = trunc
            out["episode"][sl] = index
            # checked as they will be used: float32, after the cast (1e40 -> inf)
            for field, value in (
                ("observations", out["observation"][sl]),
                ("observations", out["next", "observation"][sl][-1:]),
                ("actions", out["action"][sl]),
                ("rewards", out["next", "reward"][sl]),
            ):
                _check_values(value, field, f"episode {index}", dataset_id, task, root)
            offset += steps
    except (DatasetFormatError, DatasetNotFoundError):
        raise
    except Exception as err:  # h5py/json/minari errors of a damaged folder
        raise DatasetFormatError(
            f"could not read dataset {dataset_id!r} at {folder}: the files are corrupt or "
            f"truncated ({type(err).__name__}: {err}); {_fix_hint(dataset_id, task, root)}"
        ) from err
    if td is None or offset != total:
        raise DatasetFormatError(
            f"{dataset_id!r} holds {offset} steps but its metadata says total_steps={total} "
            f"(a truncated file or an interrupted write); {_fix_hint(dataset_id, task, root)}"
        )
    td["next", "done"].copy_(td["next", "terminated"] | td["next", "truncated"])
    if check_env and task is not None:
        _check_shapes(td, dataset_id, task)
    if cache:
        write_cache(folder, stamp, td)
    return td


def _check_values(value, field: str, where: str, dataset_id: str, task, root) -> None:
    """Refuse NaN, infinity and magnitudes beyond MAX_ABS_VALUE (numpy or torch arrays)."""
    value = value.numpy() if isinstance(value, torch.Tensor) else value
    if value.size == 0 or bool((np.abs(value) <= MAX_ABS_VALUE).all()):
        return
    if np.isnan(value).any():
        what = f"NaN/inf {field} in {where} (NaN)"
    elif np.isinf(value).any():
        what = (
            f"NaN/inf {field} in {where} (inf in float32: float64 values beyond 3.4e38 become "
            "inf when cast)"
        )
    else:
        peak = float(np.abs(value).max())
        what = (
            f"overflowing {field} in {where} (|value| up to {peak:.3g}, beyond {MAX_ABS_VALUE:g}: "
            "float32 arithmetic of the losses overflows)"
        )
    raise DatasetFormatError(
        f"{dataset_id!r} has {what}: clean or rebuild the dataset (a diverged policy, a unit "
        f"error or a bad conversion writes these); {_fix_hint(dataset_id, task, root)}"
    )


def _check_cached_values(td: TensorDict, dataset_id: str, task, root) -> None:
    for field, key in (
        ("observations", "observation"),
        ("observations", ("next", "observation")),
        ("actions", "action"),
        ("rewards", ("next", "reward")),
    ):
        _check_values(td[key], field, "the load cache", dataset_id, task, root)


def _verify_data_files(folder: Path, dataset_id: str, task, root) -> None:
    """Check the data files against the sha256 the package's builder recorded, if any."""
    try:
        record = json.loads((folder / "data" / "metadata.json").read_text()).get("o3f_build")
    except (OSError, ValueError):
        return  # minari reports an unreadable metadata file itself
    for name, digest in ((record or {}).get("sha256") or {}).items():
        path = folder / "data" / name
        got = file_sha256(path) if path.exists() else "missing"
        if got != digest:
            raise DatasetFormatError(
                f"{path} is {'missing' if got == 'missing' else 'corrupt or truncated'}: it "
                f"does not match the sha256 recorded when {dataset_id!r} was built; "
                f"{_fix_hint(dataset_id, task, root)}"
            )


def _allocate(total: int, obs_dim: int, act_dim: int, prefix) -> TensorDict:
    f32, b = torch.float32, torch.bool
    new = torch.zeros if prefix is None else torch.empty  # empty: pages never touched
    td = TensorDict(
        {
            "observation": new(total, obs_dim, dtype=f32),
            "action": new(total, act_dim, dtype=f32),
            "done": new(total, 1, dtype=b),
            "terminated": new(total, 1, dtype=b),
            "truncated": new(total, 1, dtype=b),
            "episode": new(total, dtype=torch.int64),
            "next": {
                "observation": new(total, obs_dim, dtype=f32),
                "reward": new(total, 1, dtype=f32),
                "done": new(total, 1, dtype=b),
                "terminated": new(total, 1, dtype=b),
                "truncated": new(total, 1, dtype=b),
            },
        },
        [total],
    )
    if prefix is not None:
        # zero-filled files in tensordict's layout (TensorDict.load_memmap(prefix) reopens them)
        td = td.memmap_like(prefix)
    return td


def _check_shapes(td: TensorDict, dataset_id: str, task: Task) -> None:
    env = make_gym_env(task)
    obs_dim, act_dim = env.observation_space.shape[-1], env.action_space.shape[-1]
    env.close()
    got_obs, got_act = td["observation"].shape[-1], td["action"].shape[-1]
    if (got_obs, got_act) != (obs_dim, act_dim):
        raise DatasetFormatError(
            f"dataset {dataset_id!r} has observations of size {got_obs} and actions of size "
            f"{got_act}, but task {task.name!r} ({task.env_id}) has {obs_dim} and {act_dim}: "
            "the dataset was made for another env (or env version). Load it without a task "
            "(pass check_env=False) or build the task's own dataset with "
            f"`python -m torchrl_o3f.data build {task.name}`."
        )
