"""The task registry: the single place that knows what a task is.

A task name such as ``halfcheetah-medium`` resolves to a :class:`Task`: the gymnasium env id
and its keyword arguments, the offline dataset ids (the one this package builds locally and
the public hub id), the score normalisation and the paper's sigma. Algorithms' per-family
hyper-parameters live in their yaml (``torchrl_o3f/config/algo/<name>.yaml``), not here.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torchrl_o3f.errors import O3FError

__all__ = ["Task", "get_task", "list_tasks", "register_task", "UnknownTaskError"]

ScoreKind = Literal["return", "success", "tasks", "raw"]


class UnknownTaskError(O3FError, KeyError):
    """Raised for a task name the registry does not know; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Task:
    """Everything the package knows about one offline-to-online task.

    Attributes:
        name: the task name, e.g. ``"halfcheetah-medium"``.
        family: the environment family, e.g. ``"halfcheetah"``, ``"antmaze"``, ``"kitchen"``.
        quality: the dataset quality, e.g. ``"medium"``, ``"random"``, ``"large-diverse"``.
        env_id: the gymnasium id of the evaluation/online environment.
        env_kwargs: keyword arguments given to ``gymnasium.make``.
        max_episode_steps: the episode cap used online, for evaluation and when building data.
        dataset_id: the Minari id of the dataset this package loads by default. Locally built
            datasets live in the ``o3f`` namespace.
        hub_dataset_id: the public Minari hub id of the D4RL dataset this task mirrors, if any.
        buildable: whether ``python -m torchrl_o3f.data build <task>`` can make the dataset here
            (random data; medium/expert where the behavior policy is shipped).
        score: ``"return"`` (D4RL 0-100 scale from reference returns), ``"success"`` (success
            rate in percent), ``"tasks"`` (kitchen: tasks completed / 4, in percent) or
            ``"raw"`` (no normalisation: the return, for a user's task without references).
        ref_min_score: the D4RL random-policy return of the family (``score == "return"``).
        ref_max_score: the D4RL expert return of the family (``score == "return"``).
        sigma: the O3F candidate standard deviation (the paper: 0.2 on locomotion, 0.05 on
            navigation, antmaze and kitchen).
        dict_observation: whether the gymnasium env returns a dict observation, which the
            package flattens into one ``observation`` vector (see :func:`flatten_observation`).

    Example:
        >>> from torchrl_o3f.envs import get_task
        >>> task = get_task("halfcheetah-medium")
        >>> task.env_id, task.sigma
        ('HalfCheetah-v5', 0.2)
    """

    name: str
    family: str
    quality: str
    env_id: str
    max_episode_steps: int
    dataset_id: str
    sigma: float
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    hub_dataset_id: str | None = None
    buildable: bool = True
    score: ScoreKind = "return"
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    dict_observation: bool = False

    @property
    def is_locomotion(self) -> bool:
        """Whether the task is one of the dense-reward MuJoCo locomotion tasks."""
        return self.family in LOCOMOTION_FAMILIES


# D4RL reference returns (random policy, expert policy) per locomotion family, v2 envs.
D4RL_REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}
# D4RL maze2d sparse references (random, expert) per maze size.
D4RL_MAZE2D_RETURNS: dict[str, tuple[float, float]] = {
    "umaze": (23.85, 161.86),
    "medium": (13.13, 277.39),
    "large": (6.7, 273.99),
}

LOCOMOTION_FAMILIES = ("halfcheetah", "hopper", "walker2d")
# the paper's candidate standard deviation per kind of task
LOCOMOTION_SIGMA = 0.2
OTHER_SIGMA = 0.05

_REGISTRY: dict[str, Task] = {}


def register_task(task: Task, *, overwrite: bool = False) -> Task:
    """Add a task to the registry (for custom tasks).

    Args:
        task: the task to add.
        overwrite: replace an existing task of the same name instead of raising.

    Returns:
        The registered task.

    Example:
        >>> from torchrl_o3f.envs import register_task, get_task
        >>> t = get_task("hopper-medium")
        >>> import dataclasses
        >>> _ = register_task(dataclasses.replace(t, name="my-hopper"), overwrite=True)
        >>> get_task("my-hopper").env_id
        'Hopper-v5'
    """
    if task.name in _REGISTRY and not overwrite:
        raise ValueError(f"task {task.name!r} is already registered; pass overwrite=True")
    _REGISTRY[task.name] = task
    return task


def get_task(name: str | Task) -> Task:
    """Resolve a task name to its :class:`Task`.

    Args:
        name: a registered task name (``python -m torchrl_o3f tasks`` lists them), or a Task.

    Raises:
        UnknownTaskError: for an unknown name; the message lists the known tasks and the
            closest matches.

    Example:
        >>> from torchrl_o3f.envs import get_task
        >>> get_task("antmaze-large-diverse").sigma
        0.05
    """
    if isinstance(name, Task):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownTaskError(
            f"unknown task {name!r}.{hint} Known tasks: {', '.join(sorted(_REGISTRY))}. "
            "List them with `python -m torchrl_o3f tasks`."
        ) from None


