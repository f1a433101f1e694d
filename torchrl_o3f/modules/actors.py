"""Actor and state-value network builders for the losses (IQL's, SAC's and TD3's policies, V(s)).

IQL's policy (Kostrikov et al., 2022, and CORL's re-implementation) is a diagonal Gaussian whose
mean is squashed by ``tanh`` into the action bounds and whose log standard deviation is a free,
state-independent parameter; the deterministic action is the mean. It is *not* a TanhNormal: the
distribution itself is an ordinary Normal, so the log-likelihood of a dataset action lying
exactly on a bound is finite (no ``atanh`` of +-1), and samples are projected onto the action
spec by the :class:`~torchrl.modules.ProbabilisticActor` (``safe=True``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded, TensorSpec
from torchrl.modules import ProbabilisticActor, ValueOperator
from torchrl.modules.distributions import IndependentNormal

from torchrl_o3f.modules.networks import (
    ObservationNormalizer,
    make_mlp,
    register_normalization_buffers,
    set_normalization_buffers,
    with_observation_normalizer,
)

__all__ = [
    "TanhDeterministicNet",
    "TanhMeanGaussianNet",
    "action_bounds",
    "make_deterministic_actor",
    "make_iql_actor",
    "make_value_network",
]


def _env_row(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """One env's bounds out of ``[*env_batch, action_dim]`` bounds; ``None`` if they differ.

    A ``SerialEnv``/``ParallelEnv`` spec repeats its envs' bounds along the env batch.
    """
    action_dim = low.shape[-1] if low.ndim else 1
    low2, high2 = low.reshape(-1, action_dim), high.reshape(-1, action_dim)
    if bool((low2 == low2[:1]).all()) and bool((high2 == high2[:1]).all()):
        return low2[0], high2[0]
    return None


def action_bounds(action_spec: TensorSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The finite ``(low, high)`` bounds of a bounded action spec, ``[action_dim]`` floats each.

    A batched env's spec (``[num_envs, action_dim]``, as ``SerialEnv`` and ``ParallelEnv``
    give) stands for its envs' common bounds.

    Raises:
        ValueError: when the spec has no finite bounds (use a ``Bounded`` spec), or when the
            envs of a batched spec have different bounds.

    Example:
        >>> from torchrl.data import Bounded
        >>> action_bounds(Bounded(-2.0, 2.0, shape=(1,)))
        (tensor([-2.]), tensor([2.]))
        >>> action_bounds(Bounded(-1.0, 1.0, shape=(16, 2)))   # 16 envs
        (tensor([-1., -1.]), tensor([1., 1.]))
    """
    space = getattr(action_spec, "space", None)
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    if low is None or high is None:
        raise ValueError(
            f"the action spec must be bounded (torchrl.data.Bounded), got {type(action_spec)}"
        )
    row = _env_row(
        torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
    )
    if row is None:
        raise ValueError(
            f"the envs of the batched action spec (shape {tuple(action_spec.shape)}) have "
            "different bounds; build the network for one env's spec"
        )
    low, high = row
    if not (torch.isfinite(low).all() and torch.isfinite(high).all()) or (high <= low).any():
        raise ValueError(
            f"the action spec needs finite bounds with low < high, got low={low} high={high}"
        )
    return low, high


def _tanh_head(
    module: nn.Module,
    observation_dim: int,
    action_low,
    action_high,
    *,
    num_cells: int,
    depth: int,
    activation,
    layer_norm: bool,
    device,
    normalize_observations: bool = False,
) -> int:
    """Give ``module`` an MLP ``net`` and the ``center`` / ``half_range`` buffers of its bounds.

    The actions of a tanh-squashed head are ``center + tanh(net(x)) * half_range``; with
    ``normalize_observations`` the ``net`` starts with an
    :class:`~torchrl_o3f.modules.networks.ObservationNormalizer`. Returns the action size;
    raises ``ValueError`` for bounds that are not ``low < high`` elementwise.
    """
    low = torch.as_tensor(action_low, dtype=torch.float32, device=device).reshape(-1)
    high = torch.as_tensor(action_high, dtype=torch.float32, device=device).reshape(-1)
    if low.shape != high.shape or (high <= low).any():
        raise ValueError(f"need action_low < action_high elementwise, got {low}, {high}")
    mlp = make_mlp(
        observation_dim,
        low.numel(),
        num_cells=num_cells,
        depth=depth,
        activation=activation,
        layer_norm=layer_norm,
        device=device,
    )
    module.net = with_observation_normalizer(mlp, observation_dim, normalize_observations, device)
    module.register_buffer("center", (high + low) / 2)
    module.register_buffer("half_range", (high - low) / 2)
    return low.numel()


