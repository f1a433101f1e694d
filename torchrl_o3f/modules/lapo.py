"""LAPO's networks: the state-conditioned CVAE, the latent actor and the acting policy.

LAPO (Chen et al., NeurIPS 2022) learns a conditional VAE of the dataset actions, weighted
towards high-advantage ones, and a deterministic *latent* policy s -> z whose decoded action
D(s, z) maximises Q. States and actions are z-scored with the dataset statistics; the CVAE
holds those statistics (buffers) and the policy un-normalises and clips the decoded action.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.data import TensorSpec

from torchrl_o3f.modules.actors import action_bounds
from torchrl_o3f.modules.networks import (
    make_mlp,
    make_target_params,
    register_normalization_buffers,
    set_normalization_buffers,
)

__all__ = ["LAPOCVAE", "LatentActor", "LatentDecoder", "LAPOPolicy", "make_lapo_policy"]


def _as_vector(value, size: int, name: str, device) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1)
    if value.numel() == 1 and size > 1:
        value = value.expand(size).clone()
    if value.numel() != size:
        raise ValueError(f"{name} must have {size} entries, got {value.numel()}")
    return value


class LatentDecoder(nn.Module):
    """D(s, z) -> normalised action (no squashing: actions are z-scored).

    Args:
        observation_dim: size of the observation.
        latent_dim: size of the latent code.
        action_dim: size of the action.
        num_cells: width of the hidden layers.
        depth: number of hidden layers.
        device: device of the parameters.

    Example:
        >>> import torch
        >>> dec = LatentDecoder(3, 4, 2, num_cells=16)
        >>> dec(torch.zeros(5, 3), torch.zeros(5, 4)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        observation_dim: int,
        latent_dim: int,
        action_dim: int,
        *,
        num_cells: int = 256,
        depth: int = 3,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.net = make_mlp(
            observation_dim + latent_dim,
            action_dim,
            num_cells=num_cells,
            depth=depth,
            device=device,
        )

    def forward(
        self,
        observation: torch.Tensor,
        latent: torch.Tensor,
        params: TensorDictBase | None = None,
    ) -> torch.Tensor:
        """Decode; ``params`` (a tensordict like ``TensorDict.from_module(self)``) overrides."""
        x = torch.cat([observation, latent], -1)
        if params is None:
            return self.net(x)
        flat = dict(params.flatten_keys(".").items())
        return torch.func.functional_call(self, flat, (observation, latent))


class LAPOCVAE(nn.Module):
    """LAPO's state-conditioned VAE of actions, with the dataset normalisation statistics.

    ``E(s, a) -> (mu, std)`` (``log std`` clamped to [-4, 15], as BCQ/LAPO), ``z = mu + std *
    eps``, ``D(s, z) -> a``; every input and output is in normalised units. The buffers
    ``observation_loc/scale`` and ``action_loc/scale`` hold the dataset z-scoring.

    Args:
        observation_dim: size of the observation.
        action_dim: size of the action.
        latent_dim: size of the latent code (default ``2 * action_dim``, as LAPO).
        num_cells: width of the hidden layers of encoder and decoder.
        depth: number of hidden layers.
        observation_loc, observation_scale, action_loc, action_scale: the z-scoring
            statistics (identity by default); see :meth:`set_normalization`.
        device: device of the parameters.

    Example:
        >>> import torch
        >>> vae = LAPOCVAE(3, 2, num_cells=16)
        >>> recon, mu, std = vae(torch.zeros(5, 3), torch.zeros(5, 2))
        >>> recon.shape, mu.shape
        (torch.Size([5, 2]), torch.Size([5, 4]))
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        *,
        latent_dim: int | None = None,
        num_cells: int = 256,
        depth: int = 3,
        observation_loc: torch.Tensor | None = None,
        observation_scale: torch.Tensor | None = None,
        action_loc: torch.Tensor | None = None,
        action_scale: torch.Tensor | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if observation_dim < 1 or action_dim < 1:
            raise ValueError(f"dims must be >= 1, got {observation_dim}, {action_dim}")
        latent_dim = 2 * action_dim if latent_dim is None else int(latent_dim)
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.observation_dim, self.action_dim, self.latent_dim = (
            observation_dim,
            action_dim,
            latent_dim,
        )
        self.encoder = make_mlp(
            observation_dim + action_dim,
            2 * latent_dim,
            num_cells=num_cells,
            depth=depth,
            device=device,
        )
        self.decoder = LatentDecoder(
            observation_dim, latent_dim, action_dim, num_cells=num_cells, depth=depth, device=device
        )
        register_normalization_buffers(self, observation_dim, action_dim, device)
        self.set_normalization(observation_loc, observation_scale, action_loc, action_scale)

    def set_normalization(
        self,
        observation_loc=None,
        observation_scale=None,
        action_loc=None,
        action_scale=None,
    ) -> None:
        """Set the z-scoring statistics (``None`` leaves identity: loc 0, scale 1)."""
        set_normalization_buffers(
            self, observation_loc, observation_scale, action_loc, action_scale
        )

    def normalize_observation(self, observation: torch.Tensor) -> torch.Tensor:
        """Raw observation -> z-scored observation."""
        return (observation - self.observation_loc) / self.observation_scale

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        """Raw action -> z-scored action."""
        return (action - self.action_loc) / self.action_scale

    def unnormalize_action(self, action: torch.Tensor) -> torch.Tensor:
        """Z-scored action -> raw (env units) action."""
        return torch.addcmul(self.action_loc, action, self.action_scale)

    def encode(
        self, observation: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (s, a) -> ``(mu, std)`` of the posterior over z."""
        mu, log_std = self.encoder(torch.cat([observation, action], -1)).chunk(2, -1)
        return mu, log_std.clamp(-4.0, 15.0).exp()

    def forward(
        self, observation: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised (s, a) -> ``(reconstruction, mu, std)`` with a reparameterised sample."""
        mu, std = self.encode(observation, action)
        z = mu + std * torch.randn_like(std)
        return self.decoder(observation, z), mu, std


class LatentActor(nn.Module):
    """LAPO's deterministic latent policy: normalised s -> ``max_latent_action * tanh(MLP(s))``.

    Args:
        observation_dim: size of the observation.
        latent_dim: size of the latent code (the CVAE's).
        num_cells: width of the hidden layers.
        depth: number of hidden layers.
        max_latent_action: bound of the latent action (2.0, as LAPO).
        device: device of the parameters.

    Example:
        >>> import torch
        >>> pi = LatentActor(3, 4, num_cells=16)
        >>> z = pi(torch.randn(5, 3))
        >>> z.shape, bool((z.abs() <= 2).all())
        (torch.Size([5, 4]), True)
    """

    def __init__(
        self,
        observation_dim: int,
        latent_dim: int,
        *,
        num_cells: int = 256,
        depth: int = 3,
        max_latent_action: float = 2.0,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if max_latent_action <= 0:
            raise ValueError(f"max_latent_action must be > 0, got {max_latent_action}")
        self.net = make_mlp(
            observation_dim, latent_dim, num_cells=num_cells, depth=depth, device=device
        )
        self.max_latent_action = float(max_latent_action)

    def forward(self, observation: torch.Tensor, params: TensorDictBase | None = None):
        """Latent action; ``params`` (like ``TensorDict.from_module(self)``) overrides."""
        if params is not None:
            flat = dict(params.flatten_keys(".").items())
            return torch.func.functional_call(self, flat, (observation,))
        return self.max_latent_action * torch.tanh(self.net(observation))


class LAPOPolicy(TensorDictModuleBase):
    """The LAPO policy for a collector: raw obs -> z = pi(s) -> D(s, z) -> raw, clipped action.

    Deterministic (LAPO has no stochastic policy; exploration comes from a post-policy module
    such as the O3F selector), so it acts the same under every exploration type.

    Args:
        cvae: the :class:`LAPOCVAE` (its normalisation statistics and decoder).
        latent_actor: the :class:`LatentActor`.
        action_low: lower action bounds (env units).
        action_high: upper action bounds.
        decoder_params: parameters to decode with instead of the decoder's own (LAPO acts
            through the *target* decoder: :class:`~torchrl_o3f.objectives.LAPOLoss` passes its
            ``target_decoder_params``, which soft updates change in place).
        in_keys: the observation key.
        out_keys: the action key.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> vae, pi = LAPOCVAE(3, 2, num_cells=16), LatentActor(3, 4, num_cells=16)
        >>> policy = LAPOPolicy(vae, pi, -torch.ones(2), torch.ones(2))
        >>> td = policy(TensorDict({"observation": torch.randn(3)}, []))
        >>> td["action"].shape, bool((td["action"].abs() <= 1).all())
        (torch.Size([2]), True)
    """

    def __init__(
        self,
        cvae: LAPOCVAE,
        latent_actor: LatentActor,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        *,
        decoder_params: TensorDictBase | None = None,
        in_keys: Sequence = ("observation",),
        out_keys: Sequence = ("action",),
    ):
        if len(in_keys) != 1 or len(out_keys) != 1:
            raise ValueError(f"need one in_key and one out_key, got {in_keys}, {out_keys}")
        self.in_keys = list(in_keys)
        self.out_keys = list(out_keys)
        super().__init__()
        self.cvae = cvae
        self.latent_actor = latent_actor
        device = cvae.action_loc.device
        low = _as_vector(action_low, cvae.action_dim, "action_low", device)
        high = _as_vector(action_high, cvae.action_dim, "action_high", device)
        if (high <= low).any():
            raise ValueError(f"need action_low < action_high, got {low}, {high}")
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)
        # not a submodule: the params belong to (and are saved with) the loss; the policy's
        # own state dict carries them too (``decoder_params.*``), so it can be saved alone
        self.__dict__["decoder_params"] = decoder_params

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.decoder_params is not None:
            for key, value in self.decoder_params.flatten_keys(".").items():
                kept = value if keep_vars else value.detach()
                destination[f"{prefix}decoder_params.{key}"] = kept

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, *args):
        if self.decoder_params is not None:
            head = f"{prefix}decoder_params."
            for key, value in self.decoder_params.flatten_keys(".").items():
                if head + key in state_dict:
                    value.data.copy_(state_dict.pop(head + key))
                elif strict:
                    missing.append(head + key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, *args)

    def act(self, observation: torch.Tensor) -> torch.Tensor:
        """Raw observation tensor ``[*batch, obs_dim]`` -> clipped raw action."""
        obs = self.cvae.normalize_observation(observation)
        z = self.latent_actor(obs)
        action = self.cvae.decoder(obs, z, self.decoder_params)
        action = self.cvae.unnormalize_action(action)
        return torch.clamp(action, self.action_low, self.action_high)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the action for ``tensordict[in_key]`` (any batch size, including none)."""
        obs = tensordict.get(self.in_keys[0], None)
        if obs is None:
            raise KeyError(
                f"LAPOPolicy reads {self.in_keys[0]!r}; the tensordict has "
                f"{list(tensordict.keys(True, True))}"
            )
        tensordict.set(self.out_keys[0], self.act(obs))
        return tensordict


def make_lapo_policy(
    observation_dim: int,
    action_spec: TensorSpec,
    *,
    num_cells: int = 256,
    depth: int = 3,
    device: torch.device | str | None = None,
) -> LAPOPolicy:
    """A :class:`LAPOPolicy` of new networks: a CVAE (identity statistics) and a latent actor.

    It decodes with a detached copy of the decoder's parameters (as a loss's policy decodes with
    the loss's target decoder), so its state dict is that of ``LAPOLoss.policy``.

    Example:
        >>> from torchrl.data import Bounded
        >>> policy = make_lapo_policy(3, Bounded(-1.0, 1.0, shape=(2,)), num_cells=16)
        >>> sorted({k.split(".")[0] for k in policy.state_dict()})
        ['action_high', 'action_low', 'cvae', 'decoder_params', 'latent_actor']
    """
    low, high = action_bounds(action_spec)
    cvae = LAPOCVAE(observation_dim, low.numel(), num_cells=num_cells, depth=depth, device=device)
    actor = LatentActor(
        observation_dim, cvae.latent_dim, num_cells=num_cells, depth=depth, device=device
    )
    return LAPOPolicy(cvae, actor, low, high, decoder_params=make_target_params(cvae.decoder))