def list_tasks(family: str | None = None) -> list[Task]:
    """All registered tasks, sorted by name, optionally of one family.

    Example:
        >>> from torchrl_o3f.envs import list_tasks
        >>> [t.name for t in list_tasks("hopper")]
        ['hopper-expert', 'hopper-medium', 'hopper-medium-replay', 'hopper-random']
    """
    return [t for _, t in sorted(_REGISTRY.items()) if family is None or t.family == family]


def _locally_buildable(family: str, quality: str) -> bool:
    """Whether a locomotion dataset can be built here from what the package ships.

    Random data always; medium/expert where that behavior policy is shipped; medium-replay
    never (it needs the replay buffer of a training run, which is not shipped).
    """
    if quality == "random":
        return True
    if quality in ("medium", "expert"):
        policies = Path(__file__).resolve().parents[1] / "data" / "policies"
        return (policies / f"{family}-{quality}.pt").exists()
    return False


def _register_builtin() -> None:
    loco_envs = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}
    for family, env_id in loco_envs.items():
        lo, hi = D4RL_REFERENCE_RETURNS[family]
        for quality in ("random", "medium", "medium-replay", "expert"):
            # Minari's mujoco namespace has no random or medium-replay set ("simple" is not
            # uniform-random data), so only medium and expert mirror a hub id.
            hub = f"mujoco/{family}/{quality}-v0" if quality in ("medium", "expert") else None
            register_task(
                Task(
                    name=f"{family}-{quality}",
                    family=family,
                    quality=quality,
                    env_id=env_id,
                    max_episode_steps=1000,
                    dataset_id=f"o3f/{family}/{quality}-v0",
                    hub_dataset_id=hub,
                    sigma=LOCOMOTION_SIGMA,
                    ref_min_score=lo,
                    ref_max_score=hi,
                    buildable=_locally_buildable(family, quality),
                )
            )
    for size, steps in (("umaze", 300), ("medium", 600), ("large", 800)):
        lo, hi = D4RL_MAZE2D_RETURNS[size]
        register_task(
            Task(
                name=f"pointmaze-{size}",
                family="pointmaze",
                quality=size,
                env_id=f"PointMaze_{size.capitalize() if size != 'umaze' else 'UMaze'}-v3",
                env_kwargs={"continuing_task": True, "reset_target": False},
                max_episode_steps=steps,
                dataset_id=f"o3f/pointmaze/{size}-v0",
                hub_dataset_id=f"D4RL/pointmaze/{size}-v2",
                sigma=OTHER_SIGMA,
                ref_min_score=lo,
                ref_max_score=hi,
                dict_observation=True,
            )
        )
    antmazes = {
        "umaze": ("AntMaze_UMaze-v4", 700),
        "umaze-diverse": ("AntMaze_UMaze-v4", 700),
        "medium-play": ("AntMaze_Medium-v4", 1000),
        "medium-diverse": ("AntMaze_Medium_Diverse_GR-v4", 1000),
        "large-play": ("AntMaze_Large-v4", 1000),
        "large-diverse": ("AntMaze_Large_Diverse_GR-v4", 1000),
    }
    for quality, (env_id, steps) in antmazes.items():
        register_task(
            Task(
                name=f"antmaze-{quality}",
                family="antmaze",
                quality=quality,
                env_id=env_id,
                env_kwargs={"continuing_task": True, "reset_target": False},
                max_episode_steps=steps,
                dataset_id=f"D4RL/antmaze/{quality}-v1",
                hub_dataset_id=f"D4RL/antmaze/{quality}-v1",
                buildable=False,
                sigma=OTHER_SIGMA,
                score="success",
                dict_observation=True,
            )
        )
    kitchens = {
        "complete": ("microwave", "kettle", "light switch", "slide cabinet"),
        "partial": ("microwave", "kettle", "light switch", "slide cabinet"),
        "mixed": ("microwave", "kettle", "bottom burner", "light switch"),
    }
    for quality, tasks in kitchens.items():
        register_task(
            Task(
                name=f"kitchen-{quality}",
                family="kitchen",
                quality=quality,
                env_id="FrankaKitchen-v1",
                env_kwargs={"tasks_to_complete": list(tasks)},
                max_episode_steps=280,
                dataset_id=f"D4RL/kitchen/{quality}-v2",
                hub_dataset_id=f"D4RL/kitchen/{quality}-v2",
                buildable=False,
                sigma=OTHER_SIGMA,
                score="tasks",
                dict_observation=True,
            )
        )


_register_builtin()
