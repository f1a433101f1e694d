"""The algorithm registry: one registration per algorithm, its typed config and its yaml.

An algorithm is three things, and adding one touches only them:

1. its loss module in :mod:`torchrl_o3f.objectives` (e.g. ``objectives/iql.py``);
2. its :class:`Algorithm` in that file: a typed config dataclass (a subclass of
   :class:`AlgoConfig`), a policy builder that makes the acting module alone from the config,
   the observation size and the action spec, and a loss builder that makes the loss (with that
   policy and its critic) from the same and the offline data; the package registers the
   built-in algorithms in one explicit list (``objectives/__init__.py``), a user's with
   :func:`register_algorithm`;
3. one yaml, ``torchrl_o3f/config/algo/<name>.yaml``, holding every hyper-parameter as an
   explicit number. Per-task-family values are written in place with the ``o3f.family``
   resolver: ``expectile: ${o3f.family:0.7,{antmaze:0.9}}`` is 0.9 on antmaze tasks and 0.7
   elsewhere (the family of the config's root ``task``).

The yaml is the only place the numbers live: the dataclass fields have no defaults, so a
hyper-parameter missing from the yaml is an error, not a silent default, and the keyword
defaults of the loss constructors and factories are the yaml's generic values
(:func:`yaml_defaults`). The recipes compose the same yaml files through hydra
(``algo=<name>``); Python code gets them with :func:`algo_config`.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.data import TensorSpec
from torchrl.objectives import LossModule

from torchrl_o3f.envs import get_task
from torchrl_o3f.errors import O3FError, StrictFields

__all__ = [
    "AlgoConfig",
    "Algorithm",
    "UnknownAlgorithmError",
    "add_algorithm",
    "algo_config",
    "get_algorithm",
    "list_algorithms",
    "register_algorithm",
    "register_resolvers",
    "yaml_defaults",
]


class UnknownAlgorithmError(O3FError, KeyError):
    """An algorithm name the registry does not know; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


@dataclass
class AlgoConfig(StrictFields):
    """What every algorithm's config holds: networks, optimisation and its update plan.

    Subclasses add the algorithm's own hyper-parameters. No field has a default: the values
    come from the algorithm's yaml (see :func:`algo_config`).

    Attributes:
        name: the registered name (``"iql"``, ``"cql"``, ...).
        num_qvalue: critic ensemble size m.
        num_cells: width of every hidden layer.
        depth: hidden layers per network.
        layer_norm: LayerNorm in the critics.
        gamma: discount.
        tau: soft target update rate.
        batch_size: transitions per gradient step.
        lr: Adam learning rate per optimiser, keyed by the loss's parameter groups
            (``loss.parameter_groups()``); every group needs one.
        lr_schedule: per group, ``"constant"`` or ``"cosine"`` (cosine-annealed to 0 over the
            offline phase; the online phase then runs at the base rate).
        utd_ratio: gradient updates per env step online (updates per offline step are 1).
        actor_utd_ratio: how many of the ``utd_ratio`` online updates also update the actor
            (the last ones); the others update the critic only.
        actor_delay: the actor (and the groups that move with it) updates every
            ``actor_delay``-th update, offline and online (TD3's policy delay; 1: every update).
        normalize_observations: the networks that read observations (actor, critics, value)
            normalise them first, ``(s - mean) / (std + 1e-3)`` with the offline data's
            statistics held in their buffers (so the policy's state dict carries them); needs
            offline data.
        loosening: the hyper-parameter that makes the objective less conservative online and
            its looser value (the paper's Figure 3), e.g. ``{param: expectile, end: 0.85}``;
            used by ``anneal.mode=abrupt|linear``.

    Example:
        >>> cfg = algo_config("iql", task="antmaze-umaze")
        >>> cfg.name, cfg.expectile, cfg.lr["actor"]
        ('iql', 0.9, 0.0003)
    """

    name: str = MISSING
    num_qvalue: int = MISSING
    num_cells: int = MISSING
    depth: int = MISSING
    layer_norm: bool = MISSING
    gamma: float = MISSING
    tau: float = MISSING
    batch_size: int = MISSING
    lr: dict[str, float] = MISSING
    lr_schedule: dict[str, str] = MISSING
    utd_ratio: int = MISSING
    actor_utd_ratio: int = MISSING
    actor_delay: int = MISSING
    normalize_observations: bool = MISSING
    loosening: dict[str, Any] = field(default_factory=dict)

    def hyperparameters(self) -> dict[str, Any]:
        """The algorithm's own fields (those a subclass adds), as a plain dict."""
        base = {f.name for f in dataclasses.fields(AlgoConfig)}
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in base
        }


Builder = Callable[..., LossModule]
PolicyBuilder = Callable[..., TensorDictModuleBase]


