"""QEnsemble: m Q-functions evaluated in one vectorised call over stacked parameters."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from torchrl_o3f.modules.networks import (
    get_activation,
    register_normalization_buffers,
    set_normalization_buffers,
)

__all__ = ["QEnsemble", "ensemble_reduce"]


def ensemble_reduce(
    values: torch.Tensor,
    how: str = "min",
    *,
    subset_size: int = 2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Reduce per-member values ``[m, *batch, 1]`` over the leading ensemble dimension.

    Args:
        values: per-member values with the ensemble dimension first.
        how: ``"min"``, ``"max"``, ``"mean"`` or ``"subset_min"`` (the min over a random
            subset of ``subset_size`` members, drawn once per call, as REDQ does).
        subset_size: size of the random subset for ``"subset_min"``.
        generator: random generator for the subset draw.

    Returns:
        The reduced values, shape ``[*batch, 1]``.

    Example:
        >>> import torch
        >>> v = torch.tensor([[1.0], [3.0], [2.0]])
        >>> ensemble_reduce(v, "min"), ensemble_reduce(v, "mean")
        (tensor([1.]), tensor([2.]))
    """
    if how == "min":
        return values.min(0).values
    if how == "max":
        return values.max(0).values
    if how == "mean":
        return values.mean(0)
    if how == "subset_min":
        m = values.shape[0]
        if not 1 <= subset_size <= m:
            raise ValueError(f"subset_size must be in [1, {m}] (ensemble size), got {subset_size}")
        idx = torch.randperm(m, generator=generator, device="cpu")[:subset_size]
        return values[idx.to(values.device)].min(0).values
    raise ValueError(f"unknown reduction {how!r}; use 'min', 'max', 'mean' or 'subset_min'")


def _check_dtype(dtype: torch.dtype, observation: torch.Tensor, action: torch.Tensor) -> None:
    if observation.dtype != dtype or action.dtype != dtype:
        raise TypeError(
            f"the Q ensemble's parameters are {dtype} but it got observations of "
            f"{observation.dtype} and actions of {action.dtype}: cast the inputs (e.g. torchrl's "
            "DoubleToFloat transform on a float64 env) or the ensemble (ensemble.to(dtype))"
        )


def _broadcast_batch(obs_batch: torch.Size, act_batch: torch.Size) -> torch.Size:
    """The broadcast of the observation's and the action's batch shapes, or a clear error."""
    if obs_batch == act_batch or not obs_batch:  # training batches; one shared observation
        return act_batch
    try:
        return torch.broadcast_shapes(obs_batch, act_batch)
    except RuntimeError:
        raise ValueError(
            f"QEnsemble: observation batch {tuple(obs_batch)} and action batch "
            f"{tuple(act_batch)} do not broadcast"
        ) from None


