"""What a run records about itself: the resolved config, written as ``config.yaml``.

The record holds every number a run uses: the trainer config with each default filled in (the
algorithm's numbers for the task's family, sigma, the episode cap, the dataset size), the online
algorithm's config, values the run derived from its data (the loss's reward scales and the
observation statistics its networks normalise with), the dataset it trained on, the versions of
the libraries that ran it and the code's provenance (the package version, its git commit and
whether the checkout had uncommitted changes). It is written to the run directory, stored in
every checkpoint and sent to the logger; :func:`config_from_record` turns it back into a
:class:`~torchrl_o3f.trainers.config.TrainerConfig` that rebuilds the same agent.
"""

from __future__ import annotations

import dataclasses
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from torchrl_o3f._version import __file__ as _version_file
from torchrl_o3f._version import __version__
from torchrl_o3f.objectives.registry import structured_config, yaml_defaults
from torchrl_o3f.trainers.checkpoint import write_atomic
from torchrl_o3f.trainers.config import (
    AnnealConfig,
    BudgetConfig,
    CompileConfig,
    ExplorationConfig,
    LoggerConfig,
    TrainerConfig,
)

__all__ = [
    "EXTENDABLE_KEYS",
    "RECORD_ONLY_KEYS",
    "RENAMED_KEYS",
    "RESUME_SAFE_KEYS",
    "config_from_record",
    "flatten",
    "library_versions",
    "method_name",
    "method_of",
    "upgrade_algo_record",
    "normalization_before_option",
    "provenance",
    "resolved_record",
    "resume_conflicts",
    "static_record",
    "write_config",
]

_LIBRARIES = ("torchrl-o3f", "torch", "torchrl", "tensordict", "gymnasium", "mujoco", "minari")


