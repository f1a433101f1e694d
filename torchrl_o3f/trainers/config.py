"""Typed configuration of the offline-then-online trainer (also the recipes' hydra schema)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torchrl_o3f.envs import get_task

__all__ = [
    "AlgoConfig",
    "AnnealConfig",
    "BudgetConfig",
    "ExplorationConfig",
    "LoggerConfig",
    "TrainerConfig",
    "ConfigError",
    "BUDGETS",
    "EXPLORATION_MODES",
    "ALGORITHMS",
]

EXPLORATION_MODES = ("o3f", "gaussian", "none")
ALGORITHMS = ("iql", "lapo")


class ConfigError(ValueError):
    """A configuration that cannot run; raised before any training starts."""


@dataclass
class AlgoConfig:
    """The offline algorithm and its networks.

    ``None`` means "the algorithm's or the task family's default": IQL uses 2x256 networks,
    batch 256, lr 3e-4, utd 1 and the task's expectile/temperature; LAPO uses 3x256 networks,
    batch 512, lr 2e-4 and 20 critic updates per env step online.

    Example:
        >>> AlgoConfig(name="lapo").resolved()
        {'depth': 3, 'lr': 0.0002, 'batch_size': 512}
    """

    name: str = "iql"
    num_qvalue: int = 5
    num_cells: int = 256
    depth: int | None = None
    layer_norm: bool = False
    gamma: float = 0.99
    tau: float = 0.005
    lr: float | None = None
    batch_size: int | None = None
    expectile: float | None = None
    temperature: float | None = None
    qvalue_reduction: str = "min"
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> dict[str, Any]:
        """Defaults filled in for this algorithm (depth, lr, batch size)."""
        lapo = self.name == "lapo"
        return {
            "depth": self.depth if self.depth is not None else (3 if lapo else 2),
            "lr": self.lr if self.lr is not None else (2e-4 if lapo else 3e-4),
            "batch_size": self.batch_size
            if self.batch_size is not None
            else (512 if lapo else 256),
        }


@dataclass
class ExplorationConfig:
    """The post-policy exploration module of the online phase.

    ``mode``: ``"o3f"`` (the optimistic action selector), ``"gaussian"`` (additive Gaussian
    noise with the same sigma: the paper's ablation) or ``"none"`` (the policy's own sampling).
    ``sigma`` ``None`` takes the task's sigma (0.2 locomotion, 0.05 otherwise).

    Example:
        >>> ExplorationConfig(mode="gaussian", sigma=0.1).num_candidates
        100
    """

    mode: str = "o3f"
    num_candidates: int = 100
    sigma: float | None = None
    omega: float = 0.0
    include_policy_action: bool = False


@dataclass
class BudgetConfig:
    """How long each phase runs and how often the trainer evaluates and checkpoints.

    ``utd_ratio`` ``None``: 1 for IQL, 20 (critic updates) for LAPO. ``actor_utd_ratio``:
    actor updates per env step online (the last ``actor_utd_ratio`` of the ``utd_ratio``
    updates also update the actor). ``dataset_size`` ``None``: the dataset's default size.

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
    utd_ratio: int | None = None
    actor_utd_ratio: int = 1
    dataset_size: int | None = 100_000
    max_episode_steps: int | None = None


@dataclass
class AnnealConfig:
    """A loss hyper-parameter following a schedule during the online phase.

    ``param`` is an attribute of the loss (e.g. ``"expectile"``); from the start of the online
    phase it moves from its offline value to ``end``: at once (``mode="abrupt"``) or linearly
    over ``frames`` online frames (``mode="linear"``).

    Example:
        >>> AnnealConfig(param="expectile", end=0.9, frames=5000).mode
        'linear'
    """

    param: str = "expectile"
    end: float = 0.85
    mode: str = "linear"
    frames: int = 10_000


@dataclass
class LoggerConfig:
    """Logging backend (``csv``, ``tensorboard``, ``wandb``) and experiment name.

    Example:
        >>> LoggerConfig(backend="tensorboard", exp_name="o3f-hopper").backend
        'tensorboard'
    """

    backend: str = "csv"
    exp_name: str | None = None


