"""The loss protocol: what the trainer may use of a loss, and the base that holds it once.

:class:`OfflineOnlineLoss` declares everything the trainer and its agent call on a loss;
:class:`EnsembleLoss` implements the plumbing every loss of the package shares (its keys, the
transition reading, TD(0) discounting, the reward transform, the critic-only objective's default
and the annealable hyper-parameters, declared with :class:`Annealable`). An algorithm subclasses
:class:`EnsembleLoss` and writes its maths: ``forward`` (and ``critic_loss`` where a critic-only
update is cheaper than the whole loss), ``policy``, ``parameter_groups``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import TensorSpec
from torchrl.objectives import LossModule, ValueEstimators

from torchrl_o3f.errors import ConfigError
from torchrl_o3f.modules.actors import action_bounds
from torchrl_o3f.modules.ensemble import QEnsemble
from torchrl_o3f.modules.networks import set_observation_statistics
from torchrl_o3f.objectives.common import module_params, observation_statistics, read_tensors

__all__ = [
    "Annealable",
    "EnsembleLoss",
    "OfflineOnlineLoss",
    "normalization_statistics",
    "normalize_networks",
]


@runtime_checkable
class OfflineOnlineLoss(Protocol):
    """What the trainer uses of a loss (every registered algorithm's loss meets it).

    Attributes:
        actor_groups: the parameter groups (:meth:`parameter_groups` names) left still by a
            critic-only update.
        annealable: the hyper-parameters a schedule may assign a float to (``anneal.param``).
        gamma: the discount (a scalar buffer).
    """

    actor_groups: tuple[str, ...]
    annealable: tuple[str, ...]
    gamma: torch.Tensor

    @property
    def policy(self) -> TensorDictModuleBase:
        """The module that acts: observation -> action (what the collector runs)."""

    @property
    def qvalue_network(self) -> nn.Module:
        """The Q ensemble the loss trains and the selector reads."""

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters per group; the trainer gives each group its own optimiser."""

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Every ``loss_*`` term of one update (and detached diagnostics)."""

    def critic_loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        """The terms of a critic-only update (its gradients reach no actor group)."""

    def transform_reward(self, reward: torch.Tensor) -> torch.Tensor:
        """The rewards as the loss learns from them (e.g. shifted and scaled)."""

    def observation_normalization(self) -> dict[str, torch.Tensor] | None:
        """The statistics the policy normalises observations with (``None``: it does not)."""


def normalization_statistics(cfg: Any, data: TensorDictBase | None) -> dict[str, torch.Tensor]:
    """The observation statistics a registered builder gives its networks (``{}``: none).

    ``cfg.normalize_observations`` false: ``{}`` (the networks have no normaliser); true: the
    offline data's :func:`~torchrl_o3f.objectives.common.observation_statistics`.

    Raises:
        ConfigError: ``normalize_observations`` without offline data (an online-only run).

    Example:
        >>> from types import SimpleNamespace
        >>> normalization_statistics(SimpleNamespace(normalize_observations=False), None)
        {}
    """
    if not cfg.normalize_observations:
        return {}
    if data is None:
        raise ConfigError(
            "algo.normalize_observations=true needs the offline data (observation mean and "
            "std); set algo.normalize_observations=false for an online-only run"
        )
    return observation_statistics(data)


def normalize_networks(
    *networks: nn.Module,
    observation_loc: torch.Tensor | None = None,
    observation_scale: torch.Tensor | None = None,
) -> None:
    """Give every network its observation statistics (both ``None``: leave them as they are).

    Raises:
        ValueError: for a network with no observation normaliser to hold them (build it with
            ``normalize_observations=True``).

    Example:
        >>> from torchrl_o3f.modules.networks import with_observation_normalizer
        >>> net = with_observation_normalizer(nn.Linear(2, 1), 2, True)
        >>> normalize_networks(net, observation_loc=torch.ones(2))
        >>> net[0].observation_loc
        tensor([1., 1.])
    """
    if observation_loc is None and observation_scale is None:
        return
    for net in networks:
        if not set_observation_statistics(net, observation_loc, observation_scale):
            raise ValueError(
                f"{type(net).__name__} has no observation normaliser to hold the statistics; "
                "build it with normalize_observations=True"
            )


class Annealable:
    """A hyper-parameter held in a scalar buffer ``_<name>``, assignable as a float.

    Reading the attribute gives the buffer (a tensor the update reads: no host sync, nothing
    recompiled when it changes); assigning a number checks it with ``check(loss, value)`` (which
    raises ``ValueError`` naming the fix) and fills the buffer in place. The loss registers the
    buffer in ``__init__`` (:meth:`EnsembleLoss.register_annealable`).

    Example:
        >>> class Toy(EnsembleLoss):
        ...     weight = Annealable("a weight", check=lambda loss, v: v >= 0 or "must be >= 0")
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.register_annealable("weight", 1.0)
        >>> toy = Toy()
        >>> toy.weight = 0.5
        >>> float(toy.weight), Toy.annealable
        (0.5, ('weight',))
        >>> try:
        ...     toy.weight = -1
        ... except ValueError as e:
        ...     print(e)
        weight must be >= 0, got -1.0
    """

    def __init__(self, doc: str, *, check: Callable[[nn.Module, float], bool | str] | None = None):
        self.__doc__ = doc
        self.check = check
        self.name = ""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, loss, owner=None):
        if loss is None:
            return self
        return getattr(loss, f"_{self.name}")

    def __set__(self, loss, value) -> None:
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{self.name} must be finite, got {value}")
        if self.check is not None:
            ok = self.check(loss, value)
            if ok is not True:
                raise ValueError(f"{self.name} {ok}, got {value}")
        getattr(loss, f"_{self.name}").fill_(value)


class _AnnealableNames:
    """``cls.annealable``: the names of the class's :class:`Annealable` attributes."""

    def __get__(self, loss, owner) -> tuple[str, ...]:
        return tuple(
            name
            for klass in reversed(owner.__mro__)
            for name, value in vars(klass).items()
            if isinstance(value, Annealable)
        )


class EnsembleLoss(LossModule):
    """The base of the package's losses: the plumbing of :class:`OfflineOnlineLoss`, once.

    It reads one-step transitions in the TED layout under its keys (``set_keys``), holds
    ``gamma`` (a buffer; ``make_value_estimator(gamma=...)``, TD(0) only), the reward transform
    ``r <- (r + reward_shift) * reward_scale`` (attributes a subclass sets), the actor groups
    (``("actor",)`` unless a subclass says otherwise) and a critic-only objective that is the
    whole loss unless a subclass has a cheaper one.

    Example:
        >>> from torchrl_o3f.objectives import IQLLoss, LAPOLoss, SACLoss
        >>> all(issubclass(c, EnsembleLoss) for c in (IQLLoss, LAPOLoss, SACLoss))
        True
        >>> IQLLoss.annealable
        ('expectile', 'temperature')
    """

    @dataclass
    class _AcceptedKeys:
        """Tensordict keys the loss reads and writes (change them with ``set_keys``).

        Attributes:
            observation: the observation (also read under ``"next"``).
            action: the dataset action.
            reward: the reward, read under ``"next"``.
            done: the done flag, read under ``"next"``.
            terminated: the termination flag (bootstrapping stops), read under ``"next"``.
            priority: where a loss that computes one writes the per-sample TD error.
        """

        observation: NestedKey = "observation"
        action: NestedKey = "action"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"
        priority: NestedKey = "td_error"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys
    default_value_estimator = ValueEstimators.TD0
    actor_groups: tuple[str, ...] = ("actor",)
    # loss state-dict prefix -> policy state-dict prefix (see policy_state_dict)
    _policy_entries: dict[str, str] = {"actor_network.": ""}
    # the discount until make_value_estimator: each built-in loss sets its yaml's
    _default_gamma: float = 0.99
    annealable = _AnnealableNames()
    # set by each loss: floats, or scalar buffers where the loss saves them (LAPO)
    reward_shift: float | torch.Tensor
    reward_scale: float | torch.Tensor

    @property
    def qvalue_network_params(self) -> TensorDictBase:
        """The ensemble's own parameters (the soft-update source; the very same tensors)."""
        return module_params(self.qvalue_network)

    @property
    def policy(self) -> TensorDictModuleBase:
        """The module to act with in a collector: the ``actor_network`` unless overridden."""
        return self.actor_network

    @classmethod
    def policy_state_dict(cls, loss_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The entries of :attr:`policy`'s state dict, out of the loss's state dict.

        A saved loss (a trainer checkpoint) loads into the policy alone with them: the entries
        under each prefix of ``_policy_entries`` (``{"actor_network.": ""}`` unless a subclass
        acts with other modules), renamed to the policy's prefix.
        """
        state = {}
        for key, value in loss_state.items():
            for head, policy_head in cls._policy_entries.items():
                if key.startswith(head):
                    state[policy_head + key[len(head) :]] = value
                    break
        return state

    @classmethod
    def _check_ensemble(cls, qvalue_network) -> None:
        """Raise ``TypeError`` unless the critic is the ``QEnsemble`` the loss trains in place."""
        if not isinstance(qvalue_network, QEnsemble):
            raise TypeError(
                f"{cls.__name__}: qvalue_network must be a torchrl_o3f.modules.QEnsemble (the "
                "ensemble trained in place and shared with the selector), got "
                f"{type(qvalue_network).__name__}"
            )

    def observation_normalization(self) -> dict[str, torch.Tensor] | None:
        """``{"observation_loc", "observation_scale"}`` the policy normalises with, or ``None``.

        Read from the first network of :attr:`policy` that holds them (copies, on the CPU); a
        policy without an observation normaliser gives ``None``. The statistics are buffers
        of the networks, so checkpoints and the deployed ``policy.pt`` carry them. Read once,
        when the run's record is written (a copy to the host: not for the update step).
        """
        for module in self.policy.modules():
            loc = getattr(module, "observation_loc", None)
            scale = getattr(module, "observation_scale", None)
            if isinstance(loc, torch.Tensor) and isinstance(scale, torch.Tensor):
                return {
                    "observation_loc": loc.detach().cpu().clone(),
                    "observation_scale": scale.detach().cpu().clone(),
                }
        return None

    def _register_bounds_and_gamma(self, action_spec: TensorSpec | None, device) -> None:
        """Buffers ``gamma`` (the yaml's until set) and, given a spec, the action bounds."""
        if action_spec is not None:
            low, high = action_bounds(action_spec)
            self.register_buffer("action_low", low.to(device))
            self.register_buffer("action_high", high.to(device))
        self.register_buffer("gamma", torch.tensor(self._default_gamma, device=device))

    def register_annealable(self, name: str, value: float, device=None) -> None:
        """Create the buffer of the :class:`Annealable` ``name`` and assign ``value`` (checked)."""
        self.register_buffer(f"_{name}", torch.tensor(0.0, device=device))
        setattr(self, name, value)

    @property
    def in_keys(self) -> list:
        """The keys read from the input tensordict."""
        k = self.tensor_keys
        return [
            k.observation,
            k.action,
            ("next", k.observation),
            ("next", k.reward),
            ("next", k.done),
            ("next", k.terminated),
        ]

    def _read_transition(self, td: TensorDictBase):
        """``(observation, action, next observation, reward, terminated)`` of a batch."""
        k = self.tensor_keys
        return read_tensors(
            td,
            [
                k.observation,
                k.action,
                ("next", k.observation),
                ("next", k.reward),
                ("next", k.terminated),
            ],
            type(self).__name__,
        )

    def transform_reward(self, reward: torch.Tensor) -> torch.Tensor:
        """``(reward + reward_shift) * reward_scale``.

        A float identity step is skipped (exactly the same numbers); a tensor is always applied
        (no branch on a tensor's value: no host sync).
        """
        shift, scale = self.reward_shift, self.reward_scale
        if isinstance(shift, torch.Tensor) or shift != 0.0:
            reward = reward + shift
        if isinstance(scale, torch.Tensor) or scale != 1.0:
            reward = reward * scale
        return reward

    def critic_loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        """The terms of a critic-only update: the whole loss, unless the subclass has less."""
        return self(tensordict)

    def _set_gamma(self, value_type, hyperparams: dict) -> float:
        """Validate ``make_value_estimator``'s arguments (TD(0) only) and set ``gamma``."""
        name = type(self).__name__
        if value_type is not None and value_type != ValueEstimators.TD0:
            raise NotImplementedError(f"{name} uses one-step TD(0) targets only, got {value_type}")
        gamma = hyperparams.pop("gamma", None)
        gamma = float(self.gamma if gamma is None else gamma)
        if hyperparams:
            raise TypeError(f"unexpected value-estimator arguments {sorted(hyperparams)}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.gamma.fill_(gamma)
        return gamma

    def make_value_estimator(self, value_type: ValueEstimators | None = None, **hyperparams):
        """Set the discount: ``loss.make_value_estimator(gamma=0.99)`` (TD(0) only)."""
        self._set_gamma(value_type, hyperparams)
