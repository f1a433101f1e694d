"""Advantage-Weighted Actor-Critic on a shared :class:`~torchrl_o3f.modules.QEnsemble`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from tensordict import TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential
from torchrl.data import TensorSpec

from torchrl_o3f.modules.actors import make_iql_actor
from torchrl_o3f.modules.ensemble import QEnsemble
from torchrl_o3f.objectives.actor_critic import (
    ActorCriticConfig,
    ActorCriticLoss,
    actor_critic_kwargs,
    make_actor_critic_loss,
)
from torchrl_o3f.objectives.base import Annealable, normalization_statistics
from torchrl_o3f.objectives.registry import Algorithm, yaml_defaults

__all__ = ["AWAC", "AWACConfig", "AWACLoss", "build_awac", "build_awac_policy", "make_awac_loss"]

_DEFAULTS = yaml_defaults("awac")  # the keyword defaults: config/algo/awac.yaml's generic values


class AWACLoss(ActorCriticLoss):
    r"""AWAC (Nair et al., 2020) on a ``QEnsemble`` trained in place.

    The critic regresses onto ``r + gamma (1 - d) reduce_i Q'_i(s', a')`` with ``a' ~ pi(s')``
    (:class:`~torchrl_o3f.objectives.sac.ActorCriticLoss`, ``backup="sampled"``); the actor
    maximises the advantage-weighted log-likelihood of the dataset actions:

    .. math::

        A(s, a) &= \min_i Q_i(s, a) - \tfrac{1}{n}\textstyle\sum_{j=1}^{n}
            \min_i Q_i(s, a_j), \quad a_j \sim \pi(\cdot|s) \\
        w &= B\, \mathrm{softmax}_{batch}(A / \lambda) \\
        L_\pi &= -\tfrac{1}{B}\textstyle\sum_b w_b \log \pi(a_b | s_b)

    (online parameters, no gradient through ``A``). The weights are normalised over the batch,
    as the original AWAC and d3rlpy do (mean weight 1, so no clipping is needed); ``lambda``
    (``lam``) is the hyper-parameter the paper loosens online (1 -> 0.1): a buffer read at every
    call, assign a number to anneal.

    Args:
        actor_network: the policy; a Gaussian actor with a ``log_prob`` for dataset actions,
            e.g. :func:`~torchrl_o3f.modules.make_iql_actor` (tanh-squashed mean,
            state-independent std, as CORL's AWAC).
        qvalue_network: the :class:`~torchrl_o3f.modules.QEnsemble` to train (in place).

    Keyword Args (defaults: the generic values of ``config/algo/awac.yaml``):
        action_spec: the bounded action spec (samples are projected onto it).
        lam: ``lambda``, the temperature of the advantage weights.
        n_action_samples: ``n``, policy samples estimating V(s).
        backup: ``"sampled"`` or ``"mean"``.
        qvalue_reduction: ``"min"``, ``"mean"`` or ``"subset_min"`` over the target members.
        subset_size: subset size for ``"subset_min"``.
        reward_scale: rewards are multiplied by this, after the shift.
        reward_shift: added to rewards.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> loss = make_awac_loss(3, Bounded(-1.0, 1.0, shape=(2,)), num_cells=16)
        >>> td = TensorDict({
        ...     "observation": torch.randn(8, 3), "action": torch.rand(8, 2) * 2 - 1,
        ...     "next": {"observation": torch.randn(8, 3), "reward": torch.randn(8, 1),
        ...              "done": torch.zeros(8, 1, dtype=torch.bool),
        ...              "terminated": torch.zeros(8, 1, dtype=torch.bool)}}, batch_size=[8])
        >>> out = loss(td)
        >>> (out["loss_actor"] + out["loss_qvalue"]).backward()
        >>> sorted(loss.parameter_groups()), round(float(out["weight_mean"]), 4)
        (['actor', 'qvalue'], 1.0)
        >>> loss.lam = 0.1   # loosen online
    """

    _default_gamma = _DEFAULTS["gamma"]
    out_keys = [
        "loss_qvalue",
        "loss_actor",
        "qvalue_mean",
        "qvalue_std",
        "target_mean",
        "advantage_mean",
        "weight_mean",
        "weight_max",
        "log_prob_mean",
    ]

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_network: QEnsemble,
        *,
        action_spec: TensorSpec,
        lam: float = _DEFAULTS["lam"],
        n_action_samples: int = _DEFAULTS["n_action_samples"],
        backup: str = _DEFAULTS["backup"],
        qvalue_reduction: str = _DEFAULTS["qvalue_reduction"],
        subset_size: int = _DEFAULTS["subset_size"],
        reward_scale: float = _DEFAULTS["reward_scale"],
        reward_shift: float = _DEFAULTS["reward_shift"],
    ):
        if n_action_samples < 1:
            raise ValueError(f"AWACLoss: n_action_samples must be >= 1, got {n_action_samples}")
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
        self.n_action_samples = int(n_action_samples)
        self.register_annealable("lam", lam, qvalue_network.device)

    lam = Annealable(
        "AWAC's ``lambda`` (a buffer; assign a float to anneal).",
        check=lambda loss, v: v > 0 or "must be a finite number > 0",
    )

    def _advantage(self, obs: torch.Tensor, pred: torch.Tensor, params) -> torch.Tensor:
        """``A(s, a)`` from ``pred`` = the online ``Q_i(s, a)`` ``[m, *B, 1]``, no gradient.

        ``params``: the actor's distribution parameters at ``obs``.
        """
        with torch.no_grad():
            action, _ = self._sample(obs, self.n_action_samples, params=params.detach())
            q_pi = self.qvalue_network.values(obs.unsqueeze(-2), action).min(0).values
            return pred.min(0).values - q_pi.mean(-2)

    def _actor_terms(self, obs, act, pred):
        params = self._policy_params(obs)  # one actor call: the log-likelihood and V(s)'s samples
        advantage = self._advantage(obs, pred, params)
        weight = torch.softmax(advantage.reshape(-1) / self._lam, 0).reshape(advantage.shape)
        weight = weight * advantage.numel()
        log_prob = self._dist(obs, params=params).log_prob(act).unsqueeze(-1)
        loss_actor = -(weight * log_prob).mean()
        diagnostics = {
            "advantage_mean": advantage.mean(),
            "weight_mean": weight.mean(),
            "weight_max": weight.max(),
            "log_prob_mean": log_prob.detach().mean(),
        }
        return {"loss_actor": loss_actor}, diagnostics


def make_awac_loss(
    observation_dim: int,
    action_spec: TensorSpec,
    *,
    num_qvalue: int = _DEFAULTS["num_qvalue"],
    num_cells: int = _DEFAULTS["num_cells"],
    depth: int = _DEFAULTS["depth"],
    actor_depth: int | None = _DEFAULTS["actor_depth"],
    layer_norm: bool = _DEFAULTS["layer_norm"],
    log_std_min: float = _DEFAULTS["log_std_min"],
    log_std_max: float = _DEFAULTS["log_std_max"],
    gamma: float = _DEFAULTS["gamma"],
    observation_loc: torch.Tensor | None = None,
    observation_scale: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    **loss_kwargs,
) -> AWACLoss:
    """Build an :class:`AWACLoss`: a tanh-mean Gaussian actor and a ``QEnsemble``.

    Defaults: the generic values of ``config/algo/awac.yaml``.

    Args:
        observation_dim: size of the (flat) observation.
        action_spec: bounded action spec of the environment.
        num_qvalue: ensemble size m.
        num_cells: width of every hidden layer (actor and critics).
        depth: hidden layers of the critics.
        actor_depth: hidden layers of the actor (``None``: ``depth``).
        layer_norm: LayerNorm in the critics.
        log_std_min: lower clamp of the actor's state-independent log std.
        log_std_max: upper clamp of the log std.
        gamma: discount.
        observation_loc: with ``observation_scale``, the observation statistics the actor and
            the critics normalise with, held in their buffers (both ``None``: no normaliser).
        observation_scale: see ``observation_loc``.
        device: device of every network.
        **loss_kwargs: forwarded to :class:`AWACLoss` (``lam``, ``n_action_samples``,
            ``backup``, ``qvalue_reduction``, ``subset_size``, ``reward_scale``,
            ``reward_shift``).

    Example:
        >>> from torchrl.data import Bounded
        >>> loss = make_awac_loss(17, Bounded(-1.0, 1.0, shape=(6,)), num_cells=32, lam=0.5)
        >>> loss.qvalue_network.num_members, float(loss.lam)
        (2, 0.5)
    """
    actor = make_iql_actor(
        observation_dim,
        action_spec,
        num_cells=num_cells,
        depth=depth if actor_depth is None else actor_depth,
        log_std_min=log_std_min,
        log_std_max=log_std_max,
        normalize_observations=observation_loc is not None or observation_scale is not None,
        device=device,
    )
    return make_actor_critic_loss(
        AWACLoss,
        actor,
        observation_dim,
        action_spec,
        num_qvalue=num_qvalue,
        num_cells=num_cells,
        depth=depth,
        layer_norm=layer_norm,
        gamma=gamma,
        observation_loc=observation_loc,
        observation_scale=observation_scale,
        device=device,
        **loss_kwargs,
    )


# ------------------------------------------------------------------------------ registration
@dataclass
class AWACConfig(ActorCriticConfig):
    """AWAC's own hyper-parameters (values: ``config/algo/awac.yaml``).

    Attributes:
        lam: the temperature ``lambda`` of the advantage weights.
        n_action_samples: policy samples estimating V(s) in the advantage.
        actor_depth: hidden layers of the actor (``depth`` is the critics').
        log_std_min: lower clamp of the actor's log std.
        log_std_max: upper clamp of the actor's log std.

    Example:
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> cfg = algo_config("awac", task="antmaze-umaze")
        >>> cfg.lam, cfg.reward_shift, cfg.loosening
        (1.0, -1.0, {'param': 'lam', 'end': 0.1})
    """

    lam: float = MISSING
    n_action_samples: int = MISSING
    actor_depth: int = MISSING
    log_std_min: float = MISSING
    log_std_max: float = MISSING


def build_awac_policy(
    cfg: AWACConfig,
    *,
    observation_dim: int,
    action_spec: TensorSpec,
    device: torch.device | str | None = None,
) -> ProbabilisticTensorDictSequential:
    """AWAC's acting module alone: the tanh-mean Gaussian actor of ``cfg``'s sizes.

    With ``cfg.normalize_observations`` it starts with an observation normaliser (identity
    statistics until the loss's builder or a loaded state sets them).

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> cfg = algo_config("awac", overrides={"num_cells": 16})
        >>> policy = build_awac_policy(cfg, observation_dim=3,
        ...                            action_spec=Bounded(-1.0, 1.0, shape=(2,)))
        >>> policy.out_keys[-1]
        'action'
    """
    return make_iql_actor(
        observation_dim,
        action_spec,
        num_cells=cfg.num_cells,
        depth=cfg.actor_depth,
        log_std_min=cfg.log_std_min,
        log_std_max=cfg.log_std_max,
        normalize_observations=cfg.normalize_observations,
        device=device,
    )


def build_awac(
    cfg: AWACConfig,
    *,
    observation_dim: int,
    action_spec: TensorSpec,
    data: TensorDictBase | None,
    device: torch.device | str | None = None,
) -> AWACLoss:
    """The registered builder of AWAC: :func:`build_awac_policy`'s actor and ``cfg``'s critic.

    Raises:
        ConfigError: ``normalize_observations`` without offline data.

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> cfg = algo_config("awac", overrides={"num_cells": 16})
        >>> loss = build_awac(cfg, observation_dim=3, action_spec=Bounded(-1.0, 1.0, shape=(2,)),
        ...                   data=None)
        >>> float(loss.lam) == cfg.lam
        True
    """
    actor = build_awac_policy(
        cfg, observation_dim=observation_dim, action_spec=action_spec, device=device
    )
    return make_actor_critic_loss(
        AWACLoss,
        actor,
        observation_dim,
        action_spec,
        device=device,
        lam=cfg.lam,
        n_action_samples=cfg.n_action_samples,
        **normalization_statistics(cfg, data),
        **actor_critic_kwargs(cfg),
    )


AWAC = Algorithm(
    name="awac",
    config_class=AWACConfig,
    loss_class=AWACLoss,
    build=build_awac,
    build_policy=build_awac_policy,
    description="Advantage-Weighted Actor-Critic (Nair et al., 2020) on a QEnsemble",
)
