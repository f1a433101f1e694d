"""Soft Actor-Critic on a shared :class:`~torchrl_o3f.modules.QEnsemble` (trained in place).

Also the base the other actor-critic baselines build on (:class:`ActorCriticLoss`): the input
keys, the reward pre-processing, policy sampling inside a loss and the TD(0) regression of the
ensemble onto a target computed with the target members. :class:`~torchrl_o3f.objectives.CQLLoss`
adds the conservative term to SAC; :class:`~torchrl_o3f.objectives.AWACLoss` replaces SAC's
actor loss by advantage-weighted regression.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from omegaconf import MISSING
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import TensorSpec
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import LossModule, ValueEstimators
from torchrl.objectives.value import TD0Estimator

from torchrl_o3f.modules.actors import action_bounds, make_sac_actor
from torchrl_o3f.modules.ensemble import QEnsemble, ensemble_reduce
from torchrl_o3f.objectives.common import (
    TransitionLossMixin,
    make_target_params,
    module_params,
)
from torchrl_o3f.objectives.registry import AlgoConfig, register_algorithm

__all__ = [
    "ActorCriticConfig",
    "ActorCriticLoss",
    "SACConfig",
    "SACLoss",
    "actor_critic_kwargs",
    "build_sac",
    "entropy_kwargs",
    "make_actor_critic_loss",
    "make_sac_loss",
]

_REDUCTIONS = ("min", "mean", "subset_min")


class ActorCriticLoss(TransitionLossMixin, LossModule):
    r"""The shared part of SAC, CQL and AWAC: an actor and a ``QEnsemble`` trained by TD(0).

    For a batch ``(s, a, r, s', terminated)`` with ``r <- (r + reward_shift) * reward_scale``:

    .. math::

        L_Q = \textstyle\sum_i \mathbb{E}\,(Q_i(s, a) - r - \gamma (1 - d)\, V'(s'))^2

    where ``V'(s')`` is ``reduce_i Q'_i(s', a')`` over the target members (``"min"``, ``"mean"``
    or the min over a random subset of ``subset_size`` members) with ``a'`` drawn from the
    policy (``backup="sampled"``), the policy's deterministic action (``"mean"``), or, for SAC,
    drawn with the entropy bonus ``- alpha log pi(a'|s')`` (``"soft"``).

    Subclasses define ``_actor_terms`` (and may extend ``_critic_terms``). The ensemble passed
    in is trained in place: its parameters are the loss's ``qvalue`` group, no copy is made.

    Args:
        actor_network: a :class:`~tensordict.nn.ProbabilisticTensorDictSequential` reading the
            observation (its first in_key) and building its distribution from ``loc``/``scale``
            style parameters (e.g. :func:`~torchrl_o3f.modules.actors.make_sac_actor`).
        qvalue_network: the :class:`~torchrl_o3f.modules.QEnsemble` to train.

    Keyword Args:
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

    @dataclass
    class _AcceptedKeys:
        """Tensordict keys the loss reads and writes (change them with ``set_keys``).

        Attributes:
            observation: the observation (also read under ``"next"``).
            action: the dataset action.
            reward: the reward, read under ``"next"``.
            done: the done flag, read under ``"next"``.
            terminated: the termination flag (bootstrapping stops), read under ``"next"``.
            priority: where the per-sample TD error is written (for prioritised replay).
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
    target_qvalue_network_params: TensorDictParams
    _backups: tuple[str, ...] = ("sampled", "mean")

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_network: QEnsemble,
        *,
        action_spec: TensorSpec,
        backup: str = "sampled",
        qvalue_reduction: str = "min",
        subset_size: int = 2,
        reward_scale: float = 1.0,
        reward_shift: float = 0.0,
    ):
        name = type(self).__name__
        if not isinstance(qvalue_network, QEnsemble):
            raise TypeError(
                f"{name}: qvalue_network must be a torchrl_o3f.modules.QEnsemble (the ensemble "
                f"trained in place and shared with the selector), got "
                f"{type(qvalue_network).__name__}"
            )
        if not hasattr(actor_network, "get_dist_params"):
            raise TypeError(
                f"{name}: actor_network must be a probabilistic actor (a tensordict "
                "ProbabilisticTensorDictSequential such as torchrl's ProbabilisticActor), got "
                f"{type(actor_network).__name__}"
            )
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
        device = qvalue_network.device
        self.register_buffer("action_low", low.to(device))
        self.register_buffer("action_high", high.to(device))
        self.register_buffer("gamma", torch.tensor(0.99, device=device))
        self.backup = backup
        self.qvalue_reduction = qvalue_reduction
        self.subset_size = int(subset_size)
        self.reward_scale = float(reward_scale)
        self.reward_shift = float(reward_shift)
        self.make_value_estimator(gamma=0.99)

    # ----------------------------------------------------------------- torchrl plumbing
    @property
    def qvalue_network_params(self) -> TensorDictBase:
        """The ensemble's own parameters (the soft-update source; the very same tensors)."""
        return module_params(self.qvalue_network)

    @property
    def actor_network_params(self) -> TensorDictBase:
        """The actor's own parameters (the very same tensors)."""
        return module_params(self.actor_network)

    @property
    def policy(self) -> TensorDictModuleBase:
        """The actor to use in a collector (the ``actor_network`` itself)."""
        return self.actor_network

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
        reward = reward.reshape(*act.shape[:-1], 1)
        if self.reward_shift != 0.0 or self.reward_scale != 1.0:
            reward = (reward + self.reward_shift) * self.reward_scale
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


