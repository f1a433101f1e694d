"""Network builders shared by every module of the package (one builder, reused)."""

from __future__ import annotations

from torch import nn
from torchrl.modules import MLP

__all__ = ["build_mlp", "get_activation", "ACTIVATIONS"]

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
