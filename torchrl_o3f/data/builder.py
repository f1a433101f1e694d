"""Building D4RL-style Minari datasets locally, from shipped behavior policies.

``build_dataset(task)`` rolls out the task's data-collecting policy on the task's gymnasium env
and writes a Minari dataset (``minari.create_dataset_from_buffers``; no jax needed):

- locomotion ``random``: uniform random actions;
- locomotion ``medium`` (and ``expert`` where a checkpoint exists): the shipped SAC actor of
  that quality, sampled stochastically (its TanhNormal with seeded noise);
- ``pointmaze-*``: the scripted :class:`~torchrl_o3f.data.pointmaze.WaypointController`.

Episodes are capped at the task's ``max_episode_steps``; the last one is cut at ``size`` steps
and marked truncated. The dataset carries ``ref_min_score`` (a uniform random policy) and
``ref_max_score`` (the best shipped policy of the family, or the noiseless controller),
measured on the same env and mujoco version, an eval env spec, and an ``o3f_build`` record
(task, size, seed, policy, versions) that :func:`ensure_dataset` checks before reusing it.

A build writes into a temporary folder under the root and renames the finished dataset into
place, so an interrupted build leaves nothing that loads as a dataset; the next build or
:func:`ensure_dataset` under that root removes the temporary folders of killed builds. The
``o3f_build`` record holds the sha256 of the data files, which the loader verifies.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from torchrl_o3f._atomic import (
    disk_full_error,
    file_sha256,
    remove_stale_temporaries,
    temporary_tag,
)
from torchrl_o3f.data.behavior import load_behavior_policy
from torchrl_o3f.data.loader import (
    DEFAULT_SIZE,
    DatasetNotFoundError,
    _missing_message,
    build_command,
    dataset_path,
    minari_root,
    read_metadata,
)
from torchrl_o3f.data.pointmaze import WaypointController
from torchrl_o3f.envs import Task, get_task, list_tasks, make_gym_env
from torchrl_o3f.envs.make import FlattenDictObservation
from torchrl_o3f.errors import ConfigError, O3FError

__all__ = [
    "DEFAULT_SIZE",
    "DatasetMismatchError",
    "build_dataset",
    "dataset_id_for",
    "ensure_dataset",
    "reference_returns",
    "rollout",
]

BUILD_FORMAT = 1
"""Version of the ``o3f_build`` record; bumped when the way datasets are made changes."""

REFERENCE_EPISODES = 10
"""Episodes over which the random and best-policy reference returns are measured."""


class DatasetMismatchError(O3FError, ValueError):
    """A dataset on disk was built with other settings (size, seed, task) than requested."""


def dataset_id_for(task: str | Task, size: int | None = None, seed: int = 0) -> str:
    """The Minari id a build of ``task`` with this size and seed is stored under.

    The default build (``size=None`` or :data:`DEFAULT_SIZE`, ``seed=0``) has the task's own
    ``dataset_id``; any other size or seed gets its own id (``-n<size>``, ``-seed<seed>``
    before the version), so builds of different sizes live side by side and one is never
    silently used for another.

    Example:
        >>> dataset_id_for("halfcheetah-medium")
        'o3f/halfcheetah/medium-v0'
        >>> dataset_id_for("halfcheetah-medium", size=100_000, seed=1)
        'o3f/halfcheetah/medium-n100000-seed1-v0'
    """
    task = get_task(task)
    size = DEFAULT_SIZE if size is None else size
    base, sep, version = task.dataset_id.rpartition("-v")
    if not sep:
        raise ValueError(f"task {task.name!r} has a dataset id without a version: {base!r}")
    suffix = (f"-n{size}" if size != DEFAULT_SIZE else "") + (f"-seed{seed}" if seed else "")
    return f"{base}{suffix}-v{version}"


def _check_buildable(task: Task) -> None:
    if task.buildable:
        return
    buildable = ", ".join(t.name for t in list_tasks() if t.buildable)
    if task.hub_dataset_id:
        fix = (
            f"download its hub dataset with `minari download {task.hub_dataset_id}` where a "
            "network exists (the trainer then reads it from the datasets folder)"
        )
    else:
        fix = "it has no hub dataset either; choose another task"
    raise ConfigError(
        f"task {task.name!r} cannot be built locally (the package ships no policy that makes "
        f"its data): {fix}. Buildable tasks: {buildable}"
    )


def _random_policy(space, rng: np.random.Generator) -> Callable:
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    return lambda obs: rng.uniform(low, high).astype(np.float32)


def _policy_for(task: Task, env, rng: np.random.Generator, gen: torch.Generator, policy):
    """(act(raw_obs) -> action, description) of the data-collecting policy."""
    if policy is not None:
        return policy, getattr(policy, "__name__", type(policy).__name__)
    if task.family == "pointmaze":
        ctrl = WaypointController.from_env(env)
        return (lambda obs: ctrl.act(obs, rng)), f"waypoint controller (noise {ctrl.noise})"
    if task.quality == "random":
        return _random_policy(env.action_space, rng), "uniform random actions"
    if task.quality in ("medium", "expert"):
        actor = load_behavior_policy(f"{task.family}-{task.quality}")
        return (
            lambda obs: actor.act(obs, generator=gen),
            f"{task.family}-{task.quality} SAC actor, stochastic",
        )
    raise ValueError(
        f"building {task.name!r} is not supported: quality {task.quality!r} needs the replay "
        "buffer of a behavior-policy training run (medium-replay), which this package does not "
        "ship. Supported qualities: random, medium, expert (where a checkpoint exists)."
    )


def _make_env(task: Task):
    """The env to roll out: flat float32 observations, or the raw dict env for goal tasks."""
    env = make_gym_env(task)
    if task.dict_observation:
        while not isinstance(env, FlattenDictObservation):
            env = env.env
        env = env.env
    return env


def _stack(observations: list):
    if isinstance(observations[0], dict):
        return {k: _stack([o[k] for o in observations]) for k in observations[0]}
    return np.stack(observations)


def rollout(
    env,
    act: Callable,
    *,
    num_steps: int | None = None,
    num_episodes: int | None = None,
    rng: np.random.Generator,
    progress: bool = False,
    desc: str = "",
) -> tuple[list, np.ndarray]:
    """Roll ``act`` out on ``env`` into Minari episode buffers.

    Stops after ``num_steps`` transitions (the last episode cut and marked truncated) or
    ``num_episodes`` whole episodes. Every reset takes a seed drawn from ``rng``.

    Returns:
        ``(buffers, returns)``: a list of ``minari.data_collector.EpisodeBuffer`` and the
        undiscounted return of each episode (cut ones included).
    """
    from minari.data_collector import EpisodeBuffer

    if (num_steps is None) == (num_episodes is None):
        raise ValueError("pass exactly one of num_steps and num_episodes")
    bar = None
    if progress and num_steps is not None:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, desc=desc, unit="step", mininterval=1.0)
    buffers, returns, steps = [], [], 0
    while True:
        if num_episodes is not None and len(buffers) >= num_episodes:
            break
        if num_steps is not None and steps >= num_steps:
            break
        ep_seed = int(rng.integers(2**31 - 1))
        obs, _ = env.reset(seed=ep_seed)
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        while True:
            action = act(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(float(reward))
            steps += 1
            cut = num_steps is not None and steps >= num_steps
            terms.append(bool(terminated))
            truncs.append(bool(truncated) or (cut and not terminated))
            if terminated or truncated or cut:
                break
        if bar is not None:
            bar.update(len(actions))
        buffers.append(
            EpisodeBuffer(
                id=len(buffers),
                seed=ep_seed,
                observations=_stack(observations),
                actions=np.stack(actions).astype(np.float32),
                rewards=np.asarray(rewards, dtype=np.float64),
                terminations=np.asarray(terms),
                truncations=np.asarray(truncs),
            )
        )
        returns.append(sum(rewards))
    if bar is not None:
        bar.close()
    return buffers, np.asarray(returns, dtype=np.float64)


def reference_returns(
    task: str | Task, *, num_episodes: int = REFERENCE_EPISODES, seed: int = 0
) -> tuple[float, float | None, str]:
    """Measure the dataset's reference returns on the task's env (this mujoco version).

    ``ref_min`` is the mean return of uniform random actions. ``ref_max`` is the best
    available policy: on locomotion the highest deterministic mean return recorded for the
    family's shipped checkpoints (``expert`` when shipped, else ``medium``; ``None`` if none
    is shipped), on pointmaze the noiseless waypoint controller's mean return.

    Returns:
        ``(ref_min, ref_max, description of ref_max)``.

    Example:
        >>> lo, hi, what = reference_returns("pointmaze-umaze", num_episodes=1)
        >>> hi >= lo
        True
    """
    task = get_task(task)
    env = _make_env(task)
    rng = np.random.default_rng(seed + 12345)
    _, rets = rollout(
        env, _random_policy(env.action_space, rng), num_episodes=num_episodes, rng=rng
    )
    ref_min = float(rets.mean())
    ref_max, what = None, "none shipped"
    if task.family == "pointmaze":
        ctrl = WaypointController.from_env(env, noise=0.0)
        _, rets = rollout(env, lambda o: ctrl.act(o), num_episodes=num_episodes, rng=rng)
        ref_max, what = float(rets.mean()), "noiseless waypoint controller"
    else:
        for quality in ("expert", "medium"):
            try:
                info = load_behavior_policy(f"{task.family}-{quality}").info
            except FileNotFoundError:
                continue
            ref_max = float(info.returns["deterministic"]["mean"])
            what = f"{info.name} deterministic ({info.returns['deterministic']['episodes']} ep.)"
            break
    env.close()
    return ref_min, ref_max, what


def _eval_spec(task: Task):
    import gymnasium as gym

    spec = gym.spec(task.env_id)
    return dataclasses.replace(
        spec, kwargs={**spec.kwargs, **task.env_kwargs}, max_episode_steps=task.max_episode_steps
    )


def build_dataset(
    task: str | Task,
    *,
    size: int | None = None,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
    policy: Callable | None = None,
    num_reference_episodes: int = REFERENCE_EPISODES,
) -> str:
    """Build a task's dataset locally and write it as a Minari dataset.

    Deterministic for a given task, size, seed, policy checkpoint and mujoco version.

    Args:
        task: a buildable task name or :class:`~torchrl_o3f.envs.Task`.
        size: number of transitions (default :data:`DEFAULT_SIZE`).
        seed: seeds the env resets, the action noise and the random actions.
        root: the Minari datasets folder (default: ``MINARI_DATASETS_PATH`` or Minari's).
        progress: show a progress bar.
        overwrite: replace an existing dataset of the same id (otherwise raise).
        policy: a custom data-collecting policy ``observation -> action`` (raw env
            observation: a dict for goal tasks) instead of the task's own.
        num_reference_episodes: episodes of the reference-return measurements.

    Returns:
        The dataset id (see :func:`dataset_id_for`).

    Raises:
        ValueError: the task cannot be built, or ``size < 1``.
        FileExistsError: the dataset exists and ``overwrite`` is false.
        FileNotFoundError: the behavior policy the quality needs is not shipped.

    Example:
        >>> import tempfile, minari
        >>> from torchrl_o3f.data import minari_root
        >>> with tempfile.TemporaryDirectory() as root:
        ...     dataset_id = build_dataset("pointmaze-umaze", size=100, root=root,
        ...                                progress=False, num_reference_episodes=1)
        ...     with minari_root(root):
        ...         ds = minari.load_dataset(dataset_id)
        ...     print(dataset_id, ds.total_steps)
        o3f/pointmaze/umaze-n100-v0 100
    """
    import gymnasium as gym
    import minari
    import mujoco
    from minari.namespace import create_namespace, list_local_namespaces

    task = get_task(task)
    _check_buildable(task)
    size = DEFAULT_SIZE if size is None else int(size)
    if size < 1:
        raise ConfigError(
            f"size={size}: a dataset needs a positive number of transitions; give a size >= 1 "
            f"(--size N on the command line; default {DEFAULT_SIZE})"
        )
    dataset_id = dataset_id_for(task, size, seed)
    final = dataset_path(dataset_id, root)
    if final.exists() and not overwrite:
        raise FileExistsError(
            f"dataset {dataset_id!r} already exists at {final}; pass overwrite=True to rebuild "
            f"it (`{build_command(task, dataset_id, root, overwrite=True)}`)"
        )
    start = time.time()
    env = _make_env(task)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    env.action_space.seed(seed)
    act, policy_desc = _policy_for(task, env, rng, gen, policy)
    with torch.no_grad():
        buffers, returns = rollout(
            env, act, num_steps=size, rng=rng, progress=progress, desc=dataset_id
        )
    observation_space, action_space = env.observation_space, env.action_space
    env.close()
    ref_min, ref_max, ref_max_desc = reference_returns(
        task, num_episodes=num_reference_episodes, seed=seed
    )
    last = buffers[-1]
    cut = bool(last.truncations[-1]) and len(last.rewards) < task.max_episode_steps
    whole = returns[:-1] if cut else returns  # the episode cut at `size` is not a full one
    build = {
        "format": BUILD_FORMAT,
        "task": task.name,
        "size": size,
        "seed": seed,
        "policy": policy_desc,
        "custom_policy": policy is not None,
        "episodes": len(buffers),
        "return_mean": float(whole.mean()) if len(whole) else float(returns.mean()),
        "return_std": float(whole.std()) if len(whole) else 0.0,
        "ref_min_score": ref_min,
        "ref_max_score": ref_max,
        "ref_max_source": ref_max_desc,
        "mujoco_version": mujoco.__version__,
        "gymnasium_version": gym.__version__,
        "minari_version": minari.__version__,
        "build_seconds": None,
    }
    spec = _eval_spec(task)
    with minari_root(root) as base:
        base.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(base, prefixes=(".o3f-build-",))
        tmp = Path(tempfile.mkdtemp(prefix=f".o3f-build-{temporary_tag()}", dir=base))
        try:
            with minari_root(tmp):
                import warnings

                with warnings.catch_warnings():  # author/code_permalink notices
                    warnings.simplefilter("ignore", UserWarning)
                    minari.create_dataset_from_buffers(
                        dataset_id,
                        buffers,
                        env=spec,
                        eval_env=spec,
                        algorithm_name=f"torchrl-o3f builder: {policy_desc}",
                        observation_space=observation_space,
                        action_space=action_space,
                        ref_min_score=ref_min,
                        ref_max_score=ref_max,
                        description=(
                            f"{task.name}: {size} transitions of {policy_desc} on "
                            f"{task.env_id} (mujoco {mujoco.__version__}), seed {seed}."
                        ),
                        requirements=[f"mujoco=={mujoco.__version__}"],
                    )
            meta_file = tmp / dataset_id / "data" / "metadata.json"
            meta = json.loads(meta_file.read_text())
            build["build_seconds"] = round(time.time() - start, 1)
            build["sha256"] = {
                f.name: file_sha256(f)
                for f in sorted(meta_file.parent.iterdir())
                if f.is_file() and f.name != "metadata.json"
            }
            meta["o3f_build"] = build
            meta_file.write_text(json.dumps(meta))
            namespace = dataset_id.rpartition("/")[0]
            if namespace and namespace not in list_local_namespaces():
                create_namespace(namespace)
            if final.exists():
                if not overwrite:  # another process finished the same build meanwhile
                    return dataset_id
                shutil.rmtree(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / dataset_id, final)
        except OSError as err:
            full = disk_full_error(err, tmp / dataset_id)
            if full is None:
                raise
            raise full from err
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dataset_id


def ensure_dataset(
    task: str | Task,
    *,
    size: int | None = None,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    progress: bool = True,
) -> str:
    """The id of the task's dataset, building it first if it is not on disk.

    A build of another size or seed has another id (:func:`dataset_id_for`), so a dataset
    of the wrong size is never reused; a dataset found under the id is still checked against
    its build record (task, size, seed) and rejected if it disagrees. Non-buildable tasks
    (antmaze, kitchen) return their hub id if it is on disk, and raise otherwise.

    Args:
        task: a task name or :class:`~torchrl_o3f.envs.Task`.
        size: transitions (default :data:`DEFAULT_SIZE`; ignored for non-buildable tasks).
        seed: build seed.
        root: the Minari datasets folder.
        progress: show a progress bar while building.

    Returns:
        The Minari dataset id, ready for :func:`~torchrl_o3f.data.load_offline_dataset`.

    Raises:
        DatasetMismatchError: a dataset under the id was built with other settings.
        DatasetNotFoundError: a non-buildable task's dataset is not on disk.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     first = ensure_dataset("hopper-random", size=30, root=root, progress=False)
        ...     again = ensure_dataset("hopper-random", size=30, root=root, progress=False)
        >>> first == again == "o3f/hopper/random-n30-v0"
        True
    """
    task = get_task(task)
    if not task.buildable:  # the package's id, else the hub's (as `minari download` stores it)
        for dataset_id in dict.fromkeys(filter(None, (task.dataset_id, task.hub_dataset_id))):
            if (dataset_path(dataset_id, root) / "data").is_dir():
                return dataset_id
        raise DatasetNotFoundError(
            _missing_message(task.dataset_id, task, dataset_path(task.dataset_id, root), root)
        )
    size = DEFAULT_SIZE if size is None else int(size)
    dataset_id = dataset_id_for(task, size, seed)
    with minari_root(root) as base:
        remove_stale_temporaries(base, prefixes=(".o3f-build-",))
    if (dataset_path(dataset_id, root) / "data").is_dir():
        record = read_metadata(dataset_id, root=root).get("o3f_build")
        rebuild = build_command(task, dataset_id, root, overwrite=True)
        if record is None:
            raise DatasetMismatchError(
                f"dataset {dataset_id!r} exists but was not built by this package (no "
                "o3f_build record), so its size and seed are unknown; move it away or rebuild "
                f"it with `{rebuild}`"
            )
        wanted = {"task": task.name, "size": size, "seed": seed}
        got = {k: record.get(k) for k in wanted}
        if got != wanted:
            raise DatasetMismatchError(
                f"dataset {dataset_id!r} was built with {got}, not {wanted}; rebuild it with "
                f"`{rebuild}`"
            )
        return dataset_id
    return build_dataset(task, size=size, seed=seed, root=root, progress=progress)