class SACLoss(ActorCriticLoss):
    r"""SAC (Haarnoja et al., 2018) with automatic entropy tuning, on a ``QEnsemble``.

    On top of :class:`ActorCriticLoss`'s TD regression (``backup="soft"``: ``V'(s') =
    reduce_i Q'_i(s', a') - \alpha \log\pi(a'|s')``, ``a' \sim \pi(s')``):

    .. math::

        L_\pi &= \mathbb{E}_{a \sim \pi(s)}\, \alpha \log \pi(a|s) - \min_i Q_i(s, a)
            \quad\text{(Q through detached parameters)}\\
        L_\alpha &= -\mathbb{E}\, \log\alpha\, (\log\pi(a|s) + \bar{\mathcal{H}})
            \quad\text{(detached log-probability; } \bar{\mathcal{H}} = -|A| \text{ by default)}

    ``alpha = exp(log_alpha)`` enters the actor loss and the backup detached, as in torchrl's
    ``SACLoss``; ``log_alpha`` is the ``alpha`` parameter group.

    Args:
        actor_network: the policy, e.g. :func:`~torchrl_o3f.modules.actors.make_sac_actor`.
        qvalue_network: the :class:`~torchrl_o3f.modules.QEnsemble` to train (in place).

    Keyword Args:
        action_spec: the bounded action spec.
        alpha_init: the initial entropy coefficient (1.0).
        target_entropy: the entropy target; ``None``: ``-action_dim``.
        backup: ``"soft"`` (SAC), ``"sampled"`` (no entropy bonus) or ``"mean"``.
        qvalue_reduction: ``"min"``, ``"mean"`` or ``"subset_min"`` over the target members.
        subset_size: subset size for ``"subset_min"``.
        reward_scale: rewards are multiplied by this, after the shift.
        reward_shift: added to rewards.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl.objectives import SoftUpdate
        >>> loss = make_sac_loss(3, Bounded(-1.0, 1.0, shape=(2,)), num_cells=16)
        >>> updater = SoftUpdate(loss, tau=0.005)
        >>> td = TensorDict({
        ...     "observation": torch.randn(8, 3), "action": torch.rand(8, 2) * 2 - 1,
        ...     "next": {"observation": torch.randn(8, 3), "reward": torch.randn(8, 1),
        ...              "done": torch.zeros(8, 1, dtype=torch.bool),
        ...              "terminated": torch.zeros(8, 1, dtype=torch.bool)}}, batch_size=[8])
        >>> out = loss(td)
        >>> sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        >>> sorted(loss.parameter_groups())
        ['actor', 'alpha', 'qvalue']
        >>> round(float(loss.target_entropy), 1), float(loss.alpha)
        (-2.0, 1.0)
    """

    out_keys = [
        "loss_qvalue",
        "loss_actor",
        "loss_alpha",
        "qvalue_mean",
        "qvalue_std",
        "target_mean",
        "alpha",
        "entropy",
    ]
    _backups = ("soft", "sampled", "mean")

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_network: QEnsemble,
        *,
        action_spec: TensorSpec,
        alpha_init: float = 1.0,
        target_entropy: float | None = None,
        backup: str = "soft",
        qvalue_reduction: str = "min",
        subset_size: int = 2,
        reward_scale: float = 1.0,
        reward_shift: float = 0.0,
    ):
        if not alpha_init > 0:
            raise ValueError(f"{type(self).__name__}: alpha_init must be > 0, got {alpha_init}")
        super().__init__(
            actor_network,
            qvalue_network,
            action_spec=action_spec,
            backup=backup,
            qvalue_reduction=qvalue_reduction,
            subset_size=subset_size,
            reward_scale=reward_scale,
            reward_shift=reward_shift,
        )
        device = qvalue_network.device
        self.log_alpha = nn.Parameter(torch.tensor(math.log(alpha_init), device=device))
        if target_entropy is None:
            target_entropy = -float(qvalue_network.action_dim)
        self.register_buffer("target_entropy", torch.tensor(float(target_entropy), device=device))

    @property
    def alpha(self) -> torch.Tensor:
        """The entropy coefficient ``exp(log_alpha)``, detached."""
        return self.log_alpha.detach().exp()

    def _entropy_coefficient(self) -> torch.Tensor:
        return self.alpha

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters per optimiser: ``actor``, ``qvalue`` and ``alpha``."""
        return {**super().parameter_groups(), "alpha": [self.log_alpha]}

    def _actor_terms(self, obs, act, pred):
        action, log_prob = self._sample(obs)
        q = self.qvalue_network.values(obs, action, self._detached_qvalue_params()).min(0).values
        loss_actor = (self.alpha * log_prob - q).mean()
        loss_alpha = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        diagnostics = {"alpha": self.alpha, "entropy": -log_prob.detach().mean()}
        return {"loss_actor": loss_actor, "loss_alpha": loss_alpha}, diagnostics


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
    device: torch.device | str | None = None,
    **loss_kwargs,
) -> ActorCriticLoss:
    """The loss ``loss_class(actor, QEnsemble(...), **loss_kwargs)``, discounting by ``gamma``.

    The shared assembly of the SAC, CQL and AWAC factories: the critic is a ``QEnsemble`` of
    ``num_qvalue`` members of ``depth`` hidden layers of ``num_cells`` for ``action_spec``'s
    actions.

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.modules.actors import make_sac_actor
        >>> spec = Bounded(-1.0, 1.0, shape=(2,))
        >>> loss = make_actor_critic_loss(SACLoss, make_sac_actor(3, spec, num_cells=8), 3, spec,
        ...                               num_qvalue=2, num_cells=8, depth=1, layer_norm=False,
        ...                               gamma=0.9)
        >>> loss.qvalue_network.num_members, round(float(loss.gamma), 2)
        (2, 0.9)
    """
    low, _ = action_bounds(action_spec)
    qvalue = QEnsemble(
        observation_dim,
        low.numel(),
        num_members=num_qvalue,
        num_cells=num_cells,
        depth=depth,
        layer_norm=layer_norm,
        device=device,
    )
    loss = loss_class(actor, qvalue, action_spec=action_spec, **loss_kwargs)
    loss.make_value_estimator(gamma=gamma)
    return loss


def make_sac_loss(
    observation_dim: int,
    action_spec: TensorSpec,
    *,
    num_qvalue: int = 2,
    num_cells: int = 256,
    depth: int = 2,
    layer_norm: bool = False,
    gamma: float = 0.99,
    device: torch.device | str | None = None,
    **loss_kwargs,
) -> SACLoss:
    """Build a :class:`SACLoss` with SAC's networks: a TanhNormal actor and a ``QEnsemble``.

    Args:
        observation_dim: size of the (flat) observation.
        action_spec: bounded action spec of the environment.
        num_qvalue: ensemble size m (2, as SAC).
        num_cells: width of every hidden layer (actor and critics).
        depth: hidden layers per network.
        layer_norm: LayerNorm in the critics.
        gamma: discount.
        device: device of every network.
        **loss_kwargs: forwarded to :class:`SACLoss` (``alpha_init``, ``target_entropy``,
            ``backup``, ``qvalue_reduction``, ``subset_size``, ``reward_scale``,
            ``reward_shift``).

    Example:
        >>> from torchrl.data import Bounded
        >>> loss = make_sac_loss(17, Bounded(-1.0, 1.0, shape=(6,)), num_cells=32)
        >>> loss.qvalue_network.num_members, loss.backup
        (2, 'soft')
    """
    actor = make_sac_actor(
        observation_dim, action_spec, num_cells=num_cells, depth=depth, device=device
    )
    return make_actor_critic_loss(
        SACLoss,
        actor,
        observation_dim,
        action_spec,
        num_qvalue=num_qvalue,
        num_cells=num_cells,
        depth=depth,
        layer_norm=layer_norm,
        gamma=gamma,
        device=device,
        **loss_kwargs,
    )


# ------------------------------------------------------------------------------ registration
@dataclass
class ActorCriticConfig(AlgoConfig):
    """What the SAC, CQL and AWAC configs share: the critic target and the rewards.

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


