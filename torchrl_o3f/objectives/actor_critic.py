"""The base of the actor-critic baselines: an actor and a TD(0) ensemble critic.

:class:`ActorCriticLoss` holds what SAC, CQL, AWAC and TD3+BC share on a shared
:class:`~torchrl_o3f.modules.QEnsemble` (trained in place): policy sampling inside a loss and
the TD(0) regression of the ensemble onto a target computed with the target members.
:class:`~torchrl_o3f.objectives.SACLoss` adds the entropy terms,
:class:`~torchrl_o3f.objectives.CQLLoss` the conservative term to SAC,
:class:`~torchrl_o3f.objectives.AWACLoss` advantage-weighted regression for the actor, and
:class:`~torchrl_o3f.objectives.TD3BCLoss` a deterministic actor with TD3's smoothed target.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from omegaconf import MISSING
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import ProbabilisticTensorDictSequential
from torch import nn
from torchrl.data import TensorSpec
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import ValueEstimators
from torchrl.objectives.value import TD0Estimator

from torchrl_o3f.modules.actors import action_bounds
from torchrl_o3f.modules.ensemble import QEnsemble, ensemble_reduce
from torchrl_o3f.objectives.base import EnsembleLoss, normalize_networks
from torchrl_o3f.objectives.common import make_target_params, module_params
from torchrl_o3f.objectives.registry import AlgoConfig

__all__ = ["ActorCriticConfig", "ActorCriticLoss", "actor_critic_kwargs", "make_actor_critic_loss"]

_REDUCTIONS = ("min", "mean", "subset_min")


class ActorCriticLoss(EnsembleLoss):
    r"""The shared part of SAC, CQL, AWAC and TD3+BC: an actor and a ``QEnsemble`` trained by TD(0).

    For a batch ``(s, a, r, s', terminated)`` with ``r <- (r + reward_shift) * reward_scale``:

    .. math::

        L_Q = \textstyle\sum_i \mathbb{E}\,(Q_i(s, a) - r - \gamma (1 - d)\, V'(s'))^2

    where ``V'(s')`` is ``reduce_i Q'_i(s', a')`` over the target members (``"min"``, ``"mean"``
    or the min over a random subset of ``subset_size`` members) with ``a'`` drawn from the
    policy (``backup="sampled"``), the policy's deterministic action (``"mean"``), or, for SAC,
    drawn with the entropy bonus ``- alpha log pi(a'|s')`` (``"soft"``).

    Subclasses define ``_actor_terms`` (and may extend ``_critic_terms``; a subclass with
    another kind of actor overrides ``_check_actor`` and ``_next_value``). The ensemble passed
    in is trained in place: its parameters are the loss's ``qvalue`` group, no copy is made.

    Args:
        actor_network: a :class:`~tensordict.nn.ProbabilisticTensorDictSequential` reading the
            observation (its first in_key) and building its distribution from ``loc``/``scale``
            style parameters (e.g. :func:`~torchrl_o3f.modules.actors.make_sac_actor`).
        qvalue_network: the :class:`~torchrl_o3f.modules.QEnsemble` to train.

    Keyword Args (no defaults here: each algorithm's loss takes them from its yaml):
        action_spec: the bounded action spec (its bounds project sampled actions and give the
            action size).
        backup: ``"sampled"``, ``"mean"`` (or ``"soft"`` where the subclass has an entropy
            coefficient).
        qvalue_reduction: ``"min"``, ``"mean"`` or ``"subset_min"`` over the target members.
        subset_size: subset size for ``"subset_min"``.
        reward_scale: rewards are multiplied by this, after the shift.
        reward_shift: added to rewards.

    Raises:
        TypeError: for a critic that is not a ``QEnsemble`` or an actor without ``get_dist``.
        ValueError: for an unknown backup or reduction, or a subset larger than the ensemble.
    """

    target_qvalue_network_params: TensorDictParams
    _backups: tuple[str, ...] = ("sampled", "mean")

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_network: QEnsemble,
        *,
        action_spec: TensorSpec,
        backup: str,
        qvalue_reduction: str,
        subset_size: int,
        reward_scale: float,
        reward_shift: float,
    ):
        name = type(self).__name__
        self._check_ensemble(qvalue_network)
        self._check_actor(actor_network)
        if backup not in self._backups:
            raise ValueError(f"{name}: backup must be one of {self._backups}, got {backup!r}")
        if qvalue_reduction not in _REDUCTIONS:
            raise ValueError(
                f"{name}: qvalue_reduction must be one of {_REDUCTIONS}, got {qvalue_reduction!r}"
            )
        m = qvalue_network.num_members
        if qvalue_reduction == "subset_min" and not 1 <= subset_size <= m:
            raise ValueError(f"{name}: subset_size must be in [1, {m}], got {subset_size}")
        low, high = action_bounds(action_spec)
        if low.numel() != qvalue_network.action_dim:
            raise ValueError(
                f"{name}: the action spec has {low.numel()} dimensions but the ensemble takes "
                f"actions of {qvalue_network.action_dim}"
            )
        super().__init__()
        self.actor_network = actor_network
        self.qvalue_network = qvalue_network
        self.target_qvalue_network_params = make_target_params(qvalue_network)
        self._has_update_associated["qvalue_network"] = False
        self._register_bounds_and_gamma(action_spec, qvalue_network.device)
        self.backup = backup
        self.qvalue_reduction = qvalue_reduction
        self.subset_size = int(subset_size)
        self.reward_scale = float(reward_scale)
        self.reward_shift = float(reward_shift)
        self.make_value_estimator(gamma=self._default_gamma)

    @classmethod
    def _check_actor(cls, actor_network) -> None:
        """Raise ``TypeError`` for an actor the loss cannot train (one with no distribution)."""
        if not hasattr(actor_network, "get_dist_params"):
            raise TypeError(
                f"{cls.__name__}: actor_network must be a probabilistic actor (a tensordict "
                "ProbabilisticTensorDictSequential such as torchrl's ProbabilisticActor), got "
                f"{type(actor_network).__name__}"
            )

    # ----------------------------------------------------------------- torchrl plumbing
    @property
    def actor_network_params(self) -> TensorDictBase:
        """The actor's own parameters (the very same tensors)."""
        return module_params(self.actor_network)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters per optimiser: ``actor`` and ``qvalue`` (subclasses add)."""
        return {
            "actor": list(self.actor_network.parameters()),
            "qvalue": list(self.qvalue_network.parameters()),
        }

    def make_value_estimator(self, value_type: ValueEstimators | None = None, **hyperparams):
        """Set the discount: ``loss.make_value_estimator(gamma=0.99)`` (TD(0) only).

        The loss computes ``r + gamma * (1 - terminated) * V'(s')`` on plain tensors;
        ``loss.value_estimator`` is the equivalent torchrl ``TD0Estimator``, for inspection.
        """
        gamma = self._set_gamma(value_type, hyperparams)
        self._value_estimator = TD0Estimator(
            gamma=gamma, value_network=None, shifted=False, skip_existing=False
        )

    # ----------------------------------------------------------------- policy and critic
    def _policy_params(self, obs: torch.Tensor) -> TensorDictBase:
        """The actor's distribution parameters at ``obs`` (one actor network call)."""
        key = self.actor_network.in_keys[0]
        return self.actor_network.get_dist_params(TensorDict({key: obs}, batch_size=obs.shape[:-1]))

    def _dist(self, obs: torch.Tensor, num_samples: int | None = None, *, params=None):
        """The policy's distribution at ``obs`` (``[*B]``), or repeated ``[*B, num_samples]``.

        The actor network runs once per observation (or not at all when its output ``params``
        is given); repeated samples share its output.
        """
        params = self._policy_params(obs) if params is None else params
        if num_samples is not None:
            params = params.unsqueeze(-1).expand(*params.batch_size, num_samples)
        return self.actor_network.build_dist_from_params(params)

    def _project(self, action: torch.Tensor) -> torch.Tensor:
        """Onto the action bounds, as the acting policy does (a no-op for TanhNormal samples)."""
        return torch.clamp(action, self.action_low, self.action_high)

    def _sample(self, obs: torch.Tensor, num_samples: int | None = None, *, params=None):
        """``(action, log_prob)`` drawn (reparameterised) from the policy at ``obs``.

        Shapes ``[*B, A]`` and ``[*B, 1]``, or ``[*B, num_samples, A]`` / ``[*B, num_samples,
        1]``. The log-probability scores the drawn pre-squashing value (exact for TanhNormal).
        """
        with set_exploration_type(ExplorationType.RANDOM):
            dist = self._dist(obs, num_samples, params=params)
            if hasattr(dist, "rsample_and_log_prob"):
                action, log_prob = dist.rsample_and_log_prob()
            else:
                action = dist.rsample()
                log_prob = dist.log_prob(action)
        return self._project(action), log_prob.unsqueeze(-1)

    def _detached_qvalue_params(self) -> TensorDictBase:
        """The ensemble's parameters cut from the graph: Q read by another loss term."""
        return module_params(self.qvalue_network).detach()

    def _target_q(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``reduce_i Q'_i(obs, act)`` over the target members, ``[*B, 1]``, no gradient.

        ``"subset_min"`` evaluates only the drawn members.
        """
        with torch.no_grad():
            params = self.target_qvalue_network_params
            if self.qvalue_reduction == "subset_min":
                m = self.qvalue_network.num_members
                members = torch.randperm(m, device="cpu")[: self.subset_size].to(obs.device)
                return self.qvalue_network.values(obs, act, params, members=members).min(0).values
            return ensemble_reduce(
                self.qvalue_network.values(obs, act, params), self.qvalue_reduction
            )

    def _entropy_coefficient(self) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no entropy coefficient")

    def _next_value(self, next_obs: torch.Tensor) -> torch.Tensor:
        """V'(s') of the backup, ``[*B, 1]``, no gradient."""
        with torch.no_grad():
            if self.backup == "mean":
                with set_exploration_type(ExplorationType.DETERMINISTIC):
                    action = self._project(self._dist(next_obs).deterministic_sample)
                return self._target_q(next_obs, action)
            action, log_prob = self._sample(next_obs)
            value = self._target_q(next_obs, action)
            if self.backup == "soft":
                value = value - self._entropy_coefficient() * log_prob
            return value

    # ----------------------------------------------------------------- the maths
    def _read(self, td: TensorDictBase):
        obs, act, next_obs, reward, terminated = self._read_transition(td)
        reward = self.transform_reward(reward.reshape(*act.shape[:-1], 1))
        return obs, act, next_obs, reward, terminated.reshape(reward.shape)

    def _critic_terms(self, obs, act, next_obs, reward, terminated):
        """``({"loss_qvalue": ...}, diagnostics, pred [m, *B, 1], td_error [*B, 1])``."""
        target = reward + self.gamma * (~terminated.bool()) * self._next_value(next_obs)
        pred = self.qvalue_network.values(obs, act)  # [m, *B, 1]
        loss_qvalue = (pred - target).square().mean(tuple(range(1, pred.dim()))).sum()
        with torch.no_grad():
            diagnostics = {
                "qvalue_mean": pred.mean(),
                "qvalue_std": pred.std(0, correction=0).mean(),
                "target_mean": target.mean(),
            }
            td_error = (pred - target).abs().max(0).values
        return {"loss_qvalue": loss_qvalue}, diagnostics, pred, td_error

    def _actor_terms(self, obs, act, pred):
        """``(losses, diagnostics)`` of the actor (and what moves with it); ``pred``: Q(s, a)."""
        raise NotImplementedError

    def _write_priority(self, td: TensorDictBase, td_error: torch.Tensor) -> None:
        if td.batch_dims:
            td.set(self.tensor_keys.priority, td_error.reshape(td.batch_size))

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Every ``loss_*`` term (their sum is what to backpropagate) plus diagnostics.

        The per-sample max-over-members TD error is written to ``tensordict[priority]``.
        """
        obs, act, next_obs, reward, terminated = self._read(tensordict)
        critic, critic_diag, pred, td_error = self._critic_terms(
            obs, act, next_obs, reward, terminated
        )
        actor, actor_diag = self._actor_terms(obs, act, pred.detach())
        self._write_priority(tensordict, td_error)
        return TensorDict({**critic, **actor, **critic_diag, **actor_diag}, batch_size=[])

    def critic_loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        """The critic's ``loss_*`` terms alone (critic-only updates), plus ``qvalue_mean``."""
        obs, act, next_obs, reward, terminated = self._read(tensordict)
        critic, diag, _, td_error = self._critic_terms(obs, act, next_obs, reward, terminated)
        self._write_priority(tensordict, td_error)
        return TensorDict({**critic, "qvalue_mean": diag["qvalue_mean"]}, batch_size=[])

    def actor_loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        """The actor's ``loss_*`` terms alone (and those of what moves with it)."""
        obs, act, *_ = self._read(tensordict)
        with torch.no_grad():
            pred = self.qvalue_network.values(obs, act)
        actor, diag = self._actor_terms(obs, act, pred)
        return TensorDict({**actor, **diag}, batch_size=[])