@dataclass
class TrainerConfig:
    """Everything one offline-then-online run needs.

    Example:
        >>> cfg = TrainerConfig(task="hopper-medium")
        >>> cfg.validate().exploration.mode
        'o3f'
    """

    task: str = "halfcheetah-medium"
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    anneal: list[AnnealConfig] = field(default_factory=list)
    seed: int = 0
    device: str = "auto"
    output_dir: str = "."
    resume: str | None = None
    offline_checkpoint: str | None = None
    offline_fraction: float | None = None
    dataset_root: str | None = None
    dataset_seed: int = 0
    progress: bool = True

    def validate(self) -> TrainerConfig:
        """Check every choice before any work starts; raises :class:`ConfigError`."""
        get_task(self.task)  # UnknownTaskError lists the known tasks
        if self.algo.name not in ALGORITHMS:
            raise ConfigError(f"unknown algo.name {self.algo.name!r}; choose one of {ALGORITHMS}")
        if self.exploration.mode not in EXPLORATION_MODES:
            raise ConfigError(
                f"unknown exploration.mode {self.exploration.mode!r}; "
                f"choose one of {EXPLORATION_MODES}"
            )
        b = self.budget
        if b.utd_ratio is not None and b.utd_ratio < 1:
            raise ConfigError(f"budget.utd_ratio must be >= 1, got {b.utd_ratio}")
        if b.actor_utd_ratio < 1:
            raise ConfigError(f"budget.actor_utd_ratio must be >= 1, got {b.actor_utd_ratio}")
        for name in ("offline_steps", "online_frames"):
            if getattr(b, name) < 0:
                raise ConfigError(f"budget.{name} must be >= 0, got {getattr(b, name)}")
        for name in ("eval_every", "eval_episodes", "checkpoint_every", "log_every"):
            if getattr(b, name) < 1:
                raise ConfigError(f"budget.{name} must be >= 1, got {getattr(b, name)}")
        e = self.exploration
        if e.num_candidates < 1:
            raise ConfigError(f"exploration.num_candidates must be >= 1, got {e.num_candidates}")
        if e.sigma is not None and not e.sigma >= 0:
            raise ConfigError(f"exploration.sigma must be >= 0, got {e.sigma}")
        if self.offline_fraction is not None and not 0.0 <= self.offline_fraction <= 1.0:
            raise ConfigError(f"offline_fraction must be in [0, 1], got {self.offline_fraction}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")
        if self.logger.backend not in ("csv", "tensorboard", "wandb", "none"):
            raise ConfigError(
                f"unknown logger.backend {self.logger.backend!r}; "
                "choose csv, tensorboard, wandb or none"
            )
        for a in self.anneal:
            if a.mode not in ("abrupt", "linear"):
                raise ConfigError(f"anneal mode must be 'abrupt' or 'linear', got {a.mode!r}")
            if a.frames < 1:
                raise ConfigError(f"anneal frames must be >= 1, got {a.frames}")
        if self.resume and self.offline_checkpoint:
            raise ConfigError("give either resume or offline_checkpoint, not both")
        return self

    def utd_ratio(self) -> int:
        """Critic updates per env step online (the algorithm's default when unset)."""
        if self.budget.utd_ratio is not None:
            return self.budget.utd_ratio
        return 20 if self.algo.name == "lapo" else 1

    def sigma(self) -> float:
        """The exploration sigma (the task's default when unset)."""
        if self.exploration.sigma is not None:
            return self.exploration.sigma
        return get_task(self.task).sigma


BUDGETS: dict[str, BudgetConfig] = {
    "smoke": BudgetConfig(
        offline_steps=40,
        online_frames=60,
        eval_every=50,
        eval_episodes=1,
        checkpoint_every=20,
        log_every=10,
        utd_ratio=2,
        dataset_size=2_000,
        max_episode_steps=30,
    ),
    "cpu": BudgetConfig(),
    "paper": BudgetConfig(
        offline_steps=1_000_000,
        online_frames=1_000_000,
        eval_every=10_000,
        eval_episodes=10,
        checkpoint_every=50_000,
        log_every=1_000,
        dataset_size=1_000_000,
    ),
}
