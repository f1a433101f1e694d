"""Implicit Q-Learning on a shared :class:`~torchrl_o3f.modules.QEnsemble` (trained in place)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import MISSING
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import ProbabilisticTensorDictSequential
from torch import nn
from torchrl.data import TensorSpec
from torchrl.modules.distributions import IndependentNormal
from torchrl.objectives import ValueEstimators
from torchrl.objectives.value import TD0Estimator

from torchrl_o3f.modules.actors import TanhMeanGaussianNet, make_iql_actor, make_value_network
from torchrl_o3f.modules.ensemble import QEnsemble, ensemble_reduce
from torchrl_o3f.objectives.base import (
    Annealable,
    EnsembleLoss,
    normalization_statistics,
    normalize_networks,
)
from torchrl_o3f.objectives.common import (
    call_on_tensor,
    episode_returns,
    expectile_loss,
    make_target_params,
)
from torchrl_o3f.objectives.registry import AlgoConfig, Algorithm, yaml_defaults

__all__ = ["IQL", "IQLConfig", "IQLLoss", "build_iql", "build_iql_policy", "make_iql_loss"]

_DEFAULTS = yaml_defaults("iql")  # the keyword defaults: config/algo/iql.yaml's generic values

_REDUCTIONS = ("min", "mean", "subset_min")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class IQLLoss(EnsembleLoss):
    r"""IQL (Kostrikov et al., 2022) with an ensemble critic that is trained in place.

    For a batch ``(s, a, r, s', terminated)`` with ``r <- (r + reward_shift) * reward_scale``:

    .. math::

        \bar Q(s, a) &= \mathrm{reduce}_i\, \bar Q_i(s, a) \quad\text{(target params, no grad)}\\
        L_V &= \mathbb{E}\, |\tau - 1(\bar Q - V(s) < 0)|\, (\bar Q - V(s))^2 \\
        L_Q &= \textstyle\sum_i \mathbb{E}\, (Q_i(s, a) - r - \gamma (1 - d) V(s'))^2 \\
        L_\pi &= -\mathbb{E}\, \min(e^{\beta (\bar Q - V(s))}, w_{max}) \log \pi(a | s)

    ``reduce`` is the min over all members (``qvalue_reduction="min"``, the paper's IQL), the
    mean, or the min over a random subset of ``subset_size`` members (REDQ's target).

    Unlike :class:`torchrl.objectives.IQLLoss`, the ensemble passed in is **the** ensemble
    trained: its parameters are registered as they are (no copy), so an
    :class:`~torchrl_o3f.modules.O3FActionSelector` holding the same ``QEnsemble`` scores with
    what the loss trains. The target min-Q and V(s) are computed once per step and the hot path
    stays in plain tensors (see ``docs/performance.md``).

    Changing hyper-parameters during training: ``expectile`` and ``temperature`` are buffers
    read at every call. Assign a number (``loss.expectile = 0.85``) or fill them in place
    (``loss.expectile.fill_(0.85)``); both are saved in the state dict.

    Args:
        actor_network: the policy; a :class:`~tensordict.nn.ProbabilisticTensorDictSequential`
            (e.g. from :func:`~torchrl_o3f.modules.make_iql_actor`) whose ``get_dist`` gives the
            log-likelihood of dataset actions. Its first in_key must be the observation.
        qvalue_network: the :class:`~torchrl_o3f.modules.QEnsemble` to train (in place).
        value_network: V(s): a module with one in_key and one out_key (e.g. a ValueOperator)
            or a plain ``nn.Module`` on observation tensors.

    Keyword Args (defaults: the generic values of ``config/algo/iql.yaml``):
        expectile: IQL's tau.
        temperature: IQL's inverse temperature beta.
        max_weight: clip of the advantage weights.
        qvalue_reduction: ``"min"``, ``"mean"`` or ``"subset_min"``.
        subset_size: subset size for ``"subset_min"``.
        reward_scale: rewards are multiplied by this, after the shift.
        reward_shift: added to rewards.
        loss_function: ``"l2"`` (the paper's MSE) for the Q regression, or ``"smooth_l1"``.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl.objectives import SoftUpdate
        >>> loss = make_iql_loss(3, Bounded(-1.0, 1.0, shape=(2,)), num_cells=16)
        >>> updater = SoftUpdate(loss, tau=0.005)
        >>> td = TensorDict({
        ...     "observation": torch.randn(8, 3), "action": torch.rand(8, 2) * 2 - 1,
        ...     "next": {"observation": torch.randn(8, 3), "reward": torch.randn(8, 1),
        ...              "done": torch.zeros(8, 1, dtype=torch.bool),
        ...              "terminated": torch.zeros(8, 1, dtype=torch.bool)}}, batch_size=[8])
        >>> out = loss(td)
        >>> (out["loss_actor"] + out["loss_qvalue"] + out["loss_value"]).backward()
        >>> sorted(loss.parameter_groups())
        ['actor', 'qvalue', 'value']
        >>> qs = loss.parameter_groups()["qvalue"]   # the ensemble's own parameters, no copy
        >>> all(p is q for p, q in zip(qs, loss.qvalue_network.parameters()))
        True
    """

    out_keys = [
        "loss_actor",
        "loss_qvalue",
        "loss_value",
        "qvalue_mean",
        "qvalue_std",
        "value_mean",
        "advantage_mean",
        "weight_mean",
        "log_prob_mean",
    ]

    target_qvalue_network_params: TensorDictParams
    _default_gamma = _DEFAULTS["gamma"]
    expectile = Annealable(
        "IQL's expectile tau (a buffer; assign a float to anneal)",
        check=lambda loss, v: 0.0 < v < 1.0 or "must be in (0, 1)",
    )
    temperature = Annealable(
        "IQL's inverse temperature beta (a buffer; assign to anneal)",
        check=lambda loss, v: v >= 0 or "must be >= 0",
    )

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_network: QEnsemble,
        value_network: nn.Module,
        *,
        expectile: float = _DEFAULTS["expectile"],
        temperature: float = _DEFAULTS["temperature"],
        max_weight: float = _DEFAULTS["max_weight"],
        qvalue_reduction: str = _DEFAULTS["qvalue_reduction"],
        subset_size: int = _DEFAULTS["subset_size"],
        reward_scale: float = _DEFAULTS["reward_scale"],
        reward_shift: float = _DEFAULTS["reward_shift"],
        loss_function: str = _DEFAULTS["loss_function"],
    ):
        self._check_ensemble(qvalue_network)
        if not hasattr(actor_network, "get_dist"):
            raise TypeError(
                "actor_network must be a probabilistic actor with get_dist (e.g. "
                "torchrl_o3f.modules.make_iql_actor(...)), got "
                f"{type(actor_network).__name__}"
            )
        if qvalue_reduction not in _REDUCTIONS:
            raise ValueError(
                f"qvalue_reduction must be one of {_REDUCTIONS}, got {qvalue_reduction!r}"
            )
        if qvalue_reduction == "subset_min" and not 1 <= subset_size <= qvalue_network.num_members:
            raise ValueError(
                f"subset_size must be in [1, {qvalue_network.num_members}], got {subset_size}"
            )
        if loss_function not in ("l2", "smooth_l1"):
            raise ValueError(f"loss_function must be 'l2' or 'smooth_l1', got {loss_function!r}")
        if max_weight <= 0:
            raise ValueError(f"max_weight must be > 0, got {max_weight}")
        super().__init__()
        self.actor_network = actor_network
        self.qvalue_network = qvalue_network
        self.value_network = value_network
        self.target_qvalue_network_params = make_target_params(qvalue_network)
        self._has_update_associated["qvalue_network"] = False
        device = qvalue_network.device
        self.register_annealable("expectile", expectile, device)
        self.register_annealable("temperature", temperature, device)
        self.register_buffer("gamma", torch.tensor(self._default_gamma, device=device))
        self.max_weight = float(max_weight)
        self.qvalue_reduction = qvalue_reduction
        self.subset_size = int(subset_size)
        self.reward_scale = float(reward_scale)
        self.reward_shift = float(reward_shift)
        self.loss_function = loss_function
        self.make_value_estimator(gamma=self._default_gamma)

    # ----------------------------------------------------------------- torchrl plumbing
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters per network: ``actor``, ``qvalue`` and ``value``."""
        return {
            "actor": list(self.actor_network.parameters()),
            "qvalue": list(self.qvalue_network.parameters()),
            "value": list(self.value_network.parameters()),
        }

    def make_value_estimator(self, value_type: ValueEstimators | None = None, **hyperparams):
        """Set the discount: ``loss.make_value_estimator(gamma=0.99)`` (TD(0) only).

        The loss computes the TD(0) target ``r + gamma * (1 - terminated) * V(s')`` on plain
        tensors; ``loss.value_estimator`` is the equivalent torchrl ``TD0Estimator`` (on
        V(s')), kept for inspection.
        """
        gamma = self._set_gamma(value_type, hyperparams)
        self._value_estimator = TD0Estimator(
            gamma=gamma, value_network=None, shifted=False, skip_existing=False
        )

    # ----------------------------------------------------------------- the maths
    def _read(self, td: TensorDictBase):
        obs, act, next_obs, reward, terminated = self._read_transition(td)
        if reward.shape != act.shape[:-1] + (1,):
            reward = reward.reshape(*act.shape[:-1], 1)
        terminated = terminated.reshape(reward.shape)
        return obs, act, next_obs, self.transform_reward(reward), terminated

    def _target_q(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            values = self.qvalue_network.values(obs, act, self.target_qvalue_network_params)
            return ensemble_reduce(values, self.qvalue_reduction, subset_size=self.subset_size)

    def _gaussian_head(self) -> TanhMeanGaussianNet | None:
        """The actor's Gaussian head when the actor is ``make_iql_actor``'s (fast path)."""
        modules = getattr(self.actor_network, "module", None)
        try:
            head, dist = modules[0].module, modules[1]
        except (TypeError, IndexError, AttributeError):
            return None
        if isinstance(head, TanhMeanGaussianNet) and (
            getattr(dist, "distribution_class", None) is IndependentNormal
            and not getattr(dist, "distribution_kwargs", None)
        ):
            return head
        return None

    def _log_prob(self, td: TensorDictBase, obs: torch.Tensor, act: torch.Tensor):
        head = self._gaussian_head()
        if head is not None:
            # the same Normal log-density, without building a distribution object
            loc, scale = head(obs)
            z = (act - loc) / scale
            log_prob = -0.5 * z.square() - scale.log() - _HALF_LOG_2PI
            return log_prob.sum(-1, keepdim=True)
        key = self.actor_network.in_keys[0]
        dist = self.actor_network.get_dist(TensorDict({key: obs}, batch_size=obs.shape[:-1]))
        return dist.log_prob(act).reshape(*act.shape[:-1], 1)

    def _actor_terms(self, td, obs, act, target_q, value):
        advantage = target_q - value.detach()
        weight = torch.exp(advantage * self._temperature).clamp_max(self.max_weight)
        log_prob = self._log_prob(td, obs, act)
        loss_actor = -(weight * log_prob).mean()
        return loss_actor, advantage, weight, log_prob

    def _qvalue_terms(self, td, obs, act, reward, terminated, next_value):
        target = reward + self.gamma * (~terminated.bool()) * next_value.detach()
        pred = self.qvalue_network.values(obs, act)  # [m, *batch, 1]
        if self.loss_function == "l2":
            per_member = (pred - target).square()
        else:
            per_member = nn.functional.smooth_l1_loss(
                pred, target.expand_as(pred), reduction="none"
            )
        loss_qvalue = per_member.mean(tuple(range(1, pred.dim()))).sum()
        return loss_qvalue, pred, target

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """All three losses (``loss_actor``, ``loss_qvalue``, ``loss_value``) + diagnostics.

        The per-sample max-over-members TD error is written to ``tensordict[priority]``.
        """
        obs, act, next_obs, reward, terminated = self._read(tensordict)
        target_q = self._target_q(obs, act)
        # V(s) with grad, V(s') without: two calls, so the backward pass only spans V(s)
        value = call_on_tensor(self.value_network, obs).reshape(target_q.shape)
        with torch.no_grad():
            next_value = call_on_tensor(self.value_network, next_obs).reshape(target_q.shape)
        loss_value = expectile_loss(target_q - value, self._expectile).mean()
        loss_actor, advantage, weight, log_prob = self._actor_terms(
            tensordict, obs, act, target_q, value
        )
        loss_qvalue, pred, target = self._qvalue_terms(
            tensordict, obs, act, reward, terminated, next_value
        )
        with torch.no_grad():
            td_error = (pred - target).abs().max(0).values
            if tensordict.batch_dims:
                tensordict.set(self.tensor_keys.priority, td_error.reshape(tensordict.batch_size))
            out = TensorDict(
                {
                    "loss_actor": loss_actor,
                    "loss_qvalue": loss_qvalue,
                    "loss_value": loss_value,
                    "qvalue_mean": pred.mean().detach(),
                    "qvalue_std": pred.std(0, correction=0).mean().detach(),
                    "value_mean": value.mean().detach(),
                    "advantage_mean": advantage.mean(),
                    "weight_mean": weight.mean(),
                    "log_prob_mean": log_prob.mean().detach(),
                },
                batch_size=[],
            )
        return out

    def actor_loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        """The advantage-weighted regression loss of the actor alone (``loss_actor``)."""
        obs, act, *_ = self._read(tensordict)
        target_q = self._target_q(obs, act)
        with torch.no_grad():
            value = call_on_tensor(self.value_network, obs).reshape(target_q.shape)
        loss_actor, advantage, weight, _ = self._actor_terms(tensordict, obs, act, target_q, value)
        return TensorDict(
            {"loss_actor": loss_actor, "advantage_mean": advantage.mean()}, batch_size=[]
        )

    def value_loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        """The expectile regression loss of V alone (``loss_value``)."""
        obs, act, *_ = self._read(tensordict)
        target_q = self._target_q(obs, act)
        value = call_on_tensor(self.value_network, obs).reshape(target_q.shape)
        loss_value = expectile_loss(target_q - value, self._expectile).mean()
        return TensorDict(
            {"loss_value": loss_value, "value_mean": value.mean().detach()}, batch_size=[]
        )

    def qvalue_loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        """The TD regression loss of the ensemble alone (``loss_qvalue``)."""
        obs, act, next_obs, reward, terminated = self._read(tensordict)
        with torch.no_grad():
            next_value = call_on_tensor(self.value_network, next_obs).reshape(reward.shape)
        loss_qvalue, pred, _ = self._qvalue_terms(
            tensordict, obs, act, reward, terminated, next_value
        )
        return TensorDict(
            {"loss_qvalue": loss_qvalue, "qvalue_mean": pred.mean().detach()}, batch_size=[]
        )


def make_iql_loss(
    observation_dim: int,
    action_spec: TensorSpec,
    *,
    num_qvalue: int = _DEFAULTS["num_qvalue"],
    num_cells: int = _DEFAULTS["num_cells"],
    depth: int = _DEFAULTS["depth"],
    layer_norm: bool = _DEFAULTS["layer_norm"],
    expectile: float = _DEFAULTS["expectile"],
    temperature: float = _DEFAULTS["temperature"],
    gamma: float = _DEFAULTS["gamma"],
    observation_loc: torch.Tensor | None = None,
    observation_scale: torch.Tensor | None = None,
    actor: ProbabilisticTensorDictSequential | None = None,
    device: torch.device | str | None = None,
    **loss_kwargs,
) -> IQLLoss:
    """Build an :class:`IQLLoss` with IQL's networks: Gaussian actor, ``QEnsemble``, V(s).

    Defaults: the generic values of ``config/algo/iql.yaml``.

    Args:
        observation_dim: size of the (flat) observation.
        action_spec: bounded action spec of the environment.
        num_qvalue: ensemble size m.
        num_cells: width of every hidden layer (actor, critics, value).
        depth: hidden layers per network.
        layer_norm: LayerNorm in the critics and the value network.
        expectile: IQL's tau.
        temperature: IQL's inverse temperature beta.
        gamma: discount.
        observation_loc: with ``observation_scale``, the observation statistics every network
            normalises with, held in its buffers (both ``None``: no normaliser).
        observation_scale: see ``observation_loc``.
        actor: the policy to train (``None``: :func:`~torchrl_o3f.modules.make_iql_actor` of
            these sizes; one given must have an observation normaliser when statistics are).
        device: device of every network.
        **loss_kwargs: forwarded to :class:`IQLLoss` (``max_weight``, ``qvalue_reduction``,
            ``subset_size``, ``reward_scale``, ``reward_shift``, ``loss_function``).

    Example:
        >>> from torchrl.data import Bounded
        >>> loss = make_iql_loss(17, Bounded(-1.0, 1.0, shape=(6,)), num_cells=32)
        >>> loss.qvalue_network.num_members, round(float(loss.gamma), 4)
        (5, 0.99)
    """
    action_dim = action_spec.shape[-1]
    norm = {"observation_loc": observation_loc, "observation_scale": observation_scale}
    normalize = observation_loc is not None or observation_scale is not None
    if actor is None:
        actor = make_iql_actor(
            observation_dim,
            action_spec,
            num_cells=num_cells,
            depth=depth,
            normalize_observations=normalize,
            device=device,
        )
    qvalue = QEnsemble(
        observation_dim,
        action_dim,
        num_members=num_qvalue,
        num_cells=num_cells,
        depth=depth,
        layer_norm=layer_norm,
        device=device,
        **norm,
    )
    value = make_value_network(
        observation_dim,
        num_cells=num_cells,
        depth=depth,
        layer_norm=layer_norm,
        normalize_observations=normalize,
        device=device,
    )
    normalize_networks(actor, value, **norm)
    loss = IQLLoss(
        actor, qvalue, value, expectile=expectile, temperature=temperature, **loss_kwargs
    )
    loss.make_value_estimator(gamma=gamma)
    return loss


# ------------------------------------------------------------------------------ registration
@dataclass
class IQLConfig(AlgoConfig):
    """IQL's own hyper-parameters (values: ``config/algo/iql.yaml``).

    Attributes:
        expectile: IQL's tau.
        temperature: IQL's inverse temperature beta.
        max_weight: clip of the advantage weights.
        qvalue_reduction: ``"min"``, ``"mean"`` or ``"subset_min"`` over the target ensemble.
        subset_size: members of the random subset for ``"subset_min"``.
        reward_normalization: ``"returns_range"`` (the original implementation on locomotion:
            rewards times ``1000 / (max - min episode return of the dataset)``) or ``"none"``.
        reward_scale: multiplies rewards, after the normalisation and the shift.
        reward_shift: added to rewards before scaling (antmaze: -1).
        loss_function: ``"l2"`` or ``"smooth_l1"`` for the Q regression.

    Example:
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> algo_config("iql", task="halfcheetah-medium").reward_normalization
        'returns_range'
    """

    expectile: float = MISSING
    temperature: float = MISSING
    max_weight: float = MISSING
    qvalue_reduction: str = MISSING
    subset_size: int = MISSING
    reward_normalization: str = MISSING
    reward_scale: float = MISSING
    reward_shift: float = MISSING
    loss_function: str = MISSING


def iql_reward_scale(cfg: IQLConfig, data: TensorDictBase | None) -> float:
    """The reward multiplier a run uses: ``reward_scale`` times the dataset normalisation.

    Raises:
        ValueError: for an unknown ``reward_normalization``, or ``"returns_range"`` without
            data or with every episode return equal.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> td = TensorDict({"next": {"reward": torch.tensor([1.0, 1.0, 3.0]),
        ...                           "done": torch.tensor([False, True, True])}}, [3])
        >>> iql_reward_scale(algo_config("iql", task="hopper-medium"), td)
        1000.0
    """
    if cfg.reward_normalization == "none":
        return float(cfg.reward_scale)
    if cfg.reward_normalization != "returns_range":
        raise ValueError(
            f"algo.reward_normalization must be 'returns_range' or 'none', got "
            f"{cfg.reward_normalization!r}"
        )
    if data is None:
        raise ValueError(
            "algo.reward_normalization=returns_range needs the offline data (episode returns); "
            "set algo.reward_normalization=none for an online-only run"
        )
    returns = episode_returns(data)
    spread = float(returns.max() - returns.min()) if returns.numel() else 0.0
    if not spread > 0:
        raise ValueError(
            "algo.reward_normalization=returns_range: every episode of the dataset has the same "
            "return, so 1000 / (max - min) is undefined; set algo.reward_normalization=none"
        )
    return float(cfg.reward_scale) * 1000.0 / spread


def build_iql_policy(
    cfg: IQLConfig,
    *,
    observation_dim: int,
    action_spec: TensorSpec,
    device: torch.device | str | None = None,
) -> ProbabilisticTensorDictSequential:
    """IQL's acting module alone: the Gaussian actor of ``cfg``'s sizes (``loss.policy``).

    With ``cfg.normalize_observations`` it starts with an observation normaliser (identity
    statistics until the loss's builder or a loaded state sets them).

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> cfg = algo_config("iql", overrides={"num_cells": 16})
        >>> policy = build_iql_policy(cfg, observation_dim=3,
        ...                           action_spec=Bounded(-1.0, 1.0, shape=(2,)))
        >>> policy.out_keys[-1]
        'action'
    """
    return make_iql_actor(
        observation_dim,
        action_spec,
        num_cells=cfg.num_cells,
        depth=cfg.depth,
        normalize_observations=cfg.normalize_observations,
        device=device,
    )


def build_iql(
    cfg: IQLConfig,
    *,
    observation_dim: int,
    action_spec: TensorSpec,
    data: TensorDictBase | None,
    device: torch.device | str | None = None,
) -> IQLLoss:
    """The registered builder of IQL: :func:`make_iql_loss` with ``cfg``'s numbers.

    The actor is :func:`build_iql_policy`'s; with ``cfg.normalize_observations`` every network
    normalises observations with the offline data's statistics.

    Raises:
        ConfigError: ``normalize_observations`` without offline data.
        ValueError: see :func:`iql_reward_scale`.

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> cfg = algo_config("iql", overrides={"num_cells": 16, "reward_normalization": "none"})
        >>> loss = build_iql(cfg, observation_dim=3, action_spec=Bounded(-1.0, 1.0, shape=(2,)),
        ...                  data=None)
        >>> round(float(loss.expectile), 6) == cfg.expectile
        True
    """
    actor = build_iql_policy(
        cfg, observation_dim=observation_dim, action_spec=action_spec, device=device
    )
    return make_iql_loss(
        observation_dim,
        action_spec,
        actor=actor,
        num_qvalue=cfg.num_qvalue,
        num_cells=cfg.num_cells,
        depth=cfg.depth,
        layer_norm=cfg.layer_norm,
        expectile=cfg.expectile,
        temperature=cfg.temperature,
        gamma=cfg.gamma,
        device=device,
        max_weight=cfg.max_weight,
        qvalue_reduction=cfg.qvalue_reduction,
        subset_size=cfg.subset_size,
        reward_scale=iql_reward_scale(cfg, data),
        reward_shift=cfg.reward_shift,
        loss_function=cfg.loss_function,
        **normalization_statistics(cfg, data),
    )


IQL = Algorithm(
    name="iql",
    config_class=IQLConfig,
    loss_class=IQLLoss,
    build=build_iql,
    build_policy=build_iql_policy,
    description="Implicit Q-Learning (Kostrikov et al., 2022) on a QEnsemble",
)
