"""LAPO with O3F's ensemble critic (REDQ-style random-subset target), as a torchrl LossModule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import MISSING
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from torch import nn
from torchrl.data import TensorSpec

from torchrl_o3f.errors import ConfigError
from torchrl_o3f.modules.ensemble import QEnsemble
from torchrl_o3f.modules.lapo import LAPOCVAE, LAPOPolicy, LatentActor, make_lapo_policy
from torchrl_o3f.modules.networks import make_mlp
from torchrl_o3f.objectives.base import EnsembleLoss
from torchrl_o3f.objectives.common import (
    call_on_tensor,
    lapo_reward_config,
    make_target_params,
    module_params,
    read_tensors,
)
from torchrl_o3f.objectives.registry import AlgoConfig, Algorithm, yaml_defaults

__all__ = [
    "LAPO",
    "LAPOConfig",
    "LAPOLoss",
    "build_lapo",
    "build_lapo_policy",
    "lapo_reward_config",
    "make_lapo_loss",
]

_DEFAULTS = yaml_defaults("lapo")  # the keyword defaults: config/algo/lapo.yaml's generic values


class LAPOLoss(EnsembleLoss):
    r"""LAPO (Chen et al., 2022) with O3F's critic: a ``QEnsemble`` with a random-subset target.

    On a batch ``(s, a, r, s', d)`` in raw env units (normalised inside with the CVAE's
    statistics; ``r <- (r + reward_shift) * reward_scale``), with
    :math:`Q_\lambda = \lambda \min_{i \in S} Q_i + (1 - \lambda) \max_{i \in S} Q_i` over a random
    subset :math:`S` of ``target_subset_size`` target members (all members if ``None``):

    .. math::

        L_Q &= \textstyle\sum_i \mathbb{E}\,(Q_i(s, a) - r - \gamma (1 - d) V(s'))^2 \\
        L_V &= \mathbb{E}\,(V(s) - \mathrm{clip}(\bar Q_\lambda(s, \bar D(s, \bar\pi(s) +
               \epsilon)), v_{min}, v_{max}))^2,\ \epsilon = \mathrm{clip}(0.1 N(0,1), \pm 0.2)\\
        A &= r + \gamma (1 - d) \bar Q_\lambda(s', \bar D(s', \bar\pi(s'))) - V(s),\quad
        w = \tau_e \text{ if } A > 0 \text{ else } 1 - \tau_e \\
        L_{VAE} &= \mathbb{E}\, w\, (\|D(s, z) - a\|^2 + \beta\, KL(E(s, a) \| N(0, I))) \\
        L_\pi &= -\mathbb{E}\, \mathrm{mean}_i\, Q_i(s, \bar D(s, \pi(s)))

    (bars: target parameters, soft-updated by :class:`torchrl.objectives.SoftUpdate`:
    ``target_qvalue_network_params``, ``target_decoder_params``, ``target_latent_actor_params``).

    Three groups train separately (:meth:`parameter_groups`): ``critic`` (the ensemble and V,
    :meth:`critic_loss`), ``vae`` (:meth:`vae_loss`) and ``actor`` (:meth:`actor_loss`), so a
    trainer can take 20 critic steps per environment step and one VAE/actor step.
    :meth:`forward` computes all of them, sharing the target evaluations.

    The ``QEnsemble`` takes raw observations and actions: the loss copies the CVAE's
    normalisation statistics into the ensemble's input-normalisation buffers at construction
    (call :meth:`sync_normalization` after changing them), so the O3F selector can score raw
    candidate actions with it. V(s) sees normalised observations.

    Args:
        cvae: the :class:`~torchrl_o3f.modules.LAPOCVAE` (with the dataset statistics).
        latent_actor: the :class:`~torchrl_o3f.modules.LatentActor`.
        qvalue_network: the :class:`~torchrl_o3f.modules.QEnsemble` critic (trained in place).
        value_network: V on normalised observations (an ``nn.Module``, or a TensorDictModule
            with one in_key and one out_key).

    Keyword Args (defaults: the generic values of ``config/algo/lapo.yaml``):
        action_spec: the bounded action spec (the policy clips to it).
        q_min_weight: LAPO's min/max mixing lambda.
        advantage_weight: tau_e of the binary advantage weights.
        kl_weight: beta of the KL term.
        target_noise: std of the target latent-policy smoothing noise.
        target_noise_clip: its clip.
        target_subset_size: REDQ subset size of the target ensemble (``None``: all members).
        reward_scale, reward_shift: reward pre-processing (see :func:`lapo_reward_config`).
        value_min, value_max: clip of V's regression target (``None``: no clip).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl.objectives import SoftUpdate
        >>> n = 64
        >>> data = TensorDict({
        ...     "observation": torch.randn(n, 3), "action": torch.rand(n, 2) * 2 - 1,
        ...     "next": {"observation": torch.randn(n, 3), "reward": torch.rand(n, 1),
        ...              "done": torch.zeros(n, 1, dtype=torch.bool),
        ...              "terminated": torch.zeros(n, 1, dtype=torch.bool)}}, batch_size=[n])
        >>> loss = make_lapo_loss(3, Bounded(-1.0, 1.0, shape=(2,)), data=data,
        ...                       num_cells=16)
        >>> updater = SoftUpdate(loss, tau=0.005)
        >>> sorted(k for k in loss(data).keys() if k.startswith("loss_"))
        ['loss_actor', 'loss_qvalue', 'loss_vae', 'loss_value']
        >>> loss.critic_loss(data)["loss_qvalue"].shape
        torch.Size([])
        >>> loss.policy(data[:4])["action"].shape
        torch.Size([4, 2])
    """

    out_keys = [
        "loss_qvalue",
        "loss_value",
        "loss_vae",
        "loss_actor",
        "qvalue_mean",
        "qvalue_std",
        "value_mean",
        "target_value_mean",
        "advantage_mean",
        "weight_mean",
        "reconstruction",
        "kl",
    ]

    actor_groups = ("vae", "actor")  # still in critic-only updates
    _default_gamma = _DEFAULTS["gamma"]
    _policy_entries = {  # the policy decodes with the target decoder
        **{k: k for k in ("cvae.", "latent_actor.", "action_low", "action_high")},
        "target_decoder_params.": "decoder_params.",
    }
    target_qvalue_network_params: TensorDictParams
    target_decoder_params: TensorDictParams
    target_latent_actor_params: TensorDictParams

    def __init__(
        self,
        cvae: LAPOCVAE,
        latent_actor: LatentActor,
        qvalue_network: QEnsemble,
        value_network: nn.Module,
        *,
        action_spec: TensorSpec,
        q_min_weight: float = _DEFAULTS["q_min_weight"],
        advantage_weight: float = _DEFAULTS["advantage_weight"],
        kl_weight: float = _DEFAULTS["kl_weight"],
        target_noise: float = _DEFAULTS["target_noise"],
        target_noise_clip: float = _DEFAULTS["target_noise_clip"],
        target_subset_size: int | None = _DEFAULTS["target_subset_size"] or None,
        reward_scale: float = 1.0,
        reward_shift: float = 0.0,
        value_min: float | None = None,
        value_max: float | None = None,
    ):
        self._check_ensemble(qvalue_network)
        if not isinstance(cvae, LAPOCVAE) or not isinstance(latent_actor, LatentActor):
            raise TypeError("cvae must be a LAPOCVAE and latent_actor a LatentActor")
        if (qvalue_network.observation_dim, qvalue_network.action_dim) != (
            cvae.observation_dim,
            cvae.action_dim,
        ):
            raise ValueError(
                "the ensemble and the CVAE disagree on dims: "
                f"{(qvalue_network.observation_dim, qvalue_network.action_dim)} vs "
                f"{(cvae.observation_dim, cvae.action_dim)}"
            )
        m = qvalue_network.num_members
        if target_subset_size is not None and not 1 <= target_subset_size <= m:
            raise ValueError(f"target_subset_size must be in [1, {m}] or None")
        if not 0.0 <= q_min_weight <= 1.0:
            raise ValueError(f"q_min_weight must be in [0, 1], got {q_min_weight}")
        if not 0.0 < advantage_weight < 1.0:
            raise ValueError(f"advantage_weight must be in (0, 1), got {advantage_weight}")
        if value_min is not None and value_max is not None and value_min > value_max:
            raise ValueError(f"value_min > value_max: {value_min} > {value_max}")
        super().__init__()
        self.cvae = cvae
        self.latent_actor = latent_actor
        self.qvalue_network = qvalue_network
        self.value_network = value_network
        self.sync_normalization()
        self.target_qvalue_network_params = make_target_params(qvalue_network)
        self.target_decoder_params = make_target_params(cvae.decoder)
        self.target_latent_actor_params = make_target_params(latent_actor)
        for name in ("qvalue_network", "decoder", "latent_actor"):
            self._has_update_associated[name] = False
        device = qvalue_network.device
        self._register_bounds_and_gamma(action_spec, device)
        self.q_min_weight = float(q_min_weight)
        self.advantage_weight = float(advantage_weight)
        self.kl_weight = float(kl_weight)
        self.target_noise = float(target_noise)
        self.target_noise_clip = float(target_noise_clip)
        self.target_subset_size = target_subset_size
        # data-derived settings live in buffers, so a checkpoint restores them
        self.register_buffer("reward_scale", torch.tensor(float(reward_scale), device=device))
        self.register_buffer("reward_shift", torch.tensor(float(reward_shift), device=device))
        bounds = [-math.inf if value_min is None else value_min]
        bounds.append(math.inf if value_max is None else value_max)
        self.register_buffer("value_bounds", torch.tensor(bounds, device=device))

    # ----------------------------------------------------------------- plumbing
    @property
    def value_min(self) -> float | None:
        """Lower clip of V's target (``None``: none)."""
        v = self.value_bounds[0].item()
        return None if math.isinf(v) else v

    @property
    def value_max(self) -> float | None:
        """Upper clip of V's target (``None``: none)."""
        v = self.value_bounds[1].item()
        return None if math.isinf(v) else v

    def sync_normalization(self) -> None:
        """Copy the CVAE's normalisation statistics into the ensemble's input buffers."""
        c = self.cvae
        self.qvalue_network.set_input_normalization(
            c.observation_loc, c.observation_scale, c.action_loc, c.action_scale
        )

    @property
    def decoder_params(self) -> TensorDictBase:
        """The CVAE decoder's own parameters (soft-update source)."""
        return module_params(self.cvae.decoder)

    @property
    def latent_actor_params(self) -> TensorDictBase:
        """The latent actor's own parameters (soft-update source)."""
        return module_params(self.latent_actor)

    @property
    def policy(self) -> LAPOPolicy:
        """The acting policy (latent actor through the target decoder, clipped raw actions)."""
        policy = self.__dict__.get("_policy")
        if policy is None:
            policy = LAPOPolicy(
                self.cvae,
                self.latent_actor,
                self.action_low,
                self.action_high,
                decoder_params=self.target_decoder_params,
                in_keys=[self.tensor_keys.observation],
                out_keys=[self.tensor_keys.action],
            )
            self.__dict__["_policy"] = policy
        return policy

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        self.__dict__.pop("_policy", None)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters per optimiser: ``critic`` (Q ensemble + V), ``vae``, ``actor``."""
        return {
            "critic": list(self.qvalue_network.parameters())
            + list(self.value_network.parameters()),
            "vae": list(self.cvae.parameters()),
            "actor": list(self.latent_actor.parameters()),
        }

    # ----------------------------------------------------------------- the maths
    def _read(self, td: TensorDictBase):
        obs, act, next_obs, reward, terminated = self._read_transition(td)
        if obs.dim() != 2:
            obs, act, next_obs = obs.flatten(0, -2), act.flatten(0, -2), next_obs.flatten(0, -2)
        reward = reward.reshape(-1, 1)
        not_done = (~terminated.reshape(-1, 1).bool()).to(reward.dtype)
        return obs, act, next_obs, self.transform_reward(reward), not_done

    def _target_q_mixed(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Target Q over a random subset of members, ``[B, 1]``: w * min + (1 - w) * max.

        ``w`` is ``q_min_weight`` (BCQ's clipped double Q: the weight of the members' minimum).

        Only the drawn members are evaluated (REDQ's target costs ``target_subset_size``
        members, not the whole ensemble).
        """
        m = self.qvalue_network.num_members
        members = None
        if self.target_subset_size is not None and self.target_subset_size < m:
            members = torch.randperm(m, device="cpu")[: self.target_subset_size]
            members = members.to(obs.device)
        values = self.qvalue_network.values(
            obs, action, self.target_qvalue_network_params, members=members
        )
        q_min = values.min(0).values
        if self.q_min_weight == 1.0:
            return q_min
        return self.q_min_weight * q_min + (1 - self.q_min_weight) * values.max(0).values

    def _target_policy_q(self, obs_norm: torch.Tensor, obs_raw: torch.Tensor, noisy_rows: int):
        """Q_lambda of the target latent policy (no grad); noise on the first ``noisy_rows``."""
        # Noise (here and in the CVAE's reparameterisation) is drawn with torch.randn directly:
        # torchrl runs losses under DETERMINISTIC exploration, which would silence a
        # distribution's sample(), but not this.
        with torch.no_grad():
            z = self.latent_actor(obs_norm, self.target_latent_actor_params)
            if noisy_rows:
                noise = (torch.randn_like(z[:noisy_rows]) * self.target_noise).clamp(
                    -self.target_noise_clip, self.target_noise_clip
                )
                z = torch.cat([z[:noisy_rows] + noise, z[noisy_rows:]], 0)
            action = self.cvae.decoder(obs_norm, z, self.target_decoder_params)
            action = self.cvae.unnormalize_action(action)
            return self._target_q_mixed(obs_raw, action)

    def _clip_value(self, v: torch.Tensor) -> torch.Tensor:
        return torch.clamp(v, self.value_bounds[0], self.value_bounds[1])

    def _critic(self, obs, act, reward, not_done, obs_norm, next_norm, target_pol):
        """``(losses, diagnostics, V(s))`` of the critic group."""
        value = call_on_tensor(self.value_network, obs_norm)
        with torch.no_grad():  # a separate call: the backward pass only spans V(s)
            next_value = call_on_tensor(self.value_network, next_norm)
        target_q = reward + self.gamma * not_done * next_value
        pred = self.qvalue_network.values(obs, act)  # [m, B, 1]
        loss_qvalue = (pred - target_q).square().mean((1, 2)).sum()
        target_v = self._clip_value(target_pol)
        loss_value = (value - target_v).square().mean()
        diagnostics = {
            "qvalue_mean": pred.mean().detach(),
            "qvalue_std": pred.detach().std(0, correction=0).mean(),
            "value_mean": value.mean().detach(),
            "target_value_mean": target_v.mean(),
        }
        return {"loss_qvalue": loss_qvalue, "loss_value": loss_value}, diagnostics, value

    def _vae(self, act, reward, not_done, obs_norm, value, next_pol):
        """``(loss_vae, diagnostics)`` of the advantage-weighted CVAE."""
        with torch.no_grad():
            advantage = reward + self.gamma * not_done * next_pol - value.detach()
            weight = torch.where(advantage > 0, self.advantage_weight, 1 - self.advantage_weight)
        recon, mu, std = self.cvae(obs_norm, self.cvae.normalize_action(act))
        recon_err = (recon - self.cvae.normalize_action(act)).square().sum(-1, keepdim=True)
        kl = 0.5 * (mu.square() + std.square() - 1 - 2 * std.log()).sum(-1, keepdim=True)
        loss_vae = (weight * (recon_err + self.kl_weight * kl)).mean()
        diagnostics = {
            "advantage_mean": advantage.mean(),
            "weight_mean": weight.mean(),
            "reconstruction": recon_err.mean().detach(),
            "kl": kl.mean().detach(),
        }
        return loss_vae, diagnostics

    def _actor(self, obs, obs_norm):
        z = self.latent_actor(obs_norm)
        action = self.cvae.unnormalize_action(
            self.cvae.decoder(obs_norm, z, self.target_decoder_params)
        )
        frozen = module_params(self.qvalue_network).detach()
        return -self.qvalue_network.values(obs, action, frozen).mean()

    def critic_loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        """``loss_qvalue`` (ensemble TD regression) and ``loss_value`` (V onto the policy's Q).

        Only the ``critic`` group receives gradients. Cheap: one target latent-policy pass,
        one target and one online ensemble evaluation, one V pass.
        """
        obs, act, next_obs, reward, not_done = self._read(tensordict)
        obs_norm = self.cvae.normalize_observation(obs)
        next_norm = self.cvae.normalize_observation(next_obs)
        target_pol = self._target_policy_q(obs_norm, obs, noisy_rows=obs.shape[0])
        losses, diagnostics, _ = self._critic(
            obs, act, reward, not_done, obs_norm, next_norm, target_pol
        )
        return TensorDict({**losses, **diagnostics}, batch_size=[])

    def vae_loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        """``loss_vae``: the advantage-weighted CVAE loss (only the ``vae`` group moves)."""
        obs, act, next_obs, reward, not_done = self._read(tensordict)
        obs_norm = self.cvae.normalize_observation(obs)
        next_norm = self.cvae.normalize_observation(next_obs)
        next_pol = self._target_policy_q(next_norm, next_obs, noisy_rows=0)
        with torch.no_grad():
            value = call_on_tensor(self.value_network, obs_norm)
        loss_vae, diagnostics = self._vae(act, reward, not_done, obs_norm, value, next_pol)
        return TensorDict({"loss_vae": loss_vae, **diagnostics}, batch_size=[])

    def actor_loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        """``loss_actor``: -Q of the decoded latent action (only the ``actor`` group moves)."""
        obs, _, _, _, _ = self._read(tensordict)
        loss_actor = self._actor(obs, self.cvae.normalize_observation(obs))
        return TensorDict({"loss_actor": loss_actor}, batch_size=[])

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Every loss of one LAPO step (critic, VAE, actor) and diagnostics, sharing passes."""
        obs, act, next_obs, reward, not_done = self._read(tensordict)
        n = obs.shape[0]
        both_raw = torch.cat([obs, next_obs], 0)
        both_norm = self.cvae.normalize_observation(both_raw)
        obs_norm, next_norm = both_norm[:n], both_norm[n:]
        pol = self._target_policy_q(both_norm, both_raw, noisy_rows=n)
        critic, critic_diagnostics, value = self._critic(
            obs, act, reward, not_done, obs_norm, next_norm, pol[:n]
        )
        loss_vae, vae_diagnostics = self._vae(act, reward, not_done, obs_norm, value, pol[n:])
        losses = {**critic, "loss_vae": loss_vae, "loss_actor": self._actor(obs, obs_norm)}
        return TensorDict({**losses, **critic_diagnostics, **vae_diagnostics}, batch_size=[])


def make_lapo_loss(
    observation_dim: int,
    action_spec: TensorSpec,
    *,
    data: TensorDictBase,
    reward_kind: str = _DEFAULTS["reward_kind"],
    q_min_weight: float = _DEFAULTS["q_min_weight"],
    num_qvalue: int = _DEFAULTS["num_qvalue"],
    num_cells: int = _DEFAULTS["num_cells"],
    depth: int = _DEFAULTS["depth"],
    gamma: float = _DEFAULTS["gamma"],
    layer_norm: bool = _DEFAULTS["layer_norm"],
    policy: LAPOPolicy | None = None,
    device: torch.device | str | None = None,
    **loss_kwargs,
) -> LAPOLoss:
    """Build a :class:`LAPOLoss` from specs and the offline data.

    The data (TED layout) gives the z-scoring statistics (mean and std + 1e-6 of observations
    and actions) and the reward pre-processing (:func:`lapo_reward_config` of ``reward_kind``).
    Defaults: the generic values of ``config/algo/lapo.yaml``.

    Args:
        observation_dim: size of the (flat) observation.
        action_spec: bounded action spec of the environment.
        data: the offline transitions (``observation``, ``action``, ``("next", "reward")``).
        reward_kind: ``"max"`` (r / max|r|) or ``"antmaze"`` (100 r), see
            :func:`lapo_reward_config`.
        q_min_weight: LAPO's min/max mixing of the critic ensemble.
        num_qvalue: ensemble size.
        num_cells: width of every hidden layer.
        depth: hidden layers per network.
        gamma: discount.
        layer_norm: LayerNorm in the critic ensemble.
        policy: whose CVAE and latent actor to train (``None``: new ones of these sizes); the
            data's statistics are set in its CVAE.
        device: device of every network.
        **loss_kwargs: forwarded to :class:`LAPOLoss`; they override the computed reward
            settings and lambda.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> data = TensorDict({"observation": torch.randn(32, 4), "action": torch.rand(32, 2),
        ...                    "next": {"reward": torch.rand(32, 1)}}, batch_size=[32])
        >>> loss = make_lapo_loss(4, Bounded(0.0, 1.0, shape=(2,)), data=data, num_cells=16)
        >>> loss.q_min_weight, loss.qvalue_network.num_members
        (1.0, 5)
    """
    action_dim = action_spec.shape[-1]
    obs, act, rewards = read_tensors(
        data, ["observation", "action", ("next", "reward")], "make_lapo_loss (TED layout)"
    )
    obs = obs.reshape(-1, observation_dim).float()
    act = act.reshape(-1, action_dim).float()
    rewards_cfg = lapo_reward_config(rewards, kind=reward_kind, gamma=gamma)
    cfg = {"q_min_weight": q_min_weight, **rewards_cfg}
    cfg.update(loss_kwargs)
    if policy is None:
        policy = make_lapo_policy(
            observation_dim, action_spec, num_cells=num_cells, depth=depth, device=device
        )
    policy.cvae.set_normalization(obs.mean(0), obs.std(0) + 1e-6, act.mean(0), act.std(0) + 1e-6)
    qvalue = QEnsemble(
        observation_dim,
        action_dim,
        num_members=num_qvalue,
        num_cells=num_cells,
        depth=depth,
        layer_norm=layer_norm,
        device=device,
    )
    value = make_mlp(observation_dim, 1, num_cells=num_cells, depth=depth, device=device)
    loss = LAPOLoss(policy.cvae, policy.latent_actor, qvalue, value, action_spec=action_spec, **cfg)
    loss.make_value_estimator(gamma=gamma)
    return loss


# ------------------------------------------------------------------------------ registration
@dataclass
class LAPOConfig(AlgoConfig):
    """LAPO's own hyper-parameters (values: ``config/algo/lapo.yaml``).

    Attributes:
        q_min_weight: min/max mixing of the target ensemble.
        advantage_weight: tau_e of the binary advantage weights.
        kl_weight: beta of the CVAE's KL term.
        target_noise: std of the target latent-policy smoothing noise.
        target_noise_clip: its clip.
        target_subset_size: REDQ subset of the target ensemble (0: all members).
        reward_kind: ``"max"`` (r / max|r|) or ``"antmaze"`` (100 r).

    Example:
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> cfg = algo_config("lapo", task="antmaze-umaze")
        >>> cfg.q_min_weight, cfg.reward_kind, cfg.utd_ratio
        (0.7, 'antmaze', 20)
    """

    q_min_weight: float = MISSING
    advantage_weight: float = MISSING
    kl_weight: float = MISSING
    target_noise: float = MISSING
    target_noise_clip: float = MISSING
    target_subset_size: int = MISSING
    reward_kind: str = MISSING


def build_lapo_policy(
    cfg: LAPOConfig,
    *,
    observation_dim: int,
    action_spec: TensorSpec,
    device: torch.device | str | None = None,
) -> LAPOPolicy:
    """LAPO's acting module alone: CVAE (identity statistics), latent actor, target decoder.

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> policy = build_lapo_policy(algo_config("lapo", overrides={"num_cells": 16}),
        ...                            observation_dim=4, action_spec=Bounded(0.0, 1.0, shape=(2,)))
        >>> sorted({k.split(".")[0] for k in policy.state_dict()})
        ['action_high', 'action_low', 'cvae', 'decoder_params', 'latent_actor']
    """
    return make_lapo_policy(
        observation_dim, action_spec, num_cells=cfg.num_cells, depth=cfg.depth, device=device
    )


def build_lapo(
    cfg: LAPOConfig,
    *,
    observation_dim: int,
    action_spec: TensorSpec,
    data: TensorDictBase,
    device: torch.device | str | None = None,
) -> LAPOLoss:
    """The registered builder of LAPO: :func:`make_lapo_loss` with ``cfg``'s numbers.

    Raises:
        ConfigError: ``normalize_observations=false`` (LAPO's networks always read z-scored
            states).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.objectives.registry import algo_config
        >>> data = TensorDict({"observation": torch.randn(32, 4), "action": torch.rand(32, 2),
        ...                    "next": {"reward": torch.rand(32, 1)}}, batch_size=[32])
        >>> cfg = algo_config("lapo", overrides={"num_cells": 16})
        >>> loss = build_lapo(cfg, observation_dim=4, action_spec=Bounded(0.0, 1.0, shape=(2,)),
        ...                   data=data)
        >>> loss.target_subset_size
        2
    """
    if not cfg.normalize_observations:
        raise ConfigError(
            "algo.normalize_observations=false, but LAPO z-scores states (and actions) inside "
            "its CVAE with the offline data's statistics, always: set it to true"
        )
    policy = build_lapo_policy(
        cfg, observation_dim=observation_dim, action_spec=action_spec, device=device
    )
    return make_lapo_loss(
        observation_dim,
        action_spec,
        data=data,
        policy=policy,
        reward_kind=cfg.reward_kind,
        q_min_weight=cfg.q_min_weight,
        num_qvalue=cfg.num_qvalue,
        num_cells=cfg.num_cells,
        depth=cfg.depth,
        gamma=cfg.gamma,
        layer_norm=cfg.layer_norm,
        device=device,
        advantage_weight=cfg.advantage_weight,
        kl_weight=cfg.kl_weight,
        target_noise=cfg.target_noise,
        target_noise_clip=cfg.target_noise_clip,
        target_subset_size=cfg.target_subset_size or None,
    )


LAPO = Algorithm(
    name="lapo",
    config_class=LAPOConfig,
    loss_class=LAPOLoss,
    build=build_lapo,
    build_policy=build_lapo_policy,
    description="LAPO (Chen et al., 2022) with O3F's REDQ-style ensemble critic",
    needs_data=True,
)
