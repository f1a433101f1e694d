"""The loss protocol: what the trainer may use of a loss, and the base that holds it once.

:class:`OfflineOnlineLoss` declares everything the trainer and its agent call on a loss;
:class:`EnsembleLoss` implements the plumbing every loss of the package shares (its keys, the
transition reading, TD(0) discounting, the reward transform, the critic-only objective's default
and the annealable hyper-parameters, declared with :class:`Annealable`). An algorithm subclasses
:class:`EnsembleLoss` and writes its maths: ``forward`` (and ``critic_loss`` where a critic-only
update is cheaper than the whole loss), ``policy``, ``parameter_groups``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.objectives import LossModule, ValueEstimators

from torchrl_o3f.objectives.common import module_params, read_tensors

__all__ = ["Annealable", "EnsembleLoss", "OfflineOnlineLoss"]


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