def make_actor_critic_loss(
    loss_class: type[ActorCriticLoss],
    actor: ProbabilisticTensorDictSequential,
    observation_dim: int,
    action_spec: TensorSpec,
    *,
    num_qvalue: int,
    num_cells: int,
    depth: int,
    layer_norm: bool,
    gamma: float,
    observation_loc: torch.Tensor | None = None,
    observation_scale: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    **loss_kwargs,
) -> ActorCriticLoss:
    """The loss ``loss_class(actor, QEnsemble(...), **loss_kwargs)``, discounting by ``gamma``.

    The shared assembly of the SAC, CQL, AWAC and TD3+BC factories: the critic is a
    ``QEnsemble`` of ``num_qvalue`` members of ``depth`` hidden layers of ``num_cells`` for
    ``action_spec``'s actions. Given ``observation_loc`` and ``observation_scale``, the critic
    and the actor (which must have an observation normaliser) normalise observations with them,
    set before the loss copies its targets.

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.modules.actors import make_sac_actor
        >>> from torchrl_o3f.objectives import SACLoss
        >>> spec = Bounded(-1.0, 1.0, shape=(2,))
        >>> loss = make_actor_critic_loss(SACLoss, make_sac_actor(3, spec, num_cells=8), 3, spec,
        ...                               num_qvalue=2, num_cells=8, depth=1, layer_norm=False,
        ...                               gamma=0.9)
        >>> loss.qvalue_network.num_members, round(float(loss.gamma), 2)
        (2, 0.9)
    """
    low, _ = action_bounds(action_spec)
    normalize_networks(actor, observation_loc=observation_loc, observation_scale=observation_scale)
    qvalue = QEnsemble(
        observation_dim,
        low.numel(),
        num_members=num_qvalue,
        num_cells=num_cells,
        depth=depth,
        layer_norm=layer_norm,
        observation_loc=observation_loc,
        observation_scale=observation_scale,
        device=device,
    )
    loss = loss_class(actor, qvalue, action_spec=action_spec, **loss_kwargs)
    loss.make_value_estimator(gamma=gamma)
    return loss


