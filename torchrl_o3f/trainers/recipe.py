"""Hydra glue shared by the recipes: the typed schema, budget presets and the run functions.

The run functions print the package's errors as one line on stderr and exit with status 1
(:func:`~torchrl_o3f.errors.reported`; ``HYDRA_FULL_ERROR=1`` shows the traceback), and a sweep
checks every job of its grid before the first one starts (:class:`SweepPreflight`).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from torchrl_o3f.data import dataset_task, ensure_dataset
from torchrl_o3f.envs import get_task
from torchrl_o3f.errors import ConfigError, O3FError, debug_requested, one_line, reported
from torchrl_o3f.objectives.registry import list_algorithms, register_resolvers, structured_config
from torchrl_o3f.trainers.checkpoint import EXIT_RESUMABLE, CheckpointError, load_checkpoint
from torchrl_o3f.trainers.config import (
    BUDGETS,
    AnnealConfig,
    BudgetConfig,
    CompileConfig,
    ExplorationConfig,
    LoggerConfig,
    TrainerConfig,
    checked_task,
)
from torchrl_o3f.trainers.record import config_from_record, method_name
from torchrl_o3f.trainers.sweep import SweepConfig, run_sweep_job, threads_per_job
from torchrl_o3f.trainers.trainer import OfflineOnlineTrainer

__all__ = [
    "SweepJobError",
    "SweepPreflight",
    "check_sweep",
    "config_from_hydra",
    "register_configs",
    "run_recipe",
    "run_sweep",
]


def register_configs() -> None:
    """Register the typed schemas and the ``budget`` presets with hydra, and the resolvers.

    - ``trainer_schema``: :class:`~torchrl_o3f.trainers.config.TrainerConfig`, which the
      recipes' yaml files extend, so a misspelt key or a value of the wrong type is an error
      before anything runs;
    - ``algo/<name>_schema``: each registered algorithm's typed config, which its yaml
      (``torchrl_o3f/config/algo/<name>.yaml``, on the recipes' search path) extends;
    - ``budget/<preset>``: :data:`~torchrl_o3f.trainers.config.BUDGETS`;
    - the ``o3f.family`` resolver of the per-family values and ``o3f.dataset_task``, the task of
      a ``dataset=<minari id>``.
    """
    from hydra.core.config_store import ConfigStore

    register_resolvers()
    if not OmegaConf.has_resolver("o3f.dataset_task"):
        OmegaConf.register_new_resolver("o3f.dataset_task", _dataset_task)
    cs = ConfigStore.instance()
    cs.store(name="trainer_schema", node=TrainerConfig)
    for name, budget in BUDGETS.items():
        cs.store(group="budget", name=name, node=budget)
    for algo in list_algorithms():
        cs.store(group="algo", name=f"{algo.name}_schema", node=algo.config_class)

    cs.store(name="sweep_schema", node=SweepConfig)


def _dataset_task(default: str, *, _root_) -> str:
    """The ``o3f.dataset_task`` resolver: the root ``dataset``'s task, or ``default``.

    The recipes' ``task: ${o3f.dataset_task:halfcheetah-medium}``: ``dataset=<minari id>``
    alone names the task (its env and scores from the dataset's record); ``task=`` overrides.
    """
    dataset = _root_.get("dataset", None)
    if not dataset:
        return default
    return dataset_task(dataset, root=_root_.get("dataset_root", None)).name


def _build(cls, values: dict[str, Any]):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def config_from_hydra(cfg) -> TrainerConfig:
    """Turn a hydra/omegaconf config into a validated :class:`TrainerConfig`."""
    from omegaconf import OmegaConf

    checked_task(cfg.get("task"))  # before the per-family values resolve against it
    raw = OmegaConf.to_container(cfg, resolve=True)
    nested = {
        "exploration": ExplorationConfig,
        "budget": BudgetConfig,
        "logger": LoggerConfig,
        "anneal": AnnealConfig,
        "compile": CompileConfig,
    }
    values = {k: v for k, v in raw.items() if k not in nested and k != "algo"}
    for key, cls in nested.items():
        values[key] = _build(cls, raw.get(key) or {})
    algo = raw["algo"]
    if isinstance(algo, dict):
        algo = OmegaConf.to_object(structured_config(algo["name"], algo))
    values["algo"] = algo
    return _build(TrainerConfig, values).validate()


def _resumed_config(config: TrainerConfig, overrides: list[str]) -> TrainerConfig:
    """The run's recorded config, with only the keys given on the command line replaced.

    The recipe's defaults (``budget: cpu``, ...) do not count as changes: a resumed run is the
    run it continues. The trainer then rejects overrides that would change what it computes.
    """
    try:
        stored = load_checkpoint(config.resume).get("meta", {}).get("config")
    except CheckpointError as err:
        raise CheckpointError(f"resume={config.resume}: {err}") from None
    if not (isinstance(stored, dict) and "derived" in stored):
        return config  # a checkpoint without a recorded config: the command line is the config
    base = config_from_record(stored)
    base.offline_checkpoint = None  # recorded where the run started; a resume does not restart
    base.overwrite = False  # nor does it replace the folder it continues
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key.startswith("hydra"):
            continue
        src, dst = config, base
        *path, last = key.split(".")
        try:
            for part in path:
                src, dst = getattr(src, part), getattr(dst, part)
            setattr(dst, last, getattr(src, last))
        except AttributeError:
            continue  # not a trainer field (a hydra-only key)
    return base.validate()


def _run_dir(path: str) -> str:
    """Hydra's (absolute) run folder, relative to where the command runs when inside it.

    The run's record (``config.yaml``) then names no path of the machine it ran on, and a
    committed record reads the same whoever made it.
    """
    out = Path(path)
    return os.path.relpath(out) if out.is_relative_to(Path.cwd()) else str(out)


def run_recipe(cfg) -> dict[str, Any]:
    """Run the trainer from a hydra config and print the one-line summary.

    A run stopped by a signal prints how to resume it and exits with
    :data:`~torchrl_o3f.trainers.checkpoint.EXIT_RESUMABLE` (1 if it stopped before its first
    checkpoint); one stopped by an error of the package prints its message alone on stderr and
    exits with 1 (``HYDRA_FULL_ERROR=1``: the traceback too).
    """
    with reported():
        return _run_recipe(cfg)


def _run_recipe(cfg) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig

    config = config_from_hydra(cfg)
    if config.resume:
        config = _resumed_config(config, list(HydraConfig.get().overrides.task))
    if config.resume and Path(config.resume).is_dir():
        config.output_dir = config.resume
    elif config.output_dir == ".":
        config.output_dir = _run_dir(HydraConfig.get().runtime.output_dir)
    summary = OfflineOnlineTrainer(config).train()
    if summary.get("stopped"):
        import sys

        if summary.get("resumable", True):
            print(
                f"stopped at offline step {summary['step']} / online frame {summary['frames']}; "
                f"resume with: resume={config.output_dir}"
            )
            sys.exit(EXIT_RESUMABLE)  # not 0: the run is not finished, but it can go on
        print("stopped before any checkpoint was written: nothing to resume", file=sys.stderr)
        sys.exit(1)
    print(
        f"[{summary['task']}] {method_name(config)}: normalised score "
        f"{summary['score_after_offline']:.1f} +- {summary['score_std_after_offline']:.1f} after "
        f"offline -> {summary['score_after_online']:.1f} +- "
        f"{summary['score_std_after_online']:.1f} after online (mean +- std over "
        f"{summary['eval_episodes']} evaluation episodes, one seed; return "
        f"{summary['return_after_offline']:.0f} -> {summary['return_after_online']:.0f}, "
        f"{summary['wall_time_s'] / 60:.1f} min, outputs in {config.output_dir})"
    )
    return summary


def run_sweep(cfg) -> dict[str, Any]:
    """Run one job of a sweep (``recipes/sweep.py``): skip, resume or start it in its folder.

    The job's threads are its share of the cores (:func:`~torchrl_o3f.trainers.sweep.
    threads_per_job` of the hydra launcher) unless ``threads`` is set; shared offline phases
    live under ``<study_root>/<budget>``.

    Raises:
        SweepJobError: for an error of the package: the job fails (hydra's launcher runs the
            other jobs), and the sweep ends with the job's overrides and the message on one
            line, status 1 (``HYDRA_FULL_ERROR=1``: the error itself, with its traceback).
    """
    from hydra.core.hydra_config import HydraConfig

    try:
        return _run_sweep(cfg)
    except O3FError as err:
        if debug_requested():
            raise
        job = " ".join(HydraConfig.get().overrides.task)
        raise SweepJobError(f"error: sweep job [{job}] failed: {one_line(err)}") from None


class SweepJobError(CompactHydraException):
    """A sweep job stopped by an error of the package; hydra prints its one-line message."""


def _run_sweep(cfg) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hydra_cfg = HydraConfig.get()
    config = config_from_hydra(cfg)
    config.output_dir = _run_dir(hydra_cfg.runtime.output_dir)
    if not config.threads:
        config.threads = threads_per_job(OmegaConf.to_container(hydra_cfg.launcher))
    root = Path(cfg.study_root) / hydra_cfg.runtime.choices.get("budget", "custom")
    summary = run_sweep_job(config, study_root=root)
    label = config.method or method_name(config)
    where = f"{config.task} {label} seed {config.seed}"
    if summary.get("skipped"):
        print(f"[sweep] {where}: finished before, skipped ({config.output_dir})")
    elif summary.get("stopped"):
        print(f"[sweep] {where}: stopped; the next sweep resumes it ({config.output_dir})")
    else:
        print(
            f"[sweep] {where}: normalised score {summary['score_after_offline']:.1f} after "
            f"offline -> {summary['score_after_online']:.1f} after online"
        )
    return summary


def sweep_jobs(config) -> list[list[str]]:
    """The override lists of every job of a multirun, as hydra's basic sweeper forms them.

    ``config`` is the multirun's primary config: its grid is ``hydra.sweeper.params`` (the
    experiment's) followed by the command line's overrides (a later key replaces an earlier
    one); each comma-separated list or ``range`` is one axis of the grid.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    axes: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if override.is_sweep_override():
            axes[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
        else:
            axes[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*axes.values())]


def check_sweep(config) -> int:
    """Compose and validate every job of a multirun before the first one starts.

    Each job's config goes through what a single run checks before any work
    (:func:`config_from_hydra`: the schema, every value, the algorithms' hyper-parameters,
    objective switches; the data of a task that cannot be built here), so a misspelt task or
    method costs seconds, not the good runs' hours. Where a job runs (its device) is checked
    by the job itself, on the machine that runs it.

    Returns:
        The number of jobs checked.

    Raises:
        ConfigError: naming each distinct problem, a job that has it and how many jobs do;
            no job has started.
    """
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    loader = GlobalHydra.instance().config_loader()
    jobs = sweep_jobs(config)
    axes = [i for i in range(len(jobs[0])) if len({job[i] for job in jobs}) > 1] if jobs else []
    problems: dict[str, list[str]] = {}
    checked: set[tuple] = set()
    for job in jobs:
        try:
            job_cfg = loader.load_sweep_config(config, job)
            with open_dict(job_cfg):
                del job_cfg["hydra"]
            _check_data(config_from_hydra(job_cfg), checked)
        except O3FError as err:  # named by the overrides that tell it from the other jobs
            problems.setdefault(one_line(err), []).append(" ".join(job[i] for i in axes))
    if problems:
        failed = sum(len(v) for v in problems.values())
        details = "; ".join(
            f"[{jobs_[0]}{f' and {len(jobs_) - 1} more' if len(jobs_) > 1 else ''}] {message}"
            for message, jobs_ in problems.items()
        )
        raise ConfigError(
            f"{failed} of the sweep's {len(jobs)} jobs cannot run, so none was started: {details}"
        )
    return len(jobs)


def _check_data(cfg: TrainerConfig, checked: set[tuple]) -> None:
    """A task whose data cannot be built here must have them on disk (checked once per task)."""
    key = (cfg.task, cfg.dataset_root)
    if cfg.offline_data and key not in checked and not get_task(cfg.task).buildable:
        ensure_dataset(cfg.task, root=cfg.dataset_root, progress=False)  # only looks on disk
    checked.add(key)


class SweepPreflight(Callback):
    """Hydra callback of ``recipes/sweep.py``: :func:`check_sweep` before the first job starts.

    Registered in ``recipes/config/sweep.yaml`` (``hydra.callbacks``); a grid with a job that
    cannot run ends the sweep with the package's one-line error and status 1.

    Example:
        >>> SweepPreflight().on_multirun_start.__name__
        'on_multirun_start'
    """

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        """Check the whole grid (see :func:`check_sweep`)."""
        with reported():
            check_sweep(config)
