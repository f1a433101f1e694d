"""Network builders shared by every module of the package (one builder, reused)."""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictParams
from torch import nn
from torchrl.modules import MLP

__all__ = [
    "ObservationNormalizer",
    "make_mlp",
    "get_activation",
    "make_target_params",
    "register_normalization_buffers",
    "set_normalization_buffers",
    "set_observation_statistics",
    "with_observation_normalizer",
    "ACTIVATIONS",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def get_activation(activation: str | type[nn.Module]) -> type[nn.Module]:
    """Resolve an activation name (``"relu"``, ``"elu"``, ...) or class to its class.

    Example:
        >>> get_activation("relu")
        <class 'torch.nn.modules.activation.ReLU'>
    """
    if isinstance(activation, str):
        try:
            return ACTIVATIONS[activation.lower()]
        except KeyError:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}"
            ) from None
    return activation


def make_mlp(
    in_features: int | None,
    out_features: int,
    *,
    num_cells: int = 256,
    depth: int = 2,
    activation: str | type[nn.Module] = "relu",
    layer_norm: bool = False,
    dropout: float = 0.0,
    device=None,
) -> MLP:
    """A torchrl :class:`~torchrl.modules.MLP` with ``depth`` hidden layers of ``num_cells``.

    Args:
        in_features: input size (``None``: lazy).
        out_features: output size.
        num_cells: width of every hidden layer.
        depth: number of hidden layers.
        activation: activation name (``"relu"``, ``"elu"``, ...) or class.
        layer_norm: LayerNorm after each hidden linear layer (before the activation).
        dropout: dropout probability after each hidden layer (0: none).
        device: device of the parameters.

    Example:
        >>> import torch
        >>> net = make_mlp(17 + 6, 1, num_cells=64, depth=2, layer_norm=True)
        >>> net(torch.zeros(4, 23)).shape
        torch.Size([4, 1])
    """
    if depth < 0 or num_cells < 1 or out_features < 1:
        raise ValueError(
            f"invalid MLP shape: depth={depth} (>= 0), num_cells={num_cells} (>= 1), "
            f"out_features={out_features} (>= 1)"
        )
    kwargs = {}
    if layer_norm:
        kwargs.update(norm_class=nn.LayerNorm, norm_kwargs={"normalized_shape": num_cells})
    if dropout > 0:
        kwargs.update(dropout=dropout)
    return MLP(
        in_features=in_features,
        out_features=out_features,
        num_cells=[num_cells] * depth,
        activation_class=get_activation(activation),
        device=device,
        **kwargs,
    )


_NORMALIZATION = ("observation_loc", "observation_scale", "action_loc", "action_scale")


def register_normalization_buffers(
    module: nn.Module, observation_dim: int, action_dim: int | None, device=None
) -> None:
    """Register identity ``observation_loc/scale`` and ``action_loc/scale`` buffers on a module.

    ``action_dim=None``: the observation buffers only (a module that reads no action).

    Example:
        >>> m = torch.nn.Module()
        >>> register_normalization_buffers(m, 3, 2)
        >>> m.observation_scale
        tensor([1., 1., 1.])
    """
    module.register_buffer("observation_loc", torch.zeros(observation_dim, device=device))
    module.register_buffer("observation_scale", torch.ones(observation_dim, device=device))
    if action_dim is not None:
        module.register_buffer("action_loc", torch.zeros(action_dim, device=device))
        module.register_buffer("action_scale", torch.ones(action_dim, device=device))


def set_normalization_buffers(
    module: nn.Module,
    observation_loc=None,
    observation_scale=None,
    action_loc=None,
    action_scale=None,
) -> None:
    """Fill the buffers of :func:`register_normalization_buffers` (``None``: identity).

    A value may be a scalar (broadcast to every entry) or one value per entry; scales must be
    positive. A module registered without action buffers takes observation values only.

    Example:
        >>> m = torch.nn.Module()
        >>> register_normalization_buffers(m, 3, 2)
        >>> set_normalization_buffers(m, action_scale=[2.0, 4.0])
        >>> m.action_scale
        tensor([2., 4.])
    """
    values = (observation_loc, observation_scale, action_loc, action_scale)
    for name, value in zip(_NORMALIZATION, values):
        buf = getattr(module, name, None)
        if buf is None:
            if value is not None:
                raise ValueError(f"{type(module).__name__} has no {name} (it reads no action)")
            continue
        if value is None:
            buf.fill_(0.0 if name.endswith("loc") else 1.0)
            continue
        value = torch.as_tensor(value, dtype=buf.dtype, device=buf.device).reshape(-1)
        if value.numel() == 1 and buf.numel() > 1:
            value = value.expand(buf.numel())
        if value.numel() != buf.numel():
            raise ValueError(f"{name} must have {buf.numel()} entries, got {value.numel()}")
        if name.endswith("scale") and not bool((value > 0).all()):
            raise ValueError(f"{name} must be > 0 everywhere (add an epsilon to a std)")
        buf.copy_(value)