class TanhMeanGaussianNet(nn.Module):
    """IQL's policy head: observation -> (loc, scale) of a Gaussian with a tanh-squashed mean.

    ``loc = center + half_range * tanh(MLP(obs))`` lies inside the action bounds;
    ``scale = half_range * exp(clamp(log_std, log_std_min, log_std_max))`` with ``log_std`` a
    state-independent parameter (initialised at 0), as in IQL and CORL.

    Args:
        observation_dim: size of the observation vector.
        action_low: lower action bounds, shape ``[action_dim]``.
        action_high: upper action bounds, shape ``[action_dim]``.
        num_cells: width of the hidden layers.
        depth: number of hidden layers.
        activation: activation name or class.
        layer_norm: LayerNorm after each hidden layer.
        log_std_min: lower clamp of the log standard deviation (in [-1, 1] action units).
        log_std_max: upper clamp of the log standard deviation.
        normalize_observations: start with an observation normaliser (identity statistics,
            set with :func:`~torchrl_o3f.modules.networks.set_observation_statistics`).
        device: device of the parameters.

    Example:
        >>> import torch
        >>> net = TanhMeanGaussianNet(3, torch.tensor([-2.0]), torch.tensor([2.0]), num_cells=16)
        >>> loc, scale = net(torch.zeros(5, 3))
        >>> loc.shape, bool((loc.abs() <= 2).all()), scale.shape
        (torch.Size([5, 1]), True, torch.Size([5, 1]))
    """

    def __init__(
        self,
        observation_dim: int,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        *,
        num_cells: int = 256,
        depth: int = 2,
        activation: str | type[nn.Module] = "relu",
        layer_norm: bool = False,
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
        normalize_observations: bool = False,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if log_std_min >= log_std_max:
            raise ValueError(f"need log_std_min < log_std_max, got {log_std_min}, {log_std_max}")
        action_dim = _tanh_head(
            self,
            observation_dim,
            action_low,
            action_high,
            num_cells=num_cells,
            depth=depth,
            activation=activation,
            layer_norm=layer_norm,
            device=device,
            normalize_observations=normalize_observations,
        )
        self.log_std = nn.Parameter(torch.zeros(action_dim, device=device))
        self.log_std_min = float(log_std_min)
        self.log_std_max = float(log_std_max)

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loc, scale)``, each of shape ``[*batch, action_dim]``."""
        loc = torch.addcmul(self.center, torch.tanh(self.net(observation)), self.half_range)
        std = self.log_std.clamp(self.log_std_min, self.log_std_max).exp() * self.half_range
        return loc, std.expand_as(loc)


def make_iql_actor(
    observation_dim: int,
    action_spec: TensorSpec,
    *,
    num_cells: int = 256,
    depth: int = 2,
    activation: str | type[nn.Module] = "relu",
    layer_norm: bool = False,
    log_std_min: float = -5.0,
    log_std_max: float = 2.0,
    normalize_observations: bool = False,
    observation_key: str = "observation",
    action_key: str = "action",
    device: torch.device | str | None = None,
) -> ProbabilisticActor:
    """IQL's Gaussian policy as a :class:`~torchrl.modules.ProbabilisticActor`.

    Reads ``observation_key`` and writes ``action_key`` (plus ``loc``/``scale``). Under
    ``ExplorationType.RANDOM`` it samples the Gaussian and projects the sample onto the action
    bounds; under ``DETERMINISTIC`` it returns the mean, which is inside the bounds by
    construction.

    Args:
        observation_dim: size of the observation vector.
        action_spec: a bounded action spec (its bounds set the tanh range and the projection).
        num_cells: width of the hidden layers.
        depth: number of hidden layers.
        activation: activation name or class.
        layer_norm: LayerNorm after each hidden layer.
        log_std_min: lower clamp of the state-independent log std (normalised action units).
        log_std_max: upper clamp of the log std.
        normalize_observations: the network starts with an observation normaliser (identity
            statistics until set).
        observation_key: the key read.
        action_key: the key written.
        device: device of the parameters.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl.envs.utils import ExplorationType, set_exploration_type
        >>> actor = make_iql_actor(3, Bounded(-2.0, 2.0, shape=(1,)), num_cells=16)
        >>> td = TensorDict({"observation": torch.randn(4, 3)}, batch_size=[4])
        >>> with set_exploration_type(ExplorationType.DETERMINISTIC):
        ...     actor(td)["action"].shape
        torch.Size([4, 1])
    """
    low, high = action_bounds(action_spec)
    if action_spec.ndim > 1:
        # a batched env's spec: project with one env's bounds, so the actor serves batched and
        # unbatched tensordicts alike
        action_spec = Bounded(low, high, shape=low.shape, dtype=action_spec.dtype)
    net = TanhMeanGaussianNet(
        observation_dim,
        low,
        high,
        num_cells=num_cells,
        depth=depth,
        activation=activation,
        layer_norm=layer_norm,
        log_std_min=log_std_min,
        log_std_max=log_std_max,
        normalize_observations=normalize_observations,
        device=device,
    )
    module = TensorDictModule(net, in_keys=[observation_key], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        out_keys=[action_key],
        spec=action_spec.clone().to(device) if device is not None else action_spec,
        safe=True,
        distribution_class=IndependentNormal,
        return_log_prob=False,
    )


def make_value_network(
    observation_dim: int,
    *,
    num_cells: int = 256,
    depth: int = 2,
    activation: str | type[nn.Module] = "relu",
    layer_norm: bool = False,
    normalize_observations: bool = False,
    in_keys: Sequence[str] = ("observation",),
    out_keys: Sequence[str] = ("state_value",),
    device: torch.device | str | None = None,
) -> ValueOperator:
    """A state-value network V(s) as a :class:`~torchrl.modules.ValueOperator`.

    Args:
        observation_dim: size of the observation vector.
        num_cells: width of the hidden layers.
        depth: number of hidden layers.
        activation: activation name or class.
        layer_norm: LayerNorm after each hidden layer.
        normalize_observations: the network starts with an observation normaliser (identity
            statistics until set).
        in_keys: the observation key (exactly one).
        out_keys: the value key (exactly one).
        device: device of the parameters.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> v = make_value_network(3, num_cells=16)
        >>> v(TensorDict({"observation": torch.randn(4, 3)}, [4]))["state_value"].shape
        torch.Size([4, 1])
    """
    if len(in_keys) != 1 or len(out_keys) != 1:
        raise ValueError(f"need one in_key and one out_key, got {in_keys}, {out_keys}")
    net = make_mlp(
        observation_dim,
        1,
        num_cells=num_cells,
        depth=depth,
        activation=activation,
        layer_norm=layer_norm,
        device=device,
    )
    net = with_observation_normalizer(net, observation_dim, normalize_observations, device)
    return ValueOperator(net, in_keys=list(in_keys), out_keys=list(out_keys))


def make_sac_actor(
    observation_dim: int,
    action_spec: TensorSpec,
    *,
    num_cells: int = 256,
    depth: int = 2,
    normalize_observations: bool = False,
    observation_key: str = "observation",
    action_key: str = "action",
    device: torch.device | str | None = None,
) -> ProbabilisticActor:
    """SAC's policy: MLP -> (loc, state-dependent scale) -> TanhNormal within the action bounds.

    The MLP outputs ``2 * action_dim`` numbers that
    :class:`~tensordict.nn.NormalParamExtractor` splits into ``loc`` and a positive ``scale``
    (biased softplus); the action is ``center + half_range * tanh(loc + scale * eps)``, so
    samples lie inside the bounds without projection. Under ``ExplorationType.RANDOM`` the
    actor samples; under ``DETERMINISTIC`` it returns ``center + half_range * tanh(loc)``
    (TanhNormal has no analytical mode: evaluate under ``DETERMINISTIC``, not ``MODE``).

    Args:
        observation_dim: size of the observation vector.
        action_spec: a bounded action spec (a batched env's spec stands for one env's bounds).
        num_cells: width of the hidden layers.
        depth: number of hidden layers.
        normalize_observations: the network starts with an observation normaliser (identity
            statistics until set; the MLP is then ``actor.module[0].module[1]``).
        observation_key: the key read.
        action_key: the key written (plus ``loc``/``scale``).
        device: device of the parameters.

    Returns:
        A :class:`~torchrl.modules.ProbabilisticActor`; its MLP is ``actor.module[0].module[0]``.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl.envs.utils import ExplorationType, set_exploration_type
        >>> actor = make_sac_actor(3, Bounded(-2.0, 2.0, shape=(1,)), num_cells=16)
        >>> td = TensorDict({"observation": torch.randn(4, 3)}, batch_size=[4])
        >>> with set_exploration_type(ExplorationType.RANDOM):
        ...     a = actor(td)["action"]
        >>> a.shape, bool((a.abs() <= 2).all())
        (torch.Size([4, 1]), True)
    """
    from tensordict.nn import NormalParamExtractor
    from torchrl.modules import TanhNormal

    low, high = action_bounds(action_spec)
    action_dim = low.numel()
    mlp = make_mlp(observation_dim, 2 * action_dim, num_cells=num_cells, depth=depth, device=device)
    layers = [mlp, NormalParamExtractor()]
    if normalize_observations:
        layers.insert(0, ObservationNormalizer(observation_dim, device=device))
    net = nn.Sequential(*layers)
    module = TensorDictModule(net, in_keys=[observation_key], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        out_keys=[action_key],
        spec=Bounded(low, high, shape=low.shape).to(device or "cpu"),
        distribution_class=TanhNormal,
        distribution_kwargs={"low": low.to(device or "cpu"), "high": high.to(device or "cpu")},
        return_log_prob=False,
    )


class TanhDeterministicNet(nn.Module):
    """TD3's policy: observation -> ``center + half_range * tanh(MLP((obs - loc) / scale))``.

    The action lies inside the bounds by construction. ``observation_loc``/``observation_scale``
    (buffers, saved with the state dict; identity by default) normalise the observation inside
    the network, so the policy takes raw env observations whatever its loss trained it on.

    Args:
        observation_dim: size of the observation vector.
        action_low: lower action bounds, shape ``[action_dim]``.
        action_high: upper action bounds, shape ``[action_dim]``.
        num_cells: width of the hidden layers.
        depth: number of hidden layers.
        activation: activation name or class.
        layer_norm: LayerNorm after each hidden layer.
        observation_loc, observation_scale: the observation normalisation (``None``: identity);
            see :meth:`set_observation_normalization`.
        device: device of the parameters.

    Raises:
        ValueError: for bounds that are not ``low < high`` elementwise.

    Example:
        >>> import torch
        >>> net = TanhDeterministicNet(3, torch.tensor([-2.0]), torch.tensor([2.0]), num_cells=16,
        ...                            observation_loc=torch.ones(3))
        >>> action = net(torch.zeros(5, 3))
        >>> action.shape, bool((action.abs() <= 2).all())
        (torch.Size([5, 1]), True)
    """

    def __init__(
        self,
        observation_dim: int,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        *,
        num_cells: int = 256,
        depth: int = 2,
        activation: str | type[nn.Module] = "relu",
        layer_norm: bool = False,
        observation_loc: torch.Tensor | None = None,
        observation_scale: torch.Tensor | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        _tanh_head(
            self,
            observation_dim,
            action_low,
            action_high,
            num_cells=num_cells,
            depth=depth,
            activation=activation,
            layer_norm=layer_norm,
            device=device,
        )
        register_normalization_buffers(self, observation_dim, None, device)
        self.set_observation_normalization(observation_loc, observation_scale)

    def set_observation_normalization(
        self, loc: torch.Tensor | None = None, scale: torch.Tensor | None = None
    ) -> None:
        """Set the observation normalisation ``(obs - loc) / scale`` (``None``: identity)."""
        set_normalization_buffers(self, loc, scale)

    def forward(
        self, observation: torch.Tensor, params: TensorDictBase | None = None
    ) -> torch.Tensor:
        """The action ``[*batch, action_dim]``; ``params`` (as ``from_module(self)``) overrides."""
        if params is not None:
            flat = dict(params.flatten_keys(".").items())
            return torch.func.functional_call(self, flat, (observation,))
        obs = (observation - self.observation_loc) / self.observation_scale
        return torch.addcmul(self.center, torch.tanh(self.net(obs)), self.half_range)


def make_deterministic_actor(
    observation_dim: int,
    action_spec: TensorSpec,
    *,
    num_cells: int = 256,
    depth: int = 2,
    activation: str | type[nn.Module] = "relu",
    layer_norm: bool = False,
    observation_loc: torch.Tensor | None = None,
    observation_scale: torch.Tensor | None = None,
    observation_key: str = "observation",
    action_key: str = "action",
    device: torch.device | str | None = None,
) -> TensorDictModule:
    """TD3's deterministic policy (:class:`TanhDeterministicNet`) as a ``TensorDictModule``.

    Reads ``observation_key`` (raw env observations) and writes ``action_key``, inside the
    spec's bounds, the same under every exploration type (exploration is a post-policy module's
    job, e.g. the O3F selector). The network is ``actor.module``.

    Args:
        observation_dim: size of the observation vector.
        action_spec: a bounded action spec (a batched env's spec stands for one env's bounds).
        num_cells: width of the hidden layers.
        depth: number of hidden layers.
        activation: activation name or class.
        layer_norm: LayerNorm after each hidden layer.
        observation_loc: subtracted from observations (``None``: 0).
        observation_scale: divides them, after (``None``: 1).
        observation_key: the key read.
        action_key: the key written.
        device: device of the parameters.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> actor = make_deterministic_actor(3, Bounded(-2.0, 2.0, shape=(1,)), num_cells=16)
        >>> actor(TensorDict({"observation": torch.randn(4, 3)}, [4]))["action"].shape
        torch.Size([4, 1])
    """
    low, high = action_bounds(action_spec)
    net = TanhDeterministicNet(
        observation_dim,
        low,
        high,
        num_cells=num_cells,
        depth=depth,
        activation=activation,
        layer_norm=layer_norm,
        observation_loc=observation_loc,
        observation_scale=observation_scale,
        device=device,
    )
    return TensorDictModule(net, in_keys=[observation_key], out_keys=[action_key])
