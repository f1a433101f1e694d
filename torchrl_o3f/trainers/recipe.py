"""Hydra glue shared by the recipes: the typed schema, budget presets and the run function."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from torchrl_o3f.trainers.config import (
    BUDGETS,
    AlgoConfig,
    AnnealConfig,
    BudgetConfig,
    ExplorationConfig,
    LoggerConfig,
    TrainerConfig,
)

__all__ = ["register_configs", "config_from_hydra", "run_recipe"]


def register_configs() -> None:
    """Register the typed schema (``trainer_schema``) and the ``budget`` presets with hydra.

    The recipes' yaml files extend ``trainer_schema``, so a misspelt key or a value of the
    wrong type is an error before anything runs. The budget presets (``smoke``, ``cpu``,
    ``paper``) come from :data:`~torchrl_o3f.trainers.config.BUDGETS`.
    """
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="trainer_schema", node=TrainerConfig)
    for name, budget in BUDGETS.items():
        cs.store(group="budget", name=name, node=budget)


def _build(cls, values: dict[str, Any]):
    kwargs = {}
    for f in fields(cls):
        if f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


def config_from_hydra(cfg) -> TrainerConfig:
    """Turn a hydra/omegaconf config into a validated :class:`TrainerConfig`."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(cfg, resolve=True)
    nested = {
        "algo": AlgoConfig,
        "exploration": ExplorationConfig,
        "budget": BudgetConfig,
        "logger": LoggerConfig,
    }
    values = {k: v for k, v in raw.items() if k not in nested and k != "anneal"}
    for key, cls in nested.items():
        values[key] = _build(cls, raw.get(key) or {})
    values["anneal"] = [_build(AnnealConfig, a) for a in raw.get("anneal") or []]
    return _build(TrainerConfig, values).validate()


def run_recipe(cfg) -> dict[str, Any]:
    """Run the trainer from a hydra config and print the one-line summary.

    A run stopped by a signal prints how to resume it and exits with
    :data:`~torchrl_o3f.trainers.checkpoint.EXIT_RESUMABLE` (1 if it stopped before its first
    checkpoint).
    """
    from hydra.core.hydra_config import HydraConfig

    from torchrl_o3f.trainers.trainer import OfflineOnlineTrainer

    config = config_from_hydra(cfg)
    if config.resume and Path(config.resume).is_dir():
        config.output_dir = config.resume
    elif config.output_dir == ".":
        config.output_dir = HydraConfig.get().runtime.output_dir
    summary = OfflineOnlineTrainer(config).train()
    if summary.get("stopped"):
        import sys

        from torchrl_o3f.trainers.checkpoint import EXIT_RESUMABLE

        if summary.get("resumable", True):
            print(
                f"stopped at offline step {summary['step']} / online frame {summary['frames']}; "
                f"resume with: resume={config.output_dir}"
            )
            sys.exit(EXIT_RESUMABLE)  # not 0: the run is not finished, but it can go on
        print("stopped before any checkpoint was written: nothing to resume", file=sys.stderr)
        sys.exit(1)
    print(
        f"[{summary['task']}] O3F-{summary['algo'].upper()} ({summary['exploration']}): "
        f"normalised score {summary['score_after_offline']:.1f} after offline -> "
        f"{summary['score_after_online']:.1f} after online "
        f"(return {summary['return_after_offline']:.0f} -> {summary['return_after_online']:.0f}, "
        f"{summary['wall_time_s'] / 60:.1f} min, outputs in {config.output_dir})"
    )
    return summary