@dataclass(frozen=True)
class Algorithm:
    """One registered algorithm.

    Attributes:
        name: the name used in configs (``algo=<name>``).
        config_class: its typed config (a subclass of :class:`AlgoConfig`).
        loss_class: its loss module's class (its ``policy_state_dict`` finds the acting
            module's entries in a loss state dict).
        build: ``build(cfg, *, observation_dim, action_spec, data, device) -> LossModule``;
            ``data`` is the offline TED TensorDict (``None`` for an online-only run) for
            data-derived settings (normalisation statistics, reward scales). It makes the
            loss's policy with ``build_policy``.
        build_policy: ``build_policy(cfg, *, observation_dim, action_spec, device) ->
            TensorDictModuleBase``: the acting module alone (``loss.policy``'s structure, with
            identity statistics), which a saved policy state dict loads into.
        description: one line for ``python -m torchrl_o3f algorithms``.
        needs_data: whether ``build`` cannot work without offline data.

    Example:
        >>> get_algorithm("iql").config_class.__name__
        'IQLConfig'
    """

    name: str
    config_class: type[AlgoConfig]
    loss_class: type[LossModule]
    build: Builder
    build_policy: PolicyBuilder
    description: str
    needs_data: bool = False

    def make_loss(
        self,
        cfg: AlgoConfig,
        *,
        observation_dim: int,
        action_spec: TensorSpec,
        data: TensorDictBase | None = None,
        device: torch.device | str | None = None,
    ) -> LossModule:
        """Build the loss (policy and critic included) of this algorithm from ``cfg``.

        Raises:
            ValueError: when the algorithm needs offline data and ``data`` is ``None``.
            ConfigError: ``cfg.normalize_observations`` without offline data.
        """
        if self.needs_data and data is None:
            raise ValueError(
                f"{self.name} needs the offline data to build its loss (normalisation "
                "statistics / reward scale); pass data=<TED TensorDict>"
            )
        return self.build(
            cfg, observation_dim=observation_dim, action_spec=action_spec, data=data, device=device
        )

    def make_policy(
        self,
        cfg: AlgoConfig,
        *,
        observation_dim: int,
        action_spec: TensorSpec,
        device: torch.device | str | None = None,
    ) -> TensorDictModuleBase:
        """Build the acting module alone (no loss, no critic, no data), to load a state into.

        Its state dict has the keys of ``loss.policy.state_dict()`` of the loss ``cfg`` builds;
        data-derived buffers (normalisation statistics) hold identity values until loaded.
        """
        return self.build_policy(
            cfg, observation_dim=observation_dim, action_spec=action_spec, device=device
        )


_ALGORITHMS: dict[str, Algorithm] = {}


def add_algorithm(algorithm: Algorithm) -> Algorithm:
    """Register ``algorithm`` under its name (the same object again is a no-op).

    Raises:
        ValueError: for another algorithm of a registered name, or a config that is not an
            AlgoConfig.

    Example:
        >>> add_algorithm(get_algorithm("iql")) is get_algorithm("iql")
        True
    """
    config = algorithm.config_class
    if not (isinstance(config, type) and issubclass(config, AlgoConfig)):
        raise ValueError(
            f"config of {algorithm.name!r} must be a subclass of AlgoConfig, got {config!r}"
        )
    known = _ALGORITHMS.get(algorithm.name)
    if known is not None and known != algorithm:
        raise ValueError(f"algorithm {algorithm.name!r} is already registered")
    _ALGORITHMS[algorithm.name] = algorithm
    return algorithm


def register_algorithm(
    name: str,
    *,
    config: type[AlgoConfig],
    loss: type[LossModule],
    policy: PolicyBuilder,
    description: str,
    needs_data: bool = False,
) -> Callable[[Builder], Builder]:
    """Register an algorithm: decorate its loss builder.

    Args:
        name: the config name (``algo=<name>``); its yaml is ``config/algo/<name>.yaml``.
        config: its typed config class (a dataclass subclass of :class:`AlgoConfig`).
        loss: its loss module's class.
        policy: its policy builder (see :class:`Algorithm`).
        description: one line describing it (with its source paper).
        needs_data: whether the builder needs the offline data.

    Raises:
        ValueError: for a name registered twice or a config that is not an AlgoConfig.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class MyConfig(AlgoConfig):
        ...     pass
        >>> def my_policy(cfg, *, observation_dim, action_spec, device):
        ...     raise NotImplementedError
        >>> @register_algorithm("my-algo", config=MyConfig, loss=LossModule, policy=my_policy,
        ...                     description="an example")
        ... def build_my_algo(cfg, *, observation_dim, action_spec, data, device):
        ...     raise NotImplementedError
        >>> get_algorithm("my-algo").description
        'an example'
        >>> _ = _ALGORITHMS.pop("my-algo")
    """

    def decorate(build: Builder) -> Builder:
        add_algorithm(Algorithm(name, config, loss, build, policy, description, needs_data))
        return build

    return decorate


def get_algorithm(name: str) -> Algorithm:
    """The registered algorithm of ``name``.

    Raises:
        UnknownAlgorithmError: for an unknown name, listing the known ones.

    Example:
        >>> get_algorithm("lapo").needs_data
        True
    """
    try:
        return _ALGORITHMS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_ALGORITHMS), n=2)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownAlgorithmError(
            f"unknown algorithm {name!r}.{hint} Registered: {', '.join(sorted(_ALGORITHMS))} "
            "(`python -m torchrl_o3f algorithms` lists them)."
        ) from None


