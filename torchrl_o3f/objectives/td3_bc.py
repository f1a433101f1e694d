"""TD3+BC (Fujimoto & Gu, 2021) on a shared :class:`~torchrl_o3f.modules.QEnsemble`.

The TD(0) regression of the critics is :class:`~torchrl_o3f.objectives.actor_critic.
ActorCriticLoss`'s; this file adds TD3's target (the target actor's action with clipped noise)
and the actor's Q term with behavior cloning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from tensordict import TensorDictBase, TensorDictParams
from tensordict.nn import TensorDictModule
from torchrl.data import TensorSpec

from torchrl_o3f.modules.actors import TanhDeterministicNet, make_deterministic_actor
from torchrl_o3f.modules.ensemble import QEnsemble
from torchrl_o3f.objectives.actor_critic import (
    ActorCriticConfig,
    ActorCriticLoss,
    actor_critic_kwargs,
    make_actor_critic_loss,
)
from torchrl_o3f.objectives.base import Annealable, normalization_statistics
from torchrl_o3f.objectives.common import make_target_params, observation_statistics
from torchrl_o3f.objectives.registry import Algorithm, yaml_defaults

__all__ = [
    "TD3_BC",
    "TD3BCConfig",
    "TD3BCLoss",
    "build_td3_bc",
    "build_td3_bc_policy",
    "make_td3_bc_loss",
    "observation_statistics",
]

_DEFAULTS = yaml_defaults("td3_bc")  # the keyword defaults: config/algo/td3_bc.yaml's values


class TD3BCLoss(ActorCriticLoss):
    r"""TD3+BC (Fujimoto & Gu, 2021): TD3 whose actor also regresses onto the dataset actions.

    For a batch ``(s, a, r, s', terminated)``, with ``\bar\pi`` and ``\bar Q_i`` the target
    actor and critics and ``\epsilon \sim \mathcal{N}(0, 1)`` drawn per action entry:

    .. math::

        a' &= \mathrm{clip}(\bar\pi(s') + h\, \mathrm{clip}(\sigma \epsilon, -c, c), low, high)\\
        L_Q &= \textstyle\sum_i \mathbb{E}\, (Q_i(s, a) - r - \gamma (1 - d) \min_i \bar Q_i(s',
            a'))^2 \\
        L_\pi &= -\lambda\, \mathbb{E}\, Q_1(s, \pi(s)) + \mathbb{E}\, (\pi(s) - a)^2, \quad
            \lambda = \alpha / \mathbb{E}\, |Q_1(s, \pi(s))| \quad\text{(detached)}

    with ``h`` the half range of the action bounds (``sigma = policy_noise`` and ``c =
    noise_clip`` are in units of it) and ``Q_1`` the ensemble's first member, read through
    detached parameters. ``critic_loss`` gives ``L_Q`` alone (TD3's delayed actor updates:
    the trainer's ``actor_delay``). The actor's targets are ``target_actor_network_params``.

    Args:
        actor_network: a deterministic actor from
            :func:`~torchrl_o3f.modules.actors.make_deterministic_actor`.
        qvalue_network: the :class:`~torchrl_o3f.modules.QEnsemble` to train (in place).

    Keyword Args (defaults: the generic values of ``config/algo/td3_bc.yaml``):
        action_spec: the bounded action spec.
        alpha: the weight of the Q term against behavior cloning (a buffer, annealable).
        policy_noise: std of the target policy smoothing noise.
        noise_clip: its clip.
        backup: ``"smoothed"`` (the target above; the only one).
        qvalue_reduction, subset_size, reward_scale, reward_shift: as :class:`ActorCriticLoss`.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> loss = make_td3_bc_loss(3, Bounded(-1.0, 1.0, shape=(2,)), num_cells=16)
        >>> td = TensorDict({
        ...     "observation": torch.randn(8, 3), "action": torch.rand(8, 2) * 2 - 1,
        ...     "next": {"observation": torch.randn(8, 3), "reward": torch.randn(8, 1),
        ...              "done": torch.zeros(8, 1, dtype=torch.bool),
        ...              "terminated": torch.zeros(8, 1, dtype=torch.bool)}}, batch_size=[8])
        >>> out = loss(td)
        >>> (out["loss_actor"] + out["loss_qvalue"]).backward()
        >>> sorted(loss.parameter_groups()), sorted(loss.critic_loss(td).keys())
        (['actor', 'qvalue'], ['loss_qvalue', 'qvalue_mean'])
    """

    target_actor_network_params: TensorDictParams
    _backups = ("smoothed",)
    _default_gamma = _DEFAULTS["gamma"]
    alpha = Annealable(
        "TD3+BC's alpha, the Q term's weight (a buffer; assign a float to anneal)",
        check=lambda loss, v: v >= 0 or "must be >= 0",
    )

    def __init__(
        self,
        actor_network: TensorDictModule,
        qvalue_network: QEnsemble,
        *,
        action_spec: TensorSpec,
        alpha: float = _DEFAULTS["alpha"],
        policy_noise: float = _DEFAULTS["policy_noise"],
        noise_clip: float = _DEFAULTS["noise_clip"],
        backup: str = _DEFAULTS["backup"],
        qvalue_reduction: str = _DEFAULTS["qvalue_reduction"],
        subset_size: int = _DEFAULTS["subset_size"],
        reward_scale: float = _DEFAULTS["reward_scale"],
        reward_shift: float = _DEFAULTS["reward_shift"],
    ):
        if policy_noise < 0 or noise_clip < 0:
            raise ValueError(
                f"need policy_noise, noise_clip >= 0, got {policy_noise}, {noise_clip}"
            )
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
        self.target_actor_network_params = make_target_params(actor_network)
        self._has_update_associated["actor_network"] = False
        device = qvalue_network.device
        self.register_annealable("alpha", alpha, device)
        self.policy_noise = float(policy_noise)
        self.noise_clip = float(noise_clip)
        self.register_buffer(
            "first_member", torch.zeros(1, dtype=torch.long, device=device), persistent=False
        )

    @classmethod
    def _check_actor(cls, actor_network) -> None:
        if not isinstance(getattr(actor_network, "module", None), TanhDeterministicNet):
            raise TypeError(
                f"{cls.__name__}: actor_network must be a deterministic actor from "
                f"make_deterministic_actor, got {type(actor_network).__name__}"
            )

    def _next_value(self, next_obs: torch.Tensor) -> torch.Tensor:
        """``min_i Q'_i(s', a')`` at the target actor's smoothed action, ``[*B, 1]``, no grad."""
        with torch.no_grad():
            action = self.actor_network.module(next_obs, self.target_actor_network_params["module"])
            noise = (torch.randn_like(action) * self.policy_noise).clamp(
                -self.noise_clip, self.noise_clip
            )
            action = self._project(action + noise * (self.action_high - self.action_low) / 2)
            return self._target_q(next_obs, action)

    def _actor_terms(self, obs, act, pred):
        action = self.actor_network.module(obs)
        frozen = self._detached_qvalue_params()
        q = self.qvalue_network.values(obs, action, frozen, members=self.first_member)[0]
        q_weight = self._alpha / q.abs().mean().detach()
        bc_mse = (action - act).square().mean()
        loss_actor = bc_mse - q_weight * q.mean()
        diagnostics = {
            "q_weight": q_weight.detach(),
            "bc_mse": bc_mse.detach(),
            "actor_q_mean": q.mean().detach(),
        }
        return {"loss_actor": loss_actor}, diagnostics


def make_td3_bc_loss(
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
) -> TD3BCLoss:
    """A :class:`TD3BCLoss` with TD3's networks, the actor and critics normalising observations.

    Defaults: the generic values of ``config/algo/td3_bc.yaml``.

    Args:
        observation_dim: size of the (flat) observation.
        action_spec: bounded action spec of the environment.
        num_qvalue: critics.
        num_cells: width of every hidden layer (actor and critics).
        depth: hidden layers per network.
        layer_norm: LayerNorm in the critics.
        gamma: discount.
        observation_loc: subtracted from observations in both networks (``None``: 0).
        observation_scale: divides them, after (``None``: 1).
        device: device of every network.
        **loss_kwargs: forwarded to :class:`TD3BCLoss` (``alpha``, ``policy_noise``, ...).

    Example:
        >>> from torchrl.data import Bounded
        >>> loss = make_td3_bc_loss(17, Bounded(-1.0, 1.0, shape=(6,)), num_cells=32)
        >>> loss.qvalue_network.num_members, float(loss.alpha)
        (2, 2.5)
    """
    norm = {"observation_loc": observation_loc, "observation_scale": observation_scale}
    actor = make_deterministic_actor(
        observation_dim, action_spec, num_cells=num_cells, depth=depth, device=device, **norm
    )
    return make_actor_critic_loss(
        TD3BCLoss,
        actor,
        observation_dim,
        action_spec,
        num_qvalue=num_qvalue,
        num_cells=num_cells,
        depth=depth,
        layer_norm=layer_norm,
        gamma=gamma,
        device=device,
        **norm,
        **loss_kwargs,
    )


# ------------------------------------------------------------------------------ registration
@dataclass
class TD3BCConfig(ActorCriticConfig):
    """TD3+BC's own hyper-parameters (values: ``config/algo/td3_bc.yaml``).

    Attributes:
        alpha: the weight of the Q term against behavior cloning.
        policy_noise: std of the target policy smoothing noise (in half action ranges).
        noise_clip: its clip (in half action ranges).

    Example:
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> cfg = algo_config("td3_bc", task="hopper-medium")
        >>> cfg.alpha, cfg.actor_delay, cfg.normalize_observations
        (2.5, 2, True)
    """

    alpha: float = MISSING
    policy_noise: float = MISSING
    noise_clip: float = MISSING


def build_td3_bc_policy(
    cfg: TD3BCConfig,
    *,
    observation_dim: int,
    action_spec: TensorSpec,
    device: torch.device | str | None = None,
) -> TensorDictModule:
    """TD3+BC's acting module alone: the deterministic actor of ``cfg``'s sizes.

    Its observation normaliser is always there (identity statistics until set).

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> policy = build_td3_bc_policy(algo_config("td3_bc", overrides={"num_cells": 16}),
        ...                              observation_dim=3,
        ...                              action_spec=Bounded(-1.0, 1.0, shape=(2,)))
        >>> policy.out_keys
        ['action']
    """
    return make_deterministic_actor(
        observation_dim, action_spec, num_cells=cfg.num_cells, depth=cfg.depth, device=device
    )


def build_td3_bc(
    cfg: TD3BCConfig,
    *,
    observation_dim: int,
    action_spec: TensorSpec,
    data: TensorDictBase | None,
    device: torch.device | str | None = None,
) -> TD3BCLoss:
    """The registered builder of TD3+BC: :func:`build_td3_bc_policy`'s actor, ``cfg``'s critic.

    Raises:
        ConfigError: ``normalize_observations`` without offline data.

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> cfg = algo_config("td3_bc", overrides={"normalize_observations": False})
        >>> loss = build_td3_bc(cfg, observation_dim=3, action_spec=Bounded(-1.0, 1.0, shape=(2,)),
        ...                     data=None)
        >>> loss.policy_noise, loss.noise_clip
        (0.2, 0.5)
    """
    norm = normalization_statistics(cfg, data)
    actor = build_td3_bc_policy(
        cfg, observation_dim=observation_dim, action_spec=action_spec, device=device
    )
    return make_actor_critic_loss(
        TD3BCLoss,
        actor,
        observation_dim,
        action_spec,
        device=device,
        alpha=cfg.alpha,
        policy_noise=cfg.policy_noise,
        noise_clip=cfg.noise_clip,
        **norm,
        **actor_critic_kwargs(cfg),
    )


TD3_BC = Algorithm(
    name="td3_bc",
    config_class=TD3BCConfig,
    loss_class=TD3BCLoss,
    build=build_td3_bc,
    build_policy=build_td3_bc_policy,
    description="TD3+BC (Fujimoto & Gu, 2021) on a QEnsemble",
)