class ObservationNormalizer(nn.Module):
    """``(observation - observation_loc) / observation_scale``, the statistics in buffers.

    The first layer of a network that normalises its input (the buffers are those of
    :func:`register_normalization_buffers`, so the network's state dict carries the statistics
    and :func:`set_observation_statistics` fills them as it fills every other network's).

    Args:
        observation_dim: size of the observation vector.
        observation_loc: subtracted (``None``: 0).
        observation_scale: divides, after (``None``: 1).
        device: device of the buffers.

    Example:
        >>> norm = ObservationNormalizer(2, torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]))
        >>> norm(torch.tensor([3.0, 2.0]))
        tensor([1., 0.])
    """

    def __init__(
        self, observation_dim: int, observation_loc=None, observation_scale=None, device=None
    ):
        super().__init__()
        register_normalization_buffers(self, observation_dim, None, device)
        set_normalization_buffers(self, observation_loc, observation_scale)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        """The normalised observation, same shape."""
        return (observation - self.observation_loc) / self.observation_scale


def with_observation_normalizer(
    net: nn.Module, observation_dim: int, normalize: bool, device=None
) -> nn.Module:
    """``net`` itself, or ``nn.Sequential(ObservationNormalizer, net)`` when ``normalize``.

    A network that does not normalise keeps the structure (and state dict keys) it has always
    had; one that does gets identity statistics, set with :func:`set_observation_statistics`.

    Example:
        >>> net = with_observation_normalizer(torch.nn.Linear(3, 1), 3, True)
        >>> type(net[0]).__name__
        'ObservationNormalizer'
    """
    if not normalize:
        return net
    return nn.Sequential(ObservationNormalizer(observation_dim, device=device), net)


def set_observation_statistics(
    module: nn.Module, observation_loc: torch.Tensor, observation_scale: torch.Tensor
) -> int:
    """Fill the observation normalisation of every network inside ``module``.

    Every submodule holding ``observation_loc`` and ``observation_scale`` buffers (an
    :class:`ObservationNormalizer`, a :class:`~torchrl_o3f.modules.QEnsemble`, a TD3 actor)
    gets the statistics; action statistics are left as they are. Returns how many were set.

    Example:
        >>> net = with_observation_normalizer(torch.nn.Linear(3, 1), 3, True)
        >>> set_observation_statistics(net, torch.ones(3), 2 * torch.ones(3))
        1
        >>> net[0].observation_scale
        tensor([2., 2., 2.])
    """
    count = 0
    for sub in module.modules():
        loc = getattr(sub, "observation_loc", None)
        scale = getattr(sub, "observation_scale", None)
        if isinstance(loc, torch.Tensor) and isinstance(scale, torch.Tensor):
            set_normalization_buffers(sub, observation_loc, observation_scale, *_actions_of(sub))
            count += 1
    return count


def _actions_of(module: nn.Module) -> tuple:
    """The action statistics ``module`` holds (kept when its observation ones are set)."""
    loc, scale = getattr(module, "action_loc", None), getattr(module, "action_scale", None)
    return (None, None) if loc is None else (loc.clone(), scale.clone())


def make_target_params(module: nn.Module) -> TensorDictParams:
    """A detached clone of ``module``'s parameters and buffers, held as buffers.

    Registered on a loss as ``target_<name>_params`` it is found by
    :class:`torchrl.objectives.SoftUpdate` / ``HardUpdate``, saved in the loss's state dict,
    moved by ``loss.to(device)``, and never returned by ``loss.parameters()``.

    Example:
        >>> lin = nn.Linear(2, 3)
        >>> target = make_target_params(lin)
        >>> bool((target["weight"] == lin.weight).all()), target["weight"].requires_grad
        (True, False)
    """
    params = TensorDict.from_module(module).detach().clone()
    return TensorDictParams(params, no_convert=True)