def list_algorithms() -> list[Algorithm]:
    """Every registered algorithm, sorted by name.

    Example:
        >>> "iql" in [a.name for a in list_algorithms()]
        True
    """
    return [a for _, a in sorted(_ALGORITHMS.items())]


# ----------------------------------------------------------------------------- configs
def _family_of(task: str | None) -> str:
    if task in (None, "generic"):
        return "generic"

    return get_task(task).family


def _family_value(default: Any, table: Any = None, *, _root_: DictConfig) -> Any:
    """The ``o3f.family`` resolver: ``table[family of root.task]`` or ``default``."""
    task = _root_.get("task", None)
    family = _family_of(task)
    table = {} if table is None else table
    return table.get(family, default)


def _task_value(attribute: str, *, _root_: DictConfig) -> Any:
    """The ``o3f.task`` resolver: an attribute of the root ``task`` (e.g. its ``sigma``)."""
    return getattr(get_task(_root_.task), attribute)


def register_resolvers() -> None:
    """Register the ``o3f.family`` and ``o3f.task`` resolvers with OmegaConf (idempotent).

    ``${o3f.family:default,{family: value}}`` picks a value by the family of the config's root
    ``task``; ``${o3f.task:sigma}`` reads an attribute of that task.

    Example:
        >>> from omegaconf import OmegaConf
        >>> register_resolvers()
        >>> c = OmegaConf.create({"task": "antmaze-umaze", "x": "${o3f.family:1,{antmaze:2}}"})
        >>> c.x
        2
    """
    if not OmegaConf.has_resolver("o3f.family"):
        OmegaConf.register_new_resolver("o3f.family", _family_value)
    if not OmegaConf.has_resolver("o3f.task"):
        OmegaConf.register_new_resolver("o3f.task", _task_value)


def config_dir() -> str:
    """The folder of the packaged configs (``algo/<name>.yaml``); hydra: ``pkg://`` path.

    Example:
        >>> import os
        >>> os.path.isfile(os.path.join(config_dir(), "algo", "iql.yaml"))
        True
    """
    return str(resources.files("torchrl_o3f") / "config")


def _load_yaml(name: str) -> DictConfig:
    path = resources.files("torchrl_o3f") / "config" / "algo" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"algorithm {name!r} has no yaml at {path}")
    node = OmegaConf.load(str(path))
    node.pop("defaults", None)
    return node


def algo_yaml(name: str) -> DictConfig:
    """The algorithm's yaml as loaded, unresolved (per-family values not yet chosen).

    Raises:
        UnknownAlgorithmError: for an unknown name.
        FileNotFoundError: when a registered algorithm has no yaml (a packaging error).
    """
    get_algorithm(name)
    return _load_yaml(name)


def _resolve(node: DictConfig, task: str | None) -> dict[str, Any]:
    register_resolvers()
    root = OmegaConf.create({"task": task or "generic", "algo": node})
    return OmegaConf.to_container(root, resolve=True)["algo"]


def yaml_defaults(name: str) -> dict[str, Any]:
    """The generic values of ``config/algo/<name>.yaml`` (no task family), resolved.

    The keyword defaults of a loss's constructor and factory are read from here, so the yaml
    stays the one place an algorithm's numbers live (reading it needs no registration).

    Raises:
        FileNotFoundError: when there is no such yaml.

    Example:
        >>> defaults = yaml_defaults("cql")
        >>> defaults["lagrange_threshold"], defaults["lagrange"]
        (5.0, False)
    """
    return _resolve(_load_yaml(name), None)


def structured_config(name: str, values: Any) -> DictConfig:
    """``values`` merged into the typed schema of algorithm ``name`` (unknown keys raise)."""
    schema = OmegaConf.structured(get_algorithm(name).config_class)
    return OmegaConf.merge(schema, values)


def algo_config(
    name: str, *, task: str | None = None, overrides: dict[str, Any] | None = None
) -> AlgoConfig:
    """The typed, fully resolved config of algorithm ``name`` for ``task``'s family.

    Args:
        name: a registered algorithm.
        task: a task name of the registry (its family picks the per-family values), or
            ``None`` for the generic values.
        overrides: values replacing the yaml's (nested dicts merge), e.g. ``{"lr": {"actor":
            1e-4}}``.

    Raises:
        UnknownAlgorithmError: for an unknown algorithm.
        omegaconf.errors.ConfigKeyError: for an override of a field the algorithm does not have.

    Example:
        >>> cfg = algo_config("iql", task="hopper-medium", overrides={"batch_size": 64})
        >>> cfg.batch_size, cfg.expectile
        (64, 0.7)
    """
    _family_of(task)  # an unknown task: UnknownTaskError, listing the known ones
    node = OmegaConf.merge(algo_yaml(name), overrides or {})
    return OmegaConf.to_object(structured_config(name, _resolve(node, task)))