@dataclass
class SACConfig(ActorCriticConfig):
    """SAC's own hyper-parameters (values: ``config/algo/sac.yaml``).

    Attributes:
        alpha_init: initial entropy coefficient.
        target_entropy_per_dim: the entropy target per action dimension (SAC: -1, i.e.
            ``-|A|``).

    Example:
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> cfg = algo_config("sac", task="hopper-medium")
        >>> cfg.lr["alpha"], cfg.batch_size, cfg.backup
        (0.0003, 256, 'soft')
    """

    alpha_init: float = MISSING
    target_entropy_per_dim: float = MISSING


def entropy_kwargs(cfg: SACConfig, action_spec: TensorSpec) -> dict:
    """The entropy arguments of :class:`SACLoss` ``cfg`` holds (shared by SAC and CQL).

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> entropy_kwargs(algo_config("sac"), Bounded(-1.0, 1.0, shape=(3,)))["target_entropy"]
        -3.0
    """
    low, _ = action_bounds(action_spec)
    target_entropy = cfg.target_entropy_per_dim * low.numel()
    return {"alpha_init": cfg.alpha_init, "target_entropy": target_entropy}


@register_algorithm(
    "sac",
    config=SACConfig,
    description="Soft Actor-Critic (Haarnoja et al., 2018) with entropy tuning, on a QEnsemble",
)
def build_sac(
    cfg: SACConfig,
    *,
    observation_dim: int,
    action_spec: TensorSpec,
    data: TensorDictBase | None,
    device: torch.device | str | None = None,
) -> SACLoss:
    """The registered builder of SAC: :func:`make_sac_loss` with ``cfg``'s numbers.

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> cfg = algo_config("sac", overrides={"num_cells": 16})
        >>> loss = build_sac(cfg, observation_dim=3, action_spec=Bounded(-1.0, 1.0, shape=(2,)),
        ...                  data=None)
        >>> float(loss.alpha) == cfg.alpha_init
        True
    """
    return make_sac_loss(
        observation_dim,
        action_spec,
        device=device,
        **actor_critic_kwargs(cfg),
        **entropy_kwargs(cfg, action_spec),
    )