def library_versions() -> dict[str, str]:
    """Python and the installed versions of the libraries a run depends on.

    Example:
        >>> sorted(library_versions())[:3]
        ['gymnasium', 'minari', 'mujoco']
    """
    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _git(root: Path, *args: str) -> str | None:
    """``git -C root <args>``'s output, or ``None`` where git is missing or fails."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def provenance() -> dict[str, Any]:
    """Which code ran: the package version, its git commit and whether the checkout was dirty.

    The commit is that of the git checkout holding the imported package (an editable install or
    ``PYTHONPATH``); ``dirty`` is whether tracked files differ from that commit (untracked files,
    such as run outputs, do not count). Both are ``None`` where the package is not in a git
    checkout of its own (an installed wheel) or git is missing: the record then says unknown,
    and a run never fails for it.

    Example:
        >>> sorted(provenance())
        ['dirty', 'git_commit', 'version']
    """
    root = Path(_version_file).resolve().parent.parent
    top = _git(root, "rev-parse", "--show-toplevel")
    commit = dirty = None
    if top is not None and Path(top).resolve() == root:  # the checkout is the package's own
        commit = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
        dirty = None if commit is None or status is None else bool(status)
    return {"version": __version__, "git_commit": commit, "dirty": dirty}


def method_name(cfg: TrainerConfig) -> str:
    """A run's method as titles and the analysis name it: ``O3F-IQL``, ``IQL + gaussian``, ...

    ``<ALGO> -> <ONLINE ALGO> (<exploration>)`` for a run that switches its objective online.

    Example:
        >>> method_name(TrainerConfig(task="hopper-medium", algo="iql"))
        'O3F-IQL'
    """
    online = cfg.online_algo if cfg.switches() else cfg.algo.name
    return _method(cfg.algo.name, online, cfg.exploration.mode)


def method_of(record: dict[str, Any]) -> str:
    """The method of a run's resolved config (``config.yaml``).

    Its ``method`` key if set, else :func:`method_name`'s label of the same run.

    Example:
        >>> method_of({"algo": {"name": "iql"}, "exploration": {"mode": "o3f"}})
        'O3F-IQL'
    """
    if record.get("method"):
        return str(record["method"])
    algo = record["algo"]["name"]
    return _method(algo, record.get("online_algo") or algo, record["exploration"]["mode"])


def _method(algo: str, online: str, mode: str) -> str:
    if online != algo:
        return f"{algo.upper()} -> {online.upper()} ({mode})"
    if mode == "o3f":
        return f"O3F-{algo.upper()}"
    return f"{algo.upper()} + {mode}" if mode != "none" else algo.upper()


def _scalar(value: Any) -> Any:
    try:
        return float(value) if hasattr(value, "item") and value.numel() == 1 else value
    except (TypeError, AttributeError):
        return value


def static_record(cfg: TrainerConfig) -> dict[str, Any]:
    """The config with the defaults that need no data filled in (what resumes compare).

    Filled: the exploration sigma, the episode cap, the online algorithm's config, the
    loosening target.
    """
    record = dataclasses.asdict(cfg)
    record["algo"] = dataclasses.asdict(cfg.algo)
    record["online_algo"] = cfg.online_config().name
    record["online"] = dataclasses.asdict(cfg.online_config())
    record["exploration"]["sigma"] = cfg.sigma()
    record["budget"]["max_episode_steps"] = cfg.max_episode_steps()
    loosening = cfg.online_config().loosening or {}
    target = cfg.anneal_target() or (loosening.get("param"), loosening.get("end"))
    record["anneal"]["param"], record["anneal"]["end"] = target
    return record


def resolved_record(trainer) -> dict[str, Any]:
    """The resolved config of a built :class:`~torchrl_o3f.trainers.OfflineOnlineTrainer`."""
    record = static_record(trainer.cfg)
    state = getattr(trainer, "_resume_state", None)
    if trainer.cfg.resume and state is not None:  # where the resumed run started from
        started = (state.get("meta", {}).get("config") or {}).get("offline_checkpoint")
        record["offline_checkpoint"] = started
    record["logger"]["exp_name"] = trainer.exp_name()
    derived = {
        "dataset_id": trainer.dataset_id,
        "num_offline": int(trainer.num_offline),
        "device": str(trainer.device),
        "exp_name": trainer.exp_name(),
        "env": trainer.env_used(),
    }
    if state is not None:  # the checkpoint this sitting started from
        derived["resumed_from"] = trainer.resumed_from
    for name in ("reward_scale", "reward_shift", "lam"):
        value = getattr(trainer.agent.loss, name, None)
        if value is not None:
            derived[f"loss.{name}"] = _scalar(value)
    statistics = trainer.agent.loss.observation_normalization()  # None: raw observations
    for name, value in (statistics or {}).items():
        derived[f"loss.{name}"] = [float(v) for v in value.reshape(-1)]
    record["derived"] = derived
    record["versions"] = library_versions()
    record["provenance"] = provenance()
    return record


RECORD_ONLY_KEYS = ("derived", "versions", "provenance")
"""Keys of a record that are not config: what the run derived from its data, the libraries and
the code that ran it. A resume does not compare them (a run resumed with another commit or
library is the same run), and :func:`config_from_record` drops them."""

RESUME_SAFE_KEYS = (
    "resume",
    "output_dir",
    "progress",
    "device",
    "dataset_root",
    "logger",
    "extend",
    "offline_checkpoint",
    "method",
    "compile",
    "overwrite",
)
"""Keys a resumed run may change: where and how it runs and logs, not what it computes
(``offline_checkpoint`` only matters when a run starts; ``method`` is a label; ``compile`` runs
the same maths, and checkpoints are the same with and without it)."""

ADDED_KEYS: dict[str, Any] = {
    "budget.warmup_frames": 0,
    "offline_data": True,
    "compile.compile": False,
    "compile.mode": "default",
    "compile.cudagraphs": False,
    "switch_fresh": False,
    "overwrite": False,
}
"""Keys added after runs were first recorded, with the value every older run had: a record that
lacks one of them ran with that value, so resuming it with that value is the same run."""


RENAMED_KEYS = {"lapo": {"lam": "q_min_weight"}}
"""Algorithm keys renamed since runs were first recorded: ``{algo: {old: new}}``."""


def upgrade_algo_record(algo: dict[str, Any]) -> dict[str, Any]:
    """An algorithm's recorded config in today's names (renamed keys; options added since).

    Example:
        >>> upgrade_algo_record({"name": "lapo", "lam": 0.7})["q_min_weight"]
        0.7
    """
    renamed = RENAMED_KEYS.get(algo.get("name"), {})
    algo = {renamed.get(k, k): v for k, v in algo.items()}
    if "normalize_observations" not in algo:  # recorded before the option existed
        algo["normalize_observations"] = normalization_before_option(algo)
    return algo


def normalization_before_option(algo: dict[str, Any]) -> bool:
    """What a run recorded before ``algo.normalize_observations`` existed did: its yaml's value.

    TD3+BC recorded it; LAPO's CVAE always z-scored states (true); the others never normalised
    (false), which their yaml files say.

    Example:
        >>> [normalization_before_option({"name": name}) for name in ("iql", "lapo")]
        [False, True]
    """
    return bool(yaml_defaults(algo["name"])["normalize_observations"])


EXTENDABLE_KEYS = ("budget.offline_steps", "budget.online_frames")
"""Keys a resumed run may raise with ``extend=true`` (to continue a finished run further)."""


def _flat_differences(mine: dict, stored: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(mine) | set(stored)):
        name = f"{prefix}{key}"
        a, b = mine.get(key), stored.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _flat_differences(a, b, f"{name}.")
        elif a != b:
            out.append(name)
    return out


def resume_conflicts(cfg: TrainerConfig, stored: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, this value, the run's value)`` for every key where ``cfg`` would make another run.

    The keys of :data:`RESUME_SAFE_KEYS` may differ; with ``cfg.extend`` the budgets of
    :data:`EXTENDABLE_KEYS` may change (the trainer refuses one below what the run has done).

    Example:
        >>> cfg = TrainerConfig(task="hopper-medium", algo="iql")
        >>> stored = static_record(cfg)
        >>> cfg.seed = 3
        >>> resume_conflicts(cfg, stored)
        [('seed', 3, 0)]
    """
    mine = static_record(cfg)
    stored = {k: v for k, v in stored.items() if k not in RECORD_ONLY_KEYS}
    for key in ("algo", "online"):  # in today's names, with the options added since
        if isinstance(stored.get(key), dict):
            stored[key] = upgrade_algo_record(stored[key])
    conflicts = []
    for key in _flat_differences(mine, stored):
        if key.split(".")[0] in RESUME_SAFE_KEYS:
            continue
        a, b = _get(mine, key), _get(stored, key)
        if key in ADDED_KEYS and b is None and a == ADDED_KEYS[key]:
            continue  # recorded before the key existed, with the value it had then
        if key in EXTENDABLE_KEYS and cfg.extend:
            continue  # the trainer checks the budget against what the run has done
        conflicts.append((key, a, b))
    return conflicts


