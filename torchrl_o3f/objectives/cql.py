"""Conservative Q-Learning on a shared :class:`~torchrl_o3f.modules.QEnsemble` (SAC + CQL(H))."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import MISSING
from tensordict import TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential
from torch import nn
from torchrl.data import TensorSpec

from torchrl_o3f.modules.actors import make_sac_actor
from torchrl_o3f.modules.ensemble import QEnsemble
from torchrl_o3f.objectives.actor_critic import actor_critic_kwargs, make_actor_critic_loss
from torchrl_o3f.objectives.base import Annealable, normalization_statistics
from torchrl_o3f.objectives.registry import Algorithm, yaml_defaults
from torchrl_o3f.objectives.sac import SACConfig, SACLoss, build_sac_policy, entropy_kwargs

__all__ = ["CQL", "CQLConfig", "CQLLoss", "build_cql", "make_cql_loss"]

_DEFAULTS = yaml_defaults("cql")  # the keyword defaults: config/algo/cql.yaml's generic values

_MAX_ALPHA_PRIME = 1e6  # d3rlpy's and the CQL authors' clip of the Lagrange multiplier


class CQLLoss(SACLoss):
    r"""CQL(H) (Kumar et al., 2020) as d3rlpy implements it, on a ``QEnsemble`` trained in place.

    SAC's actor, entropy and TD terms (:class:`~torchrl_o3f.objectives.SACLoss`; the yaml's
    backup is d3rlpy's ``"mean"``: ``V'(s') = reduce_i Q'_i(s', tanh-mean action)``) plus a
    conservative term on every member ``i``:

    .. math::

        g_i &= \mathbb{E}_s \Big[\log \sum_{a_j} \exp\big(Q_i(s, a_j) - \log \mu(a_j)\big)
               - \mathbb{E}_{a \sim D} Q_i(s, a)\Big] \\
        L_{cql} &= w \textstyle\sum_i g_i
            \quad\text{or, with } \texttt{lagrange}:\quad
            \alpha' w \textstyle\sum_i (g_i - \tau) \\
        L_{\alpha'} &= -\alpha' w\, \tfrac{1}{m}\textstyle\sum_i (g_i - \tau)
            \quad\text{(}g_i\text{ detached; } \alpha' = e^{\log\alpha'}\text{ clipped to }
            [0, 10^6]\text{)}

    where the ``3 n`` actions ``a_j`` are ``n = n_action_samples`` uniform actions in the spec
    bounds (``mu`` = 1 / box volume), ``n`` samples of ``pi(.|s)`` and ``n`` samples of
    ``pi(.|s')`` (``mu`` = their detached policy densities), all scored at ``s``. ``w`` is
    ``cql_weight`` and ``tau`` is ``lagrange_threshold``. With ``lagrange=False`` (the fixed
    weight variant) ``alpha'`` is unused and its parameter is frozen; the ``alpha_prime`` group
    exists either way, so every configuration has the same optimisers.

    Changing hyper-parameters during training (the paper's Figure 3 loosening):
    ``cql_weight`` and ``lagrange_threshold`` are buffers read at every call; assign a number.
    Setting ``lagrange_threshold`` on a fixed-weight CQL raises (it would have no effect).

    Args:
        actor_network: the policy, e.g. :func:`~torchrl_o3f.modules.actors.make_sac_actor`.
        qvalue_network: the :class:`~torchrl_o3f.modules.QEnsemble` to train (in place).

    Keyword Args (defaults: the generic values of ``config/algo/cql.yaml``):
        action_spec: the bounded action spec (the uniform actions are drawn in its bounds).
        cql_weight: ``w`` (d3rlpy's ``conservative_weight``, the CQL code's ``min_q_weight``).
        lagrange: learn ``alpha'`` to keep the gap at ``lagrange_threshold``.
        lagrange_threshold: ``tau`` (d3rlpy's ``alpha_threshold``).
        alpha_prime_init: the initial ``alpha'``.
        n_action_samples: ``n``, actions per source and observation.
        alpha_init, target_entropy, backup, qvalue_reduction, subset_size, reward_scale,
            reward_shift: as :class:`~torchrl_o3f.objectives.SACLoss` (``target_entropy``
            ``None``: the yaml's ``target_entropy_per_dim`` times the action size).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> loss = make_cql_loss(3, Bounded(-1.0, 1.0, shape=(2,)), num_cells=16, depth=2,
        ...                      lagrange=True, lagrange_threshold=5.0)
        >>> td = TensorDict({
        ...     "observation": torch.randn(8, 3), "action": torch.rand(8, 2) * 2 - 1,
        ...     "next": {"observation": torch.randn(8, 3), "reward": torch.randn(8, 1),
        ...              "done": torch.zeros(8, 1, dtype=torch.bool),
        ...              "terminated": torch.zeros(8, 1, dtype=torch.bool)}}, batch_size=[8])
        >>> out = loss(td)
        >>> sorted(k for k in out.keys() if k.startswith("loss_"))
        ['loss_actor', 'loss_alpha', 'loss_alpha_prime', 'loss_cql', 'loss_qvalue']
        >>> sorted(loss.parameter_groups())
        ['actor', 'alpha', 'alpha_prime', 'qvalue']
        >>> loss.lagrange_threshold = 0.5   # loosen online
    """

    _target_entropy_per_dim = _DEFAULTS["target_entropy_per_dim"]
    _default_gamma = _DEFAULTS["gamma"]
    out_keys = [
        "loss_qvalue",
        "loss_cql",
        "loss_alpha_prime",
        "loss_actor",
        "loss_alpha",
        "qvalue_mean",
        "qvalue_std",
        "target_mean",
        "cql_gap",
        "alpha_prime",
        "alpha",
        "entropy",
    ]

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_network: QEnsemble,
        *,
        action_spec: TensorSpec,
        cql_weight: float = _DEFAULTS["cql_weight"],
        lagrange: bool = _DEFAULTS["lagrange"],
        lagrange_threshold: float = _DEFAULTS["lagrange_threshold"],
        alpha_prime_init: float = _DEFAULTS["alpha_prime_init"],
        n_action_samples: int = _DEFAULTS["n_action_samples"],
        alpha_init: float = _DEFAULTS["alpha_init"],
        target_entropy: float | None = None,
        backup: str = _DEFAULTS["backup"],
        qvalue_reduction: str = _DEFAULTS["qvalue_reduction"],
        subset_size: int = _DEFAULTS["subset_size"],
        reward_scale: float = _DEFAULTS["reward_scale"],
        reward_shift: float = _DEFAULTS["reward_shift"],
    ):
        name = type(self).__name__
        if n_action_samples < 1:
            raise ValueError(f"{name}: n_action_samples must be >= 1, got {n_action_samples}")
        if not alpha_prime_init > 0:
            raise ValueError(f"{name}: alpha_prime_init must be > 0, got {alpha_prime_init}")
        super().__init__(
            actor_network,
            qvalue_network,
            action_spec=action_spec,
            alpha_init=alpha_init,
            target_entropy=target_entropy,
            backup=backup,
            qvalue_reduction=qvalue_reduction,
            subset_size=subset_size,
            reward_scale=reward_scale,
            reward_shift=reward_shift,
        )
        device = qvalue_network.device
        self.lagrange = bool(lagrange)
        self.n_action_samples = int(n_action_samples)
        self.log_alpha_prime = nn.Parameter(
            torch.tensor(math.log(alpha_prime_init), device=device), requires_grad=self.lagrange
        )
        self.register_annealable("cql_weight", cql_weight, device)
        # set directly: a fixed-weight CQL refuses a threshold schedule, not its yaml's value
        self.register_buffer("_lagrange_threshold", torch.tensor(0.0, device=device))
        self._lagrange_threshold.fill_(_finite("lagrange_threshold", lagrange_threshold))
        # log of the uniform density over the action box
        self.register_buffer(
            "uniform_log_density", -(self.action_high - self.action_low).log().sum()
        )

    # ----------------------------------------------------------------- hyper-parameters
    cql_weight = Annealable(
        "The conservative weight ``w`` (a buffer; assign a float to anneal).",
        check=lambda loss, v: v >= 0 or "must be >= 0",
    )
    lagrange_threshold = Annealable(
        "The gap ``tau`` the Lagrange multiplier enforces (a buffer; assign to anneal).",
        check=lambda loss, v: (
            loss.lagrange
            or (
                "has no effect on the fixed-weight CQL (lagrange=False): anneal cql_weight "
                "instead, or build the loss with lagrange=True (algo.lagrange=true)"
            )
        ),
    )

    @property
    def alpha_prime(self) -> torch.Tensor:
        """The Lagrange multiplier ``alpha'`` (clipped ``exp(log_alpha_prime)``), detached."""
        return self.log_alpha_prime.detach().exp().clamp_max(_MAX_ALPHA_PRIME)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``actor``, ``qvalue``, ``alpha`` and ``alpha_prime`` (frozen unless ``lagrange``)."""
        return {**super().parameter_groups(), "alpha_prime": [self.log_alpha_prime]}

    # ----------------------------------------------------------------- the maths
    def _conservative_gap(self, obs: torch.Tensor, next_obs: torch.Tensor, pred: torch.Tensor):
        """Per-member gap ``g_i`` (``[m]``): logsumexp over sampled actions minus Q on data."""
        n = self.n_action_samples
        with torch.no_grad():
            shape = (*obs.shape[:-1], n, self.action_low.numel())
            uniform = torch.rand(shape, device=obs.device)
            uniform = torch.addcmul(self.action_low, uniform, self.action_high - self.action_low)
            pi_action, pi_log_prob = self._sample(obs, n)
            next_action, next_log_prob = self._sample(next_obs, n)
            actions = torch.cat([uniform, pi_action, next_action], -2)  # [*B, 3n, A]
            log_density = torch.cat(
                [self.uniform_log_density.expand_as(pi_log_prob), pi_log_prob, next_log_prob], -2
            )
        q = self.qvalue_network.values(obs.unsqueeze(-2), actions)  # [m, *B, 3n, 1]
        logsumexp = torch.logsumexp(q - log_density, dim=-2)  # [m, *B, 1]
        return (logsumexp - pred).mean(tuple(range(1, pred.dim())))

    def _critic_terms(self, obs, act, next_obs, reward, terminated):
        losses, diagnostics, pred, td_error = super()._critic_terms(
            obs, act, next_obs, reward, terminated
        )
        gap = self._conservative_gap(obs, next_obs, pred)
        if self.lagrange:
            alpha_prime = self.log_alpha_prime.exp().clamp_max(_MAX_ALPHA_PRIME)
            excess = gap - self._lagrange_threshold
            losses["loss_cql"] = alpha_prime.detach() * self._cql_weight * excess.sum()
            losses["loss_alpha_prime"] = -(alpha_prime * self._cql_weight * excess.detach()).mean()
        else:
            losses["loss_cql"] = self._cql_weight * gap.sum()
        diagnostics["cql_gap"] = gap.detach().mean()
        diagnostics["alpha_prime"] = self.alpha_prime
        return losses, diagnostics, pred, td_error


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def make_cql_loss(
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
) -> CQLLoss:
    """Build a :class:`CQLLoss` with CQL's networks: a TanhNormal actor and a ``QEnsemble``.

    Defaults: the generic values of ``config/algo/cql.yaml``.

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
        **loss_kwargs: forwarded to :class:`CQLLoss`.

    Example:
        >>> from torchrl.data import Bounded
        >>> loss = make_cql_loss(17, Bounded(-1.0, 1.0, shape=(6,)), num_cells=32)
        >>> loss.lagrange, float(loss.cql_weight), loss.n_action_samples
        (False, 5.0, 10)
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
        CQLLoss,
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
class CQLConfig(SACConfig):
    """CQL's own hyper-parameters, on top of SAC's (values: ``config/algo/cql.yaml``).

    Attributes:
        cql_weight: the conservative weight ``w``.
        lagrange: the Lagrange variant (``alpha'`` learned to hold the gap at the threshold).
        lagrange_threshold: the gap ``tau`` of the Lagrange variant.
        alpha_prime_init: the initial Lagrange multiplier.
        n_action_samples: sampled actions per source (uniform, pi(s), pi(s')) and state.

    Example:
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> cfg = algo_config("cql", task="antmaze-umaze")
        >>> cfg.lagrange, cfg.lagrange_threshold, cfg.loosening
        (True, 5.0, {'param': 'lagrange_threshold', 'end': 0.5})
    """

    cql_weight: float = MISSING
    lagrange: bool = MISSING
    lagrange_threshold: float = MISSING
    alpha_prime_init: float = MISSING
    n_action_samples: int = MISSING


def build_cql(
    cfg: CQLConfig,
    *,
    observation_dim: int,
    action_spec: TensorSpec,
    data: TensorDictBase | None,
    device: torch.device | str | None = None,
) -> CQLLoss:
    """The registered builder of CQL: SAC's policy builder's actor, ``cfg``'s critic and term.

    Raises:
        ConfigError: ``normalize_observations`` without offline data.

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> cfg = algo_config("cql", task="hopper-medium", overrides={"num_cells": 16})
        >>> loss = build_cql(cfg, observation_dim=3, action_spec=Bounded(-1.0, 1.0, shape=(2,)),
        ...                  data=None)
        >>> float(loss.cql_weight) == cfg.cql_weight, loss.lagrange
        (True, False)
    """
    actor = build_sac_policy(
        cfg, observation_dim=observation_dim, action_spec=action_spec, device=device
    )
    return make_actor_critic_loss(
        CQLLoss,
        actor,
        observation_dim,
        action_spec,
        device=device,
        cql_weight=cfg.cql_weight,
        lagrange=cfg.lagrange,
        lagrange_threshold=cfg.lagrange_threshold,
        alpha_prime_init=cfg.alpha_prime_init,
        n_action_samples=cfg.n_action_samples,
        **normalization_statistics(cfg, data),
        **actor_critic_kwargs(cfg),
        **entropy_kwargs(cfg, action_spec),
    )


CQL = Algorithm(
    name="cql",
    config_class=CQLConfig,
    loss_class=CQLLoss,
    build=build_cql,
    build_policy=build_sac_policy,
    description="Conservative Q-Learning (Kumar et al., 2020), d3rlpy's CQL(H), on a QEnsemble",
)