class QEnsemble(TensorDictModuleBase):
    """An ensemble of ``num_members`` Q-functions Q_i(s, a) in one vectorised module.

    The module owns the stacked parameters of every member (``weights[i]`` is
    ``[num_members, fan_in, fan_out]``, ``biases[i]`` is ``[num_members, 1, fan_out]``, each
    member initialised independently as ``nn.Linear`` would) and evaluates all members with one
    batched matrix product per layer: no Python loop over members, no copies. Losses train
    these parameters in place and :class:`~torchrl_o3f.modules.O3FActionSelector` reads them,
    so the selector always scores with what the loss just trained.

    Shapes: the ensemble dimension is always **leading**. :meth:`values` returns
    ``[num_members, *batch, 1]``, where ``batch`` is the broadcast of the observation's and the
    action's batch shapes: ``observation [*batch, d]`` with ``action [N, *batch, a]`` scores
    N candidate actions per observation, the layout the selector uses. Called on a tensordict
    of batch size ``[*batch]``, the module returns a tensordict of batch size
    ``[num_members, *batch]`` (the inputs expanded, not copied) holding ``state_action_value``
    of shape ``[num_members, *batch, 1]``, the layout torchrl's ensemble losses use.

    Args:
        observation_dim: size of the observation vector.
        action_dim: size of the action vector.
        num_members: number of Q-functions m (default 5, as in the paper).
        num_cells: width of every hidden layer.
        depth: number of hidden layers.
        activation: activation name or class (default ReLU).
        layer_norm: LayerNorm (per member, with its own affine parameters) after every hidden
            linear layer.
        observation_loc, observation_scale, action_loc, action_scale: optional input
            normalisation: the networks see ``(x - loc) / scale``. Held in buffers (saved with
            the state dict); set or change them with :meth:`set_input_normalization`. With them
            the ensemble takes raw env observations and actions, whatever its loss normalises.
        in_keys: the observation and action keys, in that order.
        out_keys: the key of the per-member values.
        device: device of the parameters.

    Raises:
        ValueError: for sizes below 1 or keys that are not (observation, action) -> value.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> q = QEnsemble(observation_dim=17, action_dim=6, num_members=5, num_cells=64)
        >>> td = TensorDict({"observation": torch.randn(32, 17),
        ...                  "action": torch.rand(32, 6)}, batch_size=[32])
        >>> q(td)["state_action_value"].shape
        torch.Size([5, 32, 1])
        >>> cands = torch.rand(100, 1, 6)   # 100 candidates for one observation
        >>> q.values(torch.randn(1, 17), cands).shape
        torch.Size([5, 100, 1, 1])
        >>> q.mean_std(torch.randn(1, 17), cands)[1].shape
        torch.Size([100, 1, 1])
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        *,
        num_members: int = 5,
        num_cells: int = 256,
        depth: int = 2,
        activation: str | type[nn.Module] = "relu",
        layer_norm: bool = False,
        observation_loc: torch.Tensor | None = None,
        observation_scale: torch.Tensor | None = None,
        action_loc: torch.Tensor | None = None,
        action_scale: torch.Tensor | None = None,
        in_keys: Sequence = ("observation", "action"),
        out_keys: Sequence = ("state_action_value",),
        device: torch.device | str | None = None,
    ):
        if num_members < 1:
            raise ValueError(f"num_members must be >= 1, got {num_members}")
        if observation_dim < 1 or action_dim < 1:
            raise ValueError(
                f"observation_dim and action_dim must be >= 1, got {observation_dim}, {action_dim}"
            )
        if depth < 1 or num_cells < 1:
            raise ValueError(f"depth and num_cells must be >= 1, got {depth}, {num_cells}")
        if len(in_keys) != 2 or len(out_keys) != 1:
            raise ValueError(
                "QEnsemble needs in_keys=(observation_key, action_key) and one out_key, "
                f"got in_keys={in_keys}, out_keys={out_keys}"
            )
        self.in_keys = list(in_keys)
        self.out_keys = list(out_keys)
        super().__init__()
        self.num_members = num_members
        self.observation_dim = observation_dim
        self.action_dim = action_dim
        self.num_cells = num_cells
        self.depth = depth
        self.layer_norm = layer_norm
        self.activation = get_activation(activation)()
        self._relu = type(self.activation) is nn.ReLU
        sizes = [observation_dim + action_dim] + [num_cells] * depth + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            w = torch.empty(num_members, fan_in, fan_out, device=device).uniform_(-bound, bound)
            b = torch.empty(num_members, 1, fan_out, device=device).uniform_(-bound, bound)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))
        if layer_norm:
            self.norm_weights = nn.ParameterList(
                nn.Parameter(torch.ones(num_members, 1, num_cells, device=device))
                for _ in range(depth)
            )
            self.norm_biases = nn.ParameterList(
                nn.Parameter(torch.zeros(num_members, 1, num_cells, device=device))
                for _ in range(depth)
            )

        register_normalization_buffers(self, observation_dim, action_dim, device)
        norm = (observation_loc, observation_scale, action_loc, action_scale)
        if any(x is not None for x in norm):
            self.set_input_normalization(
                observation_loc, observation_scale, action_loc, action_scale
            )

    def set_input_normalization(
        self,
        observation_loc: torch.Tensor | None = None,
        observation_scale: torch.Tensor | None = None,
        action_loc: torch.Tensor | None = None,
        action_scale: torch.Tensor | None = None,
    ) -> None:
        """Set the affine input normalisation ``(x - loc) / scale`` (None keeps identity)."""
        set_normalization_buffers(
            self, observation_loc, observation_scale, action_loc, action_scale
        )

    @property
    def device(self) -> torch.device:
        """The device of the ensemble's parameters."""
        return self.weights[0].device

    def _param(self, params, name: str, i: int, members=None) -> torch.Tensor:
        value = getattr(self, name)[i] if params is None else params[name, str(i)]
        return value if members is None else value.index_select(0, members)

    def values(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        params: TensorDictBase | None = None,
        members: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-member Q-values Q_i(s, a), shape ``[num_members, *batch, 1]``.

        The one scoring path of the package: losses call it on replay batches and the
        selector on ``[N, *batch]`` candidate actions; every device runs the same dense
        batched products. Inputs are in the env's units (the input normalisation is applied
        here); autograd flows to the parameters used.

        Args:
            observation: ``[*obs_batch, observation_dim]``.
            action: ``[*action_batch, action_dim]``; ``batch`` is the broadcast of both batch
                shapes (e.g. ``[*batch, d]`` observations with ``[N, *batch, a]`` actions).
            params: evaluate with these parameters instead of the module's own (e.g. target
                parameters): a tensordict shaped like ``TensorDict.from_module(self)``.
            members: evaluate only these members (a 1-D index tensor), e.g. the random subset
                of a REDQ target: the result is then ``[len(members), *batch, 1]`` and the
                other members cost nothing.

        Raises:
            ValueError: when the last dimensions are not ``observation_dim`` and
                ``action_dim``, or the batch shapes do not broadcast.
            TypeError: when the inputs' dtype is not the parameters'.
        """
        if observation.shape[-1] != self.observation_dim or action.shape[-1] != self.action_dim:
            raise ValueError(
                f"QEnsemble expects observations [..., {self.observation_dim}] and actions "
                f"[..., {self.action_dim}], got {tuple(observation.shape)} and "
                f"{tuple(action.shape)}"
            )
        batch = _broadcast_batch(observation.shape[:-1], action.shape[:-1])
        w0 = self._param(params, "weights", 0, members)
        b0 = self._param(params, "biases", 0, members)
        _check_dtype(w0.dtype, observation, action)
        m = w0.shape[0]
        obs = (observation - self.observation_loc) / self.observation_scale
        act = (action - self.action_loc) / self.action_scale
        # first layer on [obs, act]: the observation is broadcast to the candidates sharing it
        x = torch.cat([obs.expand(*batch, obs.shape[-1]), act.expand(*batch, act.shape[-1])], -1)
        h = torch.baddbmm(b0, x.view(1, -1, x.shape[-1]).expand(m, -1, -1), w0)
        return self._hidden_layers(h, 1, params, members).view(m, *batch, 1)

    def _hidden_layers(self, h, start: int, params=None, members=None) -> torch.Tensor:
        """Layers ``start..last`` on the pre-activation ``h`` of layer ``start - 1``."""
        last = len(self.weights) - 1
        for i in range(start, last + 1):
            if self.layer_norm:
                h = F.layer_norm(h, h.shape[-1:])
                h = torch.addcmul(
                    self._param(params, "norm_biases", i - 1, members),
                    h,
                    self._param(params, "norm_weights", i - 1, members),
                )
            # in place for ReLU: saves a pass over [m, B, h]; autograd-safe (the producing
            # matmul does not need its output for its backward)
            h = h.relu_() if self._relu else self.activation(h)
            w = self._param(params, "weights", i, members)
            b = self._param(params, "biases", i, members)
            if i < last:
                h = torch.baddbmm(b, h, w)
            else:
                # one output unit: a multiply-and-sum instead of a [h, 1] batched matmul (less
                # work on CPU, forward and backward); without autograd the product goes in
                # place (h is this function's own activation)
                h = h.mul_(w.mT) if not torch.is_grad_enabled() else h * w.mT
                h = h.sum(-1, keepdim=True) + b
        return h

    def mean_std(
        self, observation: torch.Tensor, action: torch.Tensor, params=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation (1/m, as the paper's equation 2) over members.

        Takes the arguments of :meth:`values`; returns two tensors of shape ``[*batch, 1]``.
        """
        v = self.values(observation, action, params)
        return v.mean(0), v.std(0, correction=0)

    def reduce(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        how: str = "min",
        *,
        subset_size: int = 2,
        generator: torch.Generator | None = None,
        params=None,
    ) -> torch.Tensor:
        """Values reduced over members (see :func:`ensemble_reduce`), shape ``[*batch, 1]``.

        Takes the arguments of :meth:`values`; ``how``, ``subset_size`` and ``generator``
        are :func:`ensemble_reduce`'s.
        """
        v = self.values(observation, action, params)
        return ensemble_reduce(v, how, subset_size=subset_size, generator=generator)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write per-member values into a ``[num_members, *batch]`` view of ``tensordict``.

        Reads ``in_keys`` (observation, action) from a tensordict of batch ``[*batch]`` and
        returns it expanded (not copied) to ``[num_members, *batch]`` with ``out_keys[0]``
        set to the ``[num_members, *batch, 1]`` values.

        Raises:
            KeyError: when an input key is missing.
        """
        obs_key, act_key = self.in_keys
        obs, act = tensordict.get(obs_key, None), tensordict.get(act_key, None)
        if obs is None or act is None:
            raise KeyError(
                f"QEnsemble reads {self.in_keys}; the tensordict has "
                f"{list(tensordict.keys(True, True))}"
            )
        values = self.values(obs, act)
        out = tensordict.expand(self.num_members, *tensordict.batch_size)
        out.set(self.out_keys[0], values)
        return out

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"num_members={self.num_members}, observation_dim={self.observation_dim}, "
            f"action_dim={self.action_dim}, num_cells={self.num_cells}, depth={self.depth}, "
            f"layer_norm={self.layer_norm}"
        )