def _get(record: dict, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(record, dict):
            return None
        record = record.get(part)
    return record


def write_config(record: dict[str, Any], path: str | Path) -> Path:
    """Write ``record`` as yaml, atomically."""
    from omegaconf import OmegaConf

    text = OmegaConf.to_yaml(OmegaConf.create(record)).encode()
    return write_atomic(path, lambda f: f.write(text))


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"algo": {"lr": {"actor": 3e-4}}}`` -> ``{"algo.lr.actor": 3e-4}`` (for logger hparams).

    Example:
        >>> flatten({"algo": {"lr": {"actor": 3e-4}}, "seed": 0})
        {'algo.lr.actor': 0.0003, 'seed': 0}
    """
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_from_record(record: dict[str, Any] | str | Path) -> TrainerConfig:
    """Rebuild the :class:`TrainerConfig` of a run from its record (or its ``config.yaml``).

    Raises:
        omegaconf.errors.ConfigKeyError: when the record names a field the config lacks.

    Example:
        >>> cfg = TrainerConfig(task="hopper-medium", algo="iql")
        >>> record = dataclasses.asdict(cfg) | {"algo": dataclasses.asdict(cfg.algo)}
        >>> config_from_record(record).algo.expectile
        0.7
    """
    from omegaconf import OmegaConf

    if isinstance(record, (str, Path)):
        record = OmegaConf.to_container(OmegaConf.load(str(record)))
    values = dict(record)
    for key in (*RECORD_ONLY_KEYS, "online"):
        values.pop(key, None)
    algo = upgrade_algo_record(values.pop("algo"))
    nested = {
        "exploration": ExplorationConfig,
        "budget": BudgetConfig,
        "logger": LoggerConfig,
        "anneal": AnnealConfig,
        "compile": CompileConfig,
    }
    for key, cls in nested.items():
        values[key] = cls(**values.get(key, {}))
    if values.get("online_algo") == algo["name"]:
        values["online_algo"] = None
    values["algo"] = OmegaConf.to_object(structured_config(algo["name"], algo))
    return TrainerConfig(**values)
