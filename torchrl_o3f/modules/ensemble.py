"""QEnsemble: m Q-functions evaluated in one vectorised call over stacked parameters."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from torchrl_o3f.modules.kernel import available as kernel_available
from torchrl_o3f.modules.kernel import near_anchor
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
    """``torch.broadcast_shapes`` for two shapes, ~10x cheaper (it runs once per call)."""
    if obs_batch == act_batch:
        return obs_batch
    n = max(len(obs_batch), len(act_batch))
    a = (1,) * (n - len(obs_batch)) + tuple(obs_batch)
    b = (1,) * (n - len(act_batch)) + tuple(act_batch)
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise ValueError(
                f"QEnsemble: observation batch {tuple(obs_batch)} and action batch "
                f"{tuple(act_batch)} do not broadcast"
            )
        out.append(y if x == 1 else x)
    return torch.Size(out)


class QEnsemble(TensorDictModuleBase):
    """An ensemble of ``num_members`` Q-functions Q_i(s, a) in one vectorised module.

    The module owns the stacked parameters of every member (each member initialised
    independently, as ``nn.Linear`` would) and evaluates all of them with batched matrix
    products: no Python loop over members, no copies. Losses train these parameters in place
    and :class:`~torchrl_o3f.modules.O3FActionSelector` reads them, so what the selector scores
    with is always what the loss just trained.

    Shapes: the ensemble dimension is always **leading**. :meth:`values` returns
    ``[num_members, *batch, 1]`` where ``batch`` is the broadcast of the observation's and the
    action's batch shapes (so ``observation [B, d]`` and ``action [N, B, a]`` score N
    candidates per observation; :meth:`candidate_values` does the same faster for many
    candidates around one action). Called on a tensordict of
    batch size ``[*batch]``, the module returns a tensordict of batch size
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
        kernel: let :meth:`candidate_values` use the package's compiled CPU kernel
            (:mod:`torchrl_o3f.modules.kernel`, built on first use with the system C compiler)
            where it serves the critic; ``False`` keeps to torch operations (the same values,
            several times slower per environment step on CPU). Also the attribute
            ``use_kernel``.

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
        kernel: bool = True,
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
        # candidate_values' exact sparse second layer serves ReLU critics of depth >= 2
        self._sparse_layer = self._relu and not layer_norm and depth >= 2
        self.use_kernel = kernel
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
        """Per-member Q-values, shape ``[num_members, *batch, 1]``.

        Args:
            observation: ``[*obs_batch, observation_dim]``.
            action: ``[*action_batch, action_dim]``; ``batch`` is the broadcast of both batch
                shapes.
            params: evaluate with these parameters instead of the module's own (e.g. target
                parameters): a tensordict shaped like ``TensorDict.from_module(self)``.
            members: evaluate only these members (a 1-D index tensor), e.g. the random subset
                of a REDQ target: the result is then ``[len(members), *batch, 1]`` and the
                other members cost nothing.
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
        # (a copy of d floats per row: the product over the 256-wide second layer dominates)
        x = torch.cat([obs.expand(*batch, obs.shape[-1]), act.expand(*batch, act.shape[-1])], -1)
        h = torch.baddbmm(b0, x.view(1, -1, x.shape[-1]).expand(m, -1, -1), w0)
        return self._hidden_layers(h, 1, params, members).view(m, *batch, 1)

    def candidate_values(
        self,
        observation: torch.Tensor,
        candidates: torch.Tensor,
        anchor: torch.Tensor,
        *,
        max_active: float = 0.5,
        min_rows: int = 600,
        chunk_rows: int = 4096,
    ) -> torch.Tensor:
        """Per-member values of many candidate actions near an anchor action.

        The same values as ``values(observation, candidates)`` (equal up to float rounding: the
        sums are taken in another order), computed for what action selection evaluates: N
        candidates per observation, all close to one anchor action (the policy's). Shape
        ``[num_members, N, *batch, 1]``.

        With ReLU critics of depth >= 2 (no LayerNorm), on CPU and without autograd, the second
        layer, which holds almost all of the FLOPs, is not evaluated densely. With ``z0`` the
        first-layer pre-activation at the anchor and ``M0 = [z0 > 0]``, each candidate's hidden
        units are ``relu(z0 + A d) = M0 * (z0 + A d) + r``, where ``d`` is the candidate's
        offset from the anchor, ``A`` the first layer's action weights, and ``r`` is non-zero
        only on the units whose sign the offset flips. So the second layer's pre-activation is
        ``W1^T (M0 * z0) + b1 + (W1^T diag(M0) A) d + W1^T r``: a product with a rank
        ``action_dim`` matrix plus a product over the flipped units only. Around a trained
        critic's policy action few units flip (about 6% of 256 at sigma 0.2 on halfcheetah), so
        the second layer costs a fraction of the dense one. The result is exact, not an
        approximation: no unit is dropped.

        On CPU this runs in the package's compiled kernel (:mod:`torchrl_o3f.modules.kernel`,
        float32, hidden widths a multiple of 16): one call instead of ~30 small tensor
        operations, its (member, observation) pairs shared out over torch's threads; a deeper
        critic's later layers then run densely. Without it (no C compiler, ``kernel=False``,
        float64, other sizes) the same maths runs in torch operations, which only pay off with
        many rows per call: there ``max_active``, ``min_rows`` and ``chunk_rows`` apply.

        Args:
            observation: ``[*batch, observation_dim]``.
            candidates: ``[N, *batch, action_dim]``.
            anchor: ``[*batch, action_dim]``, the point the candidates are drawn around (any
                point gives the same values; the closer, the fewer flipped units).
            max_active: torch operations: the fraction of hidden units above which the dense
                product is used instead (the kernel's cost just grows with the flipped units).
            min_rows: torch operations: the fewest (member, candidate) rows
                (``num_members * N * batch.numel()``) for the sparse layer, which also needs
                N >= 64 per observation; fewer rows are scored densely. It saves FLOPs but runs
                ~30 small ops whatever the size: on a 2-core CPU it is 2.2-2.4x faster than the
                dense product at N = 1000 or with 16 observations at N = 100, level at N = 100,
                m = 5 for one observation (``benchmarks/bench_selector.py``,
                docs/performance.md).
            chunk_rows: the observations are scored in groups of about this many (member,
                candidate) rows (at least one observation per group), so the ``[rows, 256]``
                temporaries stay a few MB: one pass over N = 1000 candidates for 16
                observations would allocate and walk 80 MB blocks, 1.1-2.7x (torch sparse
                layer) and 1.9-2.4x (dense) slower than groups (docs/performance.md). The
                kernel needs no groups for two hidden layers (it writes only the values).

        Other critics (LayerNorm, other activations, depth 1) and fewer rows are scored densely,
        in the same groups; other layouts (any broadcast :meth:`values` accepts), CUDA tensors
        and autograd use :meth:`values` directly.

        Example:
            >>> import torch
            >>> q = QEnsemble(17, 6, num_members=5)
            >>> obs, anchor = torch.randn(17), torch.rand(6) * 2 - 1
            >>> cands = anchor + 0.2 * torch.randn(1000, 6)
            >>> with torch.no_grad():
            ...     fast, dense = q.candidate_values(obs, cands, anchor), q.values(obs, cands)
            >>> fast.shape, torch.allclose(fast, dense, rtol=1e-4, atol=1e-6)
            (torch.Size([5, 1000, 1]), True)
        """
        d, a = self.observation_dim, self.action_dim
        if anchor.shape[-1:] != (a,) or candidates.shape[-1:] != (a,):
            raise ValueError(
                f"candidate_values expects candidates [N, *batch, {a}] and an anchor "
                f"[*batch, {a}], got {tuple(candidates.shape)} and {tuple(anchor.shape)}"
            )
        batch = observation.shape[:-1]
        n = candidates.shape[0] if candidates.dim() > 1 else 0
        m, nb = self.num_members, batch.numel()
        rows = m * n * nb
        if (
            n == 0  # no candidate dimension
            or observation.shape[-1] != d
            or candidates.shape[1:-1] != batch  # another broadcast layout
            or anchor.shape[:-1] != batch
            or torch.is_grad_enabled()
            or candidates.device.type != "cpu"
        ):
            return self.values(observation, candidates)
        use_kernel = self._kernel_serves(observation, candidates, anchor)
        # few rows: one dense product costs less than the torch sparse layer's bookkeeping
        sparse = not use_kernel and self._sparse_layer and n >= 64 and rows >= min_rows
        if rows <= chunk_rows and not (use_kernel or sparse):
            return self.values(observation, candidates)
        # the kernel's values of a two-layer critic need no [rows, 256] temporaries: one call
        one_call = use_kernel and self.depth == 2
        group = nb if one_call else max(1, chunk_rows // max(1, m * n))
        obs, anc = observation.reshape(nb, d), anchor.reshape(nb, a)
        cand = candidates.reshape(n, nb, a)

        def score(o: torch.Tensor, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            if use_kernel:
                return self._kernel_values(o, c, x)
            if sparse:
                return self._near_anchor_values(o, c, x, max_active)
            return self.values(o, c)

        if nb <= group:  # one group (dense only when one observation has more rows than that)
            out = score(obs, cand, anc)
        else:
            groups = zip(obs.split(group), cand.split(group, 1), anc.split(group))
            out = torch.cat([score(*g) for g in groups], 2)
        return out.reshape(m, n, *batch, 1)

    def _kernel_serves(self, observation, candidates, anchor) -> bool:
        """Whether the compiled kernel scores these inputs.

        It needs float32 throughout, a ReLU critic without LayerNorm of depth >= 2, sizes it
        serves, and a build on this machine.
        """
        f32 = torch.float32
        return (
            self.use_kernel
            and self._sparse_layer
            and self.weights[0].dtype == f32
            and observation.dtype == f32
            and candidates.dtype == f32
            and anchor.dtype == f32
            and kernel_available(self.observation_dim, self.action_dim, self.num_cells)
        )

    def _kernel_values(
        self, observation: torch.Tensor, candidates: torch.Tensor, anchor: torch.Tensor
    ) -> torch.Tensor:
        """One group of :meth:`candidate_values` by the compiled kernel: ``[m, N, B, 1]``.

        Takes ``[B, d]`` observations, ``[N, B, a]`` candidates and ``[B, a]`` anchors. The
        kernel returns the values of a two-layer critic, or the second layer's pre-activations
        of a deeper one, which the remaining layers then take densely.
        """
        norm = (self.observation_loc, self.observation_scale, self.action_loc, self.action_scale)
        out = near_anchor(self.weights, self.biases, norm, observation, candidates, anchor)
        if self.depth == 2:
            return out.unsqueeze(-1)
        return self._later_layers(out, observation.shape[0], candidates.shape[0])

    def _later_layers(self, z1: torch.Tensor, nb: int, n: int) -> torch.Tensor:
        """Layers 2.. of the critic on second-layer pre-activations, values ``[m, N, B, 1]``.

        ``z1`` is laid out ``[m, B, N, hidden]`` (or is a contiguous view of that order); the
        result is a view.
        """
        m, hidden = self.num_members, z1.shape[-1]
        values = self._hidden_layers(z1.reshape(m, nb * n, hidden), 2)  # [m, B * N, 1]
        return values.view(m, nb, n, 1).transpose(1, 2)

    def _near_anchor_values(
        self,
        observation: torch.Tensor,
        candidates: torch.Tensor,
        anchor: torch.Tensor,
        max_active: float,
    ) -> torch.Tensor:
        """One group of :meth:`candidate_values`: ``[m, N, B, 1]`` values (maybe a view).

        Takes ``[B, d]`` observations, ``[N, B, a]`` candidates and ``[B, a]`` anchors.
        """
        d, a = self.observation_dim, self.action_dim
        n, nb, m = candidates.shape[0], observation.shape[0], self.num_members
        mb = m * nb
        w0, b0, w1, b1 = self.weights[0], self.biases[0], self.weights[1], self.biases[1]
        _check_dtype(w0.dtype, observation, candidates)
        hidden = w0.shape[-1]
        obs = (observation - self.observation_loc) / self.observation_scale
        anc = (anchor - self.action_loc) / self.action_scale
        z0 = torch.baddbmm(b0, torch.cat([obs, anc], -1).expand(m, nb, d + a), w0)  # [m, B, h]
        w_act = w0[:, d:].unsqueeze(1)  # A, [m, 1, a, h]
        masked = w_act * (z0 > 0).unsqueeze(2)  # M0 * A, [m, B, a, h]
        # offsets in the network's action units, [m * B, N, a]
        offset = (candidates - anchor) / self.action_scale
        offset = offset.transpose(0, 1).expand(m, nb, n, a).reshape(mb, n, a)
        # r = relu(z1) - M0 * z1 = relu(-sign(z0) * z1) = relu(-|z0| + d @ (-sign(z0) * A)),
        # with sign(z0) = +1 where z0 > 0, else -1: non-zero only where the offset flips a unit
        neg_abs = z0.abs().neg_().view(mb, 1, hidden)
        flip_w = (w_act - 2 * masked).view(mb, a, hidden)
        pre = torch.bmm(offset, flip_w)  # [m * B, N, h]; its storage is reused for z1 below
        r_max = pre.amax(1).add_(neg_abs.view(mb, hidden))  # [m * B, h]
        k = int((r_max > 0).sum(-1).max())  # most flipped units of any row
        if k > max_active * hidden:
            return self.values(observation, candidates)  # [m, N, B, 1]
        # W1^T relu(z0) and the rank-a part G = W1^T diag(M0) A, in one product: [m, B, 1 + a, h]
        lhs = torch.cat([z0.clamp_min(0).unsqueeze(2), masked], 2).view(m, nb * (1 + a), hidden)
        rows = torch.bmm(lhs, w1).view(m, nb, 1 + a, hidden)
        base = (rows[:, :, :1] + b1.unsqueeze(1)).view(mb, 1, hidden)
        g = rows[:, :, 1:]  # [m, B, a, h]
        if k == 0:
            z1 = torch.baddbmm(base, offset, g.reshape(mb, a, hidden), out=pre)
        else:
            # the correction W1^T r over the k units with any flip (padded with units whose r
            # is zero for every candidate), in the same product as the rank-a part; r is
            # recomputed on those units only (a product over a, cheaper than gathering it)
            units = torch.topk(r_max, k, dim=-1, sorted=False).indices  # [m * B, k]
            cols = units.unsqueeze(1)
            r_k = torch.baddbmm(
                neg_abs.gather(2, cols), offset, flip_w.gather(2, cols.expand(mb, a, k))
            ).relu_()  # [m * B, N, k]
            first_row = torch.arange(0, m * hidden, hidden, device=units.device).view(m, 1, 1)
            w1_rows = (units.view(m, nb, k) + first_row).view(-1)
            w1_k = w1.reshape(m * hidden, hidden).index_select(0, w1_rows).view(m, nb, k, hidden)
            rhs = torch.cat([g, w1_k], 2).view(mb, a + k, hidden)
            z1 = torch.baddbmm(base, torch.cat([offset, r_k], -1), rhs, out=pre)
        return self._later_layers(z1, nb, n)

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
                # one output unit: a multiply-and-sum is ~5x faster than a [h, 1] batched
                # matmul on CPU, forward and backward (see docs/performance.md); without
                # autograd the product goes in place (h is this function's own activation)
                h = h.mul_(w.mT) if not torch.is_grad_enabled() else h * w.mT
                h = h.sum(-1, keepdim=True) + b
        return h

    def mean_std(
        self, observation: torch.Tensor, action: torch.Tensor, params=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation (1/m, as the paper's equation 2) over members.

        Returns two tensors of shape ``[*batch, 1]``.
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
        """Values reduced over members (see :func:`ensemble_reduce`), shape ``[*batch, 1]``."""
        v = self.values(observation, action, params)
        return ensemble_reduce(v, how, subset_size=subset_size, generator=generator)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write per-member values into a ``[num_members, *batch]`` view of ``tensordict``."""
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