@dataclass
class ActorCriticConfig(AlgoConfig):
    """What the SAC, CQL, AWAC and TD3+BC configs share: the critic target and the rewards.

    Attributes:
        backup: ``"soft"`` (SAC and CQL only), ``"sampled"`` or ``"mean"`` (see
            :class:`ActorCriticLoss`).
        qvalue_reduction: ``"min"``, ``"mean"`` or ``"subset_min"`` over the target ensemble.
        subset_size: members of the random subset for ``"subset_min"``.
        reward_scale: multiplies rewards, after the shift.
        reward_shift: added to rewards before scaling.

    Example:
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> isinstance(algo_config("awac"), ActorCriticConfig)
        True
    """

    backup: str = MISSING
    qvalue_reduction: str = MISSING
    subset_size: int = MISSING
    reward_scale: float = MISSING
    reward_shift: float = MISSING


def actor_critic_kwargs(cfg: ActorCriticConfig) -> dict:
    """The factory arguments every actor-critic config holds: networks, discount, target, rewards.

    Example:
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> actor_critic_kwargs(algo_config("sac"))["num_qvalue"]
        2
    """
    networks = ("num_qvalue", "num_cells", "depth", "layer_norm", "gamma")
    base = {f.name for f in dataclasses.fields(AlgoConfig)}
    own = tuple(f.name for f in dataclasses.fields(ActorCriticConfig) if f.name not in base)
    return {name: getattr(cfg, name) for name in networks + own}
