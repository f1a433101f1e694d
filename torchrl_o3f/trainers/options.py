"""The sections of a run's config: exploration, budget and its presets, compile, logger, anneal.

:class:`~torchrl_o3f.trainers.config.TrainerConfig` holds one of each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from torchrl_o3f.errors import StrictFields

__all__ = [
    "ANNEAL_MODES",
    "BUDGETS",
    "COMPILE_MODES",
    "EXPLORATION_MODES",
    "LOGGER_BACKENDS",
    "WANDB_MODES",
    "AnnealConfig",
    "BudgetConfig",
    "CompileConfig",
    "ExplorationConfig",
    "LoggerConfig",
]

EXPLORATION_MODES = ("o3f", "gaussian", "none")
ANNEAL_MODES = ("none", "abrupt", "linear")
LOGGER_BACKENDS = ("csv", "tensorboard", "wandb", "none")
WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class ExplorationConfig(StrictFields):
    """The post-policy exploration module of the online phase.

    ``mode``: ``"o3f"`` (the optimistic action selector), ``"gaussian"`` (additive Gaussian
    noise with the same sigma: the paper's ablation) or ``"none"`` (the policy's own sampling).
    ``sigma`` ``None`` takes the task's sigma (0.2 locomotion, 0.05 otherwise); the run's
    ``config.yaml`` records the number used.

    Example:
        >>> ExplorationConfig(mode="gaussian", sigma=0.1).num_candidates
        100
    """

    mode: str = "o3f"
    num_candidates: int = 100
    sigma: float | None = None
    omega: float = 0.0
    include_policy_action: bool = False


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class CompileConfig(StrictFields):
    """How updates run: eagerly (the default) or as a captured, compiled step.

    The keys are torchrl's sota-implementations': ``compile`` wraps each algorithm's captured
    update (:class:`~torchrl_o3f.trainers.capture.CapturedUpdate`: loss, gradients, Adam and
    target update with no host synchronisation) in ``torch.compile`` with ``mode``;
    ``cudagraphs`` replays it as a CUDA graph (``tensordict.nn.CudaGraphModule``; CUDA only).
    Off by default: on CPU compilation costs tens of seconds for a gain within the machine's
    noise (docs/performance.md); on a GPU turn both on for long runs. Either may change between
    a run and its resume: checkpoints are the same with and without them.

    Example:
        >>> CompileConfig(compile=True).mode
        'default'
    """

    compile: bool = False
    mode: str = "default"
    cudagraphs: bool = False


@dataclass
class BudgetConfig(StrictFields):
    """How long each phase runs and how often the trainer evaluates and checkpoints.

    ``offline_steps`` gradient steps offline, ``online_frames`` env steps online (each followed
    by ``algo.utd_ratio`` updates). ``warmup_frames``: the first online frames act uniformly at
    random and make no update (SAC's warm-up, for a run that starts from scratch; 0: none, the
    policy acts from the first frame). ``dataset_size`` ``None``: the dataset's default size;
    ``max_episode_steps`` ``None``: the task's episode cap. The run's ``config.yaml`` records
    the numbers used.

    Example:
        >>> BudgetConfig(offline_steps=1000, online_frames=500).eval_every
        5000
    """

    offline_steps: int = 20_000
    online_frames: int = 10_000
    eval_every: int = 5_000
    eval_episodes: int = 5
    checkpoint_every: int = 5_000
    log_every: int = 250
    dataset_size: int | None = 100_000
    max_episode_steps: int | None = None
    warmup_frames: int = 0


@dataclass
class AnnealConfig(StrictFields):
    """Loosening the objective during the online phase (the paper's Figure 3).

    ``mode="none"`` keeps the offline objective. ``"abrupt"`` sets the loss hyper-parameter
    ``param`` to ``end`` at the start of the online phase; ``"linear"`` moves it there linearly
    over ``frames`` online frames. ``param``/``end`` ``None``: the online algorithm's
    ``loosening`` entry of its yaml (IQL: expectile -> 0.85; CQL: the Lagrange threshold;
    AWAC: lambda).

    Example:
        >>> AnnealConfig(mode="linear", frames=5000).param is None
        True
    """

    mode: str = "none"
    frames: int = 10_000
    param: str | None = None
    end: float | None = None


@dataclass
class LoggerConfig(StrictFields):
    """Where a run's scalars go: a torchrl logger (``csv``, ``tensorboard``, ``wandb``, ``none``).

    ``exp_name`` ``None``: ``<algo>[-<online algo>]-<task>``. ``project``, ``group``, ``entity``
    and ``mode`` (``online``, ``offline``: written locally and synced later with ``wandb
    sync``, ``disabled``) are wandb's (as in torchrl's sota configs); ``tensorboard`` and
    ``wandb`` need their extras (``pip install torchrl-o3f[tensorboard]`` / ``[wandb]``). The
    run's resolved config is sent as the run's hparams / wandb config.

    Example:
        >>> LoggerConfig(backend="wandb", project="o3f", mode="offline").group
        ''
    """

    backend: str = "csv"
    exp_name: str | None = None
    project: str = "torchrl-o3f"
    group: str = ""
    entity: str = ""
    mode: str = "online"


class _Presets(Mapping):
    """Named presets handed out as copies: changing one a config holds leaves the preset."""

    def __init__(self, presets: dict[str, Any]):
        self._presets = presets

    def __getitem__(self, name: str):
        return dataclasses.replace(self._presets[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._presets)

    def __len__(self) -> int:
        return len(self._presets)


BUDGETS: Mapping[str, BudgetConfig] = _Presets({
    "smoke": BudgetConfig(
        offline_steps=40,
        online_frames=60,
        eval_every=50,
        eval_episodes=1,
        checkpoint_every=20,
        log_every=10,
        dataset_size=2_000,
        max_episode_steps=30,
    ),
    "cpu": BudgetConfig(),
    # the CPU scale of the committed study (recipes/sweep.py): about 5-10 core-minutes an IQL run
    "study": BudgetConfig(
        offline_steps=5_000,
        online_frames=5_000,
        eval_every=1_000,
        eval_episodes=5,
        checkpoint_every=2_500,
        log_every=250,
        dataset_size=50_000,
    ),
    "paper": BudgetConfig(
        offline_steps=1_000_000,
        online_frames=1_000_000,
        eval_every=10_000,
        eval_episodes=10,
        checkpoint_every=50_000,
        log_every=1_000,
        dataset_size=1_000_000,
    ),
})
"""The budget presets (``budget=<name>``); each look-up is a fresh copy (never shared)."""
