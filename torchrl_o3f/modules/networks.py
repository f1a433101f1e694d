"""Network builders shared by every module of the package (one builder, reused)."""

from __future__ import annotations

import torch
from torch import nn
from torchrl.modules import MLP

__all__ = [
    "build_mlp",
    "get_activation",
    "register_normalization_buffers",
    "set_normalization_buffers",
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


def build_mlp(
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
        >>> net = build_mlp(17 + 6, 1, num_cells=64, depth=2, layer_norm=True)
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
