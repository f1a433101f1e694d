"""Typed configuration of the offline-then-online trainer (also the recipes' hydra schema).

The algorithms' own numbers are not here: each lives in its yaml
(``torchrl_o3f/config/algo/<name>.yaml``) and its typed config (a subclass of
:class:`~torchrl_o3f.objectives.registry.AlgoConfig`), see :mod:`torchrl_o3f.objectives.registry`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torchrl.data import Bounded

from torchrl_o3f.data.minari_task import dataset_task, dataset_task_name
from torchrl_o3f.envs import Task, UnknownTaskError, get_task
from torchrl_o3f.errors import ConfigError, StrictFields
from torchrl_o3f.objectives.registry import AlgoConfig, algo_config, get_algorithm
from torchrl_o3f.trainers.agents import (
    build_agent,
    placeholder_data,
    switch_plan,
    switch_refusal,
)
from torchrl_o3f.trainers.options import (
    ANNEAL_MODES,
    BUDGETS,
    COMPILE_MODES,
    EXPLORATION_MODES,
    LOGGER_BACKENDS,
    WANDB_MODES,
    AnnealConfig,
    BudgetConfig,
    CompileConfig,
    ExplorationConfig,
    LoggerConfig,
)

__all__ = [
    "AnnealConfig",
    "BudgetConfig",
    "CompileConfig",
    "ExplorationConfig",
    "LoggerConfig",
    "TrainerConfig",
    "ConfigError",
    "BUDGETS",
    "EXPLORATION_MODES",
    "ANNEAL_MODES",
    "checked_task",
    "resolve_device",
]


DEFAULT_TASK = "halfcheetah-medium"
"""The task of a config that names neither a task nor a dataset."""

CARRIED_OVER = ("num_qvalue", "num_cells", "depth", "layer_norm", "reward_scale", "reward_shift")
"""What an objective switch keeps from the offline algorithm's config (the critic it hands over
was trained with these networks and this reward transform)."""


def _require(ok: bool, key: str, value: Any, what: str) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {what}, got {value!r}")


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class TrainerConfig(StrictFields):
    """Everything one offline-then-online run needs.

    ``algo`` is the offline algorithm: a typed algorithm config
    (:func:`~torchrl_o3f.objectives.algo_config`) or a registered name, which is resolved for
    the task's family. ``online_algo`` (default ``None``: the same algorithm, the same loss goes
    on training) switches the objective at the phase boundary (e.g. CQL -> SAC, the paper's
    Figure 2); its numbers come from its yaml for the task's family, changed by
    ``online_overrides`` (e.g. ``{"lr": {"actor": 1e-4}}``).

    ``offline_data=False`` makes an online-only run from scratch (e.g. SAC training a behavior
    policy): no dataset is built or read, the replay buffer holds the online transitions only,
    ``budget.offline_steps`` must be 0 and ``budget.warmup_frames`` at least 1.

    ``threads``: torch/OpenMP threads of the run (0: torch's default; sweeps set each job's
    share of the cores). ``method``: a label of the run's method for sweeps and analysis (e.g.
    ``o3f_iql``); it changes nothing in the run.

    ``switch_fresh=True`` accepts an objective switch that cannot carry every network the
    online algorithm acts with (e.g. IQL -> LAPO: LAPO's CVAE and latent actor have no IQL
    counterpart): those start at their initial values. Without it such a switch is refused
    before any work, naming what cannot be carried.

    ``resume=<run dir>`` continues a stopped run: every value must equal the run's recorded
    one (``config.yaml``) except where and how it runs (:data:`~torchrl_o3f.trainers.record.
    RESUME_SAFE_KEYS`); ``extend=true`` lets a finished run continue to a larger budget. A new
    run refuses an ``output_dir`` that holds another run's record unless ``overwrite=True``,
    which removes that run's files first.

    ``dataset=<minari id>`` trains on any Minari dataset on disk (under ``dataset_root``, else
    ``MINARI_DATASETS_PATH`` or Minari's folder): Minari's ``mujoco/*``, the D4RL ids, a user's.
    With ``task`` unset the run acts in the env the dataset records and scores with its
    reference returns (:func:`~torchrl_o3f.data.dataset_task`; raw returns, labelled so, when
    it has none); with ``task`` set, the task gives the env and the scores and the dataset only
    the data. ``task`` unset and no dataset: ``halfcheetah-medium``.

    Unknown attributes are refused (``cfg.budget.ofline_steps = 5`` raises
    :class:`~torchrl_o3f.errors.UnknownKeyError`), as the recipes refuse unknown keys.

    Example:
        >>> cfg = TrainerConfig(task="hopper-medium", algo="iql")
        >>> cfg.validate().algo.expectile, cfg.exploration.mode
        (0.7, 'o3f')
    """

    task: str | None = None
    algo: Any = "iql"
    online_algo: str | None = None
    online_overrides: dict[str, Any] = field(default_factory=dict)
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    compile: CompileConfig = field(default_factory=CompileConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    anneal: AnnealConfig = field(default_factory=AnnealConfig)
    seed: int = 0
    device: str = "auto"
    output_dir: str = "."
    resume: str | None = None
    offline_checkpoint: str | None = None
    offline_fraction: float | None = None
    dataset_root: str | None = None
    dataset_seed: int = 0
    progress: bool = True
    extend: bool = False
    threads: int = 0
    method: str = ""
    offline_data: bool = True
    switch_fresh: bool = False
    overwrite: bool = False
    dataset: str | None = None

    def __post_init__(self) -> None:
        if self.dataset is not None and self.task in (None, dataset_task_name(self.dataset)):
            # the dataset's own task (registered again from its record on every load)
            self.task = dataset_task(self.dataset, root=self.dataset_root).name
        elif self.task is None:
            self.task = DEFAULT_TASK
        if isinstance(self.algo, str):
            self.algo = algo_config(self.algo, task=self.task)

    # ------------------------------------------------------------------ resolution
    def online_config(self) -> AlgoConfig:
        """The online phase's algorithm config (``algo`` itself when there is no switch).

        A switched-to algorithm carries over what the networks and their targets depend on
        (:data:`CARRIED_OVER`: the network shapes and the reward transform the critic was
        trained with) from ``algo``; ``online_overrides`` change anything on top.
        """
        if not self.switches():
            return self.algo
        fields = dataclasses.fields(get_algorithm(self.online_algo).config_class)
        names = {f.name for f in fields}
        carried = {
            k: getattr(self.algo, k) for k in CARRIED_OVER if k in names and hasattr(self.algo, k)
        }
        overrides = {**carried, **self.online_overrides}
        return algo_config(self.online_algo, task=self.task, overrides=overrides)

    def switches(self) -> bool:
        """Whether the objective changes at the phase boundary."""
        return self.online_algo is not None and self.online_algo != self.algo.name

    def sigma(self) -> float:
        """The exploration sigma (the task's when unset)."""
        if self.exploration.sigma is not None:
            return self.exploration.sigma
        return get_task(self.task).sigma

    def max_episode_steps(self) -> int:
        """The episode cap online and in evaluation (the task's when unset)."""
        if self.budget.max_episode_steps is not None:
            return self.budget.max_episode_steps
        return get_task(self.task).max_episode_steps

    def anneal_target(self) -> tuple[str, float] | None:
        """``(param, end)`` of the loosening schedule, or ``None`` when ``anneal.mode=none``."""
        a = self.anneal
        if a.mode == "none":
            return None
        loosening = self.online_config().loosening or {}
        param = a.param if a.param is not None else loosening.get("param")
        end = a.end if a.end is not None else loosening.get("end")
        if param is None or end is None:
            raise ConfigError(
                f"anneal.mode={a.mode} but the online algorithm "
                f"{self.online_config().name!r} names no loosening hyper-parameter in its yaml; "
                "give anneal.param=<loss attribute> and anneal.end=<value>"
            )
        return str(param), float(end)

    # ------------------------------------------------------------------ validation
    def _validate_compile(self) -> None:
        c = self.compile
        for key in ("compile", "cudagraphs"):
            value = getattr(c, key)
            _require(isinstance(value, bool), f"compile.{key}", value, "true or false")
        _require(c.mode in COMPILE_MODES, "compile.mode", c.mode, f"one of {COMPILE_MODES}")
        if c.cudagraphs:
            cuda = self.device != "cpu" and torch.cuda.is_available()
            if not cuda:
                raise ConfigError(
                    f"compile.cudagraphs=true needs a CUDA device (device={self.device}, CUDA "
                    f"available: {torch.cuda.is_available()}): set compile.cudagraphs=false"
                )

    def validate(self) -> TrainerConfig:
        """Check every choice before any work starts; raises :class:`ConfigError`.

        Every numeric field is checked for type and range, the task and algorithms must be
        registered and the algorithm's learning rates must be finite and positive.
        """
        checked_task(self.task)
        if isinstance(self.algo, str):
            self.algo = algo_config(self.algo, task=self.task)
        if not isinstance(self.algo, AlgoConfig):
            raise ConfigError(
                "algo must be an algorithm config (torchrl_o3f.objectives.algo_config(name, "
                f"task=...)) or a registered name, got {type(self.algo).__name__}"
            )
        get_algorithm(self.algo.name)
        _validate_algo(self.algo, "algo")
        if self.online_algo is not None:
            get_algorithm(self.online_algo)
            if self.switches():
                _validate_algo(self.online_config(), "online_algo")
        elif self.online_overrides:
            raise ConfigError(
                "online_overrides is set but online_algo is not: the online phase goes on with "
                "the offline loss; set online_algo=<name> or change algo.* instead"
            )
        self._validate_exploration()
        self._validate_budget()
        a = self.anneal
        _require(a.mode in ANNEAL_MODES, "anneal.mode", a.mode, f"one of {ANNEAL_MODES}")
        _require(_integer(a.frames) and a.frames >= 1, "anneal.frames", a.frames, "an int >= 1")
        if a.end is not None:
            _require(_number(a.end), "anneal.end", a.end, "a finite number")
        if a.mode != "none":
            self.anneal_target()
        _require(
            _integer(self.seed) and self.seed >= 0, "seed", self.seed, "a non-negative integer"
        )
        _require(
            _integer(self.dataset_seed) and self.dataset_seed >= 0,
            "dataset_seed",
            self.dataset_seed,
            "a non-negative integer",
        )
        _require(
            _integer(self.threads) and self.threads >= 0,
            "threads",
            self.threads,
            "an int >= 0 (0: torch's default)",
        )
        if self.offline_fraction is not None:
            _require(
                _number(self.offline_fraction) and 0.0 <= self.offline_fraction <= 1.0,
                "offline_fraction",
                self.offline_fraction,
                "a number in [0, 1] (or null: uniform over offline + online data)",
            )
        if self.device not in ("auto", "cpu") and not str(self.device).startswith("cuda"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")
        self._validate_compile()
        _require(
            self.logger.backend in LOGGER_BACKENDS,
            "logger.backend",
            self.logger.backend,
            f"one of {LOGGER_BACKENDS}",
        )
        mode = self.logger.mode
        _require(mode in WANDB_MODES, "logger.mode", mode, f"one of {WANDB_MODES}")
        needs = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(self.logger.backend)
        if needs is not None and importlib.util.find_spec(needs) is None:
            raise ConfigError(
                f"logger.backend={self.logger.backend} needs the {needs} package: "
                f"pip install 'torchrl-o3f[{needs}]' (or use logger.backend=csv)"
            )
        if self.dataset is not None:
            _require(
                isinstance(self.dataset, str) and "/" in self.dataset,
                "dataset",
                self.dataset,
                "a Minari dataset id such as mujoco/hopper/medium-v0 (or null: the task's own)",
            )
            if not self.offline_data:
                raise ConfigError(
                    f"dataset={self.dataset} and offline_data=false: an online-only run reads no "
                    "dataset; drop one of them"
                )
        if self.resume and self.offline_checkpoint:
            raise ConfigError("give either resume or offline_checkpoint, not both")
        _require(
            isinstance(self.offline_data, bool), "offline_data", self.offline_data, "true or false"
        )
        for key in ("switch_fresh", "overwrite"):
            value = getattr(self, key)
            _require(isinstance(value, bool), key, value, "true or false")
        if self.overwrite and self.resume:
            raise ConfigError(
                f"overwrite=true with resume={self.resume}: a resumed run continues its folder; "
                "drop overwrite to resume, or drop resume to start the run again from scratch"
            )
        if not self.offline_data:
            self._validate_online_only()
        self._validate_losses()
        return self

    def _validate_losses(self) -> None:
        """Build the run's losses on placeholder data, before any work.

        A hyper-parameter the loss refuses (``algo.expectile=1.5``) is a :class:`ConfigError`
        naming its key, and an objective switch that cannot carry the networks the online
        algorithm acts with is refused unless ``switch_fresh`` (see
        :func:`~torchrl_o3f.trainers.agents.switch_plan`).
        """
        spec, data = Bounded(-1.0, 1.0, shape=(2,)), placeholder_data(3, 2)
        agents = {}
        configs = {"algo": self.algo}
        if self.switches():
            configs["online_algo"] = self.online_config()
        with torch.random.fork_rng(devices=[]):  # checking a config draws no random numbers
            for key, algo in configs.items():
                try:
                    agents[key] = build_agent(
                        algo, spec, observation_dim=3, data=data, device="cpu"
                    )
                except (ValueError, TypeError) as err:
                    raise ConfigError(_algo_message(algo, key, err)) from None
        if self.switches():
            uncarried = switch_plan(agents["algo"].loss, agents["online_algo"].loss)["uncarried"]
            if uncarried and not self.switch_fresh:
                raise ConfigError(switch_refusal(self.algo.name, self.online_algo, uncarried))

    def _validate_online_only(self) -> None:
        b = self.budget
        for key, algo in (("algo", self.algo.name), ("online_algo", self.online_algo)):
            if algo is not None and get_algorithm(algo).needs_data:
                raise ConfigError(
                    f"offline_data=false (an online-only run) but {key}={algo} needs offline "
                    "data (its normalisation or reward statistics); use an algorithm that does "
                    "not, e.g. algo=sac"
                )
        for key, algo in (("algo", self.algo), ("online_algo", self.online_config())):
            if algo.normalize_observations:
                raise ConfigError(
                    f"offline_data=false (an online-only run) but {key}={algo.name} has "
                    "normalize_observations=true: there are no data to take the observation "
                    "mean and std from; set algo.normalize_observations=false"
                )
        if b.offline_steps:
            raise ConfigError(
                f"offline_data=false (an online-only run) but budget.offline_steps="
                f"{b.offline_steps}: there are no data to pre-train on; set budget.offline_steps=0"
            )
        if b.warmup_frames < 1:
            raise ConfigError(
                "offline_data=false (an online-only run) needs budget.warmup_frames >= 1: the "
                "first updates sample the replay buffer, which starts empty (SAC: 5000)"
            )
        if self.offline_fraction is not None:
            raise ConfigError(
                "offline_fraction is set but offline_data=false: there are no offline data to "
                "mix in; leave offline_fraction unset"
            )
        if self.offline_checkpoint:
            raise ConfigError(
                "offline_checkpoint is set but offline_data=false: an online-only run has no "
                "offline phase to start from"
            )

    def _validate_exploration(self) -> None:
        e = self.exploration
        _require(
            e.mode in EXPLORATION_MODES, "exploration.mode", e.mode, f"one of {EXPLORATION_MODES}"
        )
        _require(
            _integer(e.num_candidates) and e.num_candidates >= 1,
            "exploration.num_candidates",
            e.num_candidates,
            "an int >= 1",
        )
        if e.sigma is not None:
            _require(
                _number(e.sigma) and e.sigma >= 0, "exploration.sigma", e.sigma, "a number >= 0"
            )
        _require(_number(e.omega), "exploration.omega", e.omega, "a finite number")

    def _validate_budget(self) -> None:
        b = self.budget
        for name in ("offline_steps", "online_frames"):
            v = getattr(b, name)
            _require(_integer(v) and v >= 0, f"budget.{name}", v, "an int >= 0")
        for name in ("eval_every", "eval_episodes", "checkpoint_every", "log_every"):
            v = getattr(b, name)
            _require(_integer(v) and v >= 1, f"budget.{name}", v, "an int >= 1")
        if b.dataset_size is not None:
            _require(
                _integer(b.dataset_size) and b.dataset_size >= 1,
                "budget.dataset_size",
                b.dataset_size,
                "an int >= 1 (or null: the dataset's default size)",
            )
        _require(
            _integer(b.warmup_frames) and 0 <= b.warmup_frames <= b.online_frames,
            "budget.warmup_frames",
            b.warmup_frames,
            f"an int in [0, budget.online_frames={b.online_frames}]",
        )
        if b.max_episode_steps is not None:
            _require(
                _integer(b.max_episode_steps) and b.max_episode_steps >= 1,
                "budget.max_episode_steps",
                b.max_episode_steps,
                "an int >= 1 (or null: the task's episode cap)",
            )


def checked_task(name: str) -> Task:
    """The registered task ``name`` of a config's ``task`` key.

    Raises:
        UnknownTaskError: naming the key, the value, the closest task names and the command
            that lists them.

    Example:
        >>> checked_task("hopper-medium").env_id
        'Hopper-v5'
    """
    try:
        return get_task(name)
    except UnknownTaskError as err:
        raise UnknownTaskError(f"task={name}: {err}") from None


def _algo_message(algo: AlgoConfig, key: str, err: Exception) -> str:
    """``err`` of a loss built from ``algo``, with the config key it is about."""
    text = str(err)
    name = text.split(" ", 1)[0].rstrip(":")
    for field_name in dataclasses.fields(algo):
        if name == field_name.name:
            return f"{key}.{text} (the {algo.name} loss refuses it; see its yaml for the default)"
    return f"{key}={algo.name}: {text}"


def resolve_device(device: str | torch.device) -> torch.device:
    """The device of ``device``: ``"auto"`` -> CUDA when available, else CPU.

    Raises:
        ConfigError: for a device this machine does not have (CUDA absent, or an index past
            the GPUs it has).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device={device!r} is not a device; use device=auto, cpu or cuda[:i]"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={device} but this machine has no CUDA (torch {torch.__version__}); "
                "use device=auto (CUDA when present, else the CPU) or device=cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(
                f"device={device} but this machine has {count} CUDA device(s) (cuda:0.."
                f"cuda:{count - 1}); use device=auto or one of those"
            )
    return dev


def _validate_algo(algo: AlgoConfig, key: str) -> None:
    """Type and range checks of the fields every algorithm has."""
    ints = {"num_qvalue": 1, "num_cells": 1, "depth": 1, "batch_size": 1, "utd_ratio": 1}
    ints.update({"actor_utd_ratio": 1, "actor_delay": 1})
    for name, low in ints.items():
        v = getattr(algo, name)
        _require(_integer(v) and v >= low, f"{key}.{name}", v, f"an int >= {low}")
    _require(
        algo.actor_utd_ratio <= algo.utd_ratio,
        f"{key}.actor_utd_ratio",
        algo.actor_utd_ratio,
        f"<= {key}.utd_ratio ({algo.utd_ratio})",
    )
    _require(
        _number(algo.gamma) and 0.0 <= algo.gamma <= 1.0, f"{key}.gamma", algo.gamma, "in [0, 1]"
    )
    _require(_number(algo.tau) and 0.0 < algo.tau <= 1.0, f"{key}.tau", algo.tau, "in (0, 1]")
    for group, lr in algo.lr.items():
        _require(_number(lr) and lr > 0, f"{key}.lr.{group}", lr, "a finite number > 0")
    for group, schedule in algo.lr_schedule.items():
        _require(
            schedule in ("constant", "cosine"),
            f"{key}.lr_schedule.{group}",
            schedule,
            "'constant' or 'cosine'",
        )
        _require(
            group in algo.lr,
            f"{key}.lr_schedule.{group}",
            schedule,
            f"a schedule of a group that has a learning rate ({sorted(algo.lr)})",
        )
    for name, value in algo.hyperparameters().items():
        if isinstance(value, float):
            _require(math.isfinite(value), f"{key}.{name}", value, "a finite number")
