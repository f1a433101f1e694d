"""Soft Actor-Critic on a shared :class:`~torchrl_o3f.modules.QEnsemble` (trained in place).

The actor-critic plumbing it shares with CQL and AWAC is
:class:`~torchrl_o3f.objectives.actor_critic.ActorCriticLoss`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import MISSING
from tensordict import TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential
from torch import nn
from torchrl.data import TensorSpec

from torchrl_o3f.modules.actors import action_bounds, make_sac_actor
from torchrl_o3f.modules.ensemble import QEnsemble
from torchrl_o3f.objectives.actor_critic import (
    ActorCriticConfig,
    ActorCriticLoss,
    actor_critic_kwargs,
    make_actor_critic_loss,
)
from torchrl_o3f.objectives.base import normalization_statistics
from torchrl_o3f.objectives.registry import Algorithm, yaml_defaults

__all__ = [
    "SAC",
    "SACConfig",
    "SACLoss",
    "build_sac",
    "build_sac_policy",
    "entropy_kwargs",
    "make_sac_loss",
]

_DEFAULTS = yaml_defaults("sac")  # the keyword defaults: config/algo/sac.yaml's generic values


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

    Keyword Args (defaults: the generic values of ``config/algo/sac.yaml``):
        action_spec: the bounded action spec.
        alpha_init: the initial entropy coefficient.
        target_entropy: the entropy target; ``None``: the yaml's ``target_entropy_per_dim``
            times the action size.
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
    _default_gamma = _DEFAULTS["gamma"]
    _target_entropy_per_dim = _DEFAULTS["target_entropy_per_dim"]

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_network: QEnsemble,
        *,
        action_spec: TensorSpec,
        alpha_init: float = _DEFAULTS["alpha_init"],
        target_entropy: float | None = None,
        backup: str = _DEFAULTS["backup"],
        qvalue_reduction: str = _DEFAULTS["qvalue_reduction"],
        subset_size: int = _DEFAULTS["subset_size"],
        reward_scale: float = _DEFAULTS["reward_scale"],
        reward_shift: float = _DEFAULTS["reward_shift"],
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
            target_entropy = self._target_entropy_per_dim * qvalue_network.action_dim
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


def make_sac_loss(
    observation_dim: int,
    action_spec: TensorSpec,
    *,
    num_qvalue: int = _DEFAULTS["num_qvalue"],
    num_cells: int = _DEFAULTS["num_cells"],
    depth: int = _DEFAULTS["depth"],
    layer_norm: bool = _DEFAULTS["layer_norm"],
    gamma: float = _DEFAULTS["gamma"],
    observation_loc: torch.Tensor | None = None,
    observation_scale: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    **loss_kwargs,
) -> SACLoss:
    """Build a :class:`SACLoss` with SAC's networks: a TanhNormal actor and a ``QEnsemble``.

    Defaults: the generic values of ``config/algo/sac.yaml``.

    Args:
        observation_dim: size of the (flat) observation.
        action_spec: bounded action spec of the environment.
        num_qvalue: ensemble size m.
        num_cells: width of every hidden layer (actor and critics).
        depth: hidden layers per network.
        layer_norm: LayerNorm in the critics.
        gamma: discount.
        observation_loc: with ``observation_scale``, the observation statistics the actor and
            the critics normalise with, held in their buffers (both ``None``: no normaliser).
        observation_scale: see ``observation_loc``.
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
    normalize = observation_loc is not None or observation_scale is not None
    actor = make_sac_actor(
        observation_dim,
        action_spec,
        num_cells=num_cells,
        depth=depth,
        normalize_observations=normalize,
        device=device,
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
        observation_loc=observation_loc,
        observation_scale=observation_scale,
        device=device,
        **loss_kwargs,
    )


# ------------------------------------------------------------------------------ registration
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


def build_sac_policy(
    cfg: SACConfig,
    *,
    observation_dim: int,
    action_spec: TensorSpec,
    device: torch.device | str | None = None,
) -> ProbabilisticTensorDictSequential:
    """SAC's (and CQL's) acting module alone: the TanhNormal actor of ``cfg``'s sizes.

    With ``cfg.normalize_observations`` it starts with an observation normaliser (identity
    statistics until the loss's builder or a loaded state sets them).

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> policy = build_sac_policy(algo_config("sac", overrides={"num_cells": 16}),
        ...                           observation_dim=3, action_spec=Bounded(-1.0, 1.0, shape=(2,)))
        >>> policy.out_keys[-1]
        'action'
    """
    return make_sac_actor(
        observation_dim,
        action_spec,
        num_cells=cfg.num_cells,
        depth=cfg.depth,
        normalize_observations=cfg.normalize_observations,
        device=device,
    )


def build_sac(
    cfg: SACConfig,
    *,
    observation_dim: int,
    action_spec: TensorSpec,
    data: TensorDictBase | None,
    device: torch.device | str | None = None,
) -> SACLoss:
    """The registered builder of SAC: :func:`build_sac_policy`'s actor and ``cfg``'s critic.

    Raises:
        ConfigError: ``normalize_observations`` without offline data.

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> cfg = algo_config("sac", overrides={"num_cells": 16})
        >>> loss = build_sac(cfg, observation_dim=3, action_spec=Bounded(-1.0, 1.0, shape=(2,)),
        ...                  data=None)
        >>> float(loss.alpha) == cfg.alpha_init
        True
    """
    actor = build_sac_policy(
        cfg, observation_dim=observation_dim, action_spec=action_spec, device=device
    )
    return make_actor_critic_loss(
        SACLoss,
        actor,
        observation_dim,
        action_spec,
        device=device,
        **normalization_statistics(cfg, data),
        **actor_critic_kwargs(cfg),
        **entropy_kwargs(cfg, action_spec),
    )


SAC = Algorithm(
    name="sac",
    config_class=SACConfig,
    loss_class=SACLoss,
    build=build_sac,
    build_policy=build_sac_policy,
    description="Soft Actor-Critic (Haarnoja et al., 2018) with entropy tuning, on a QEnsemble",
)
