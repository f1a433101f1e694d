"""The non-finite guard: training stops at the first NaN or infinity, and says why.

:class:`NonFiniteGuard` is called on the output of every update. It checks every ``loss_*``
term of the update in one fused ``torch.isfinite`` over the stacked terms, and every
``check_state_every`` updates the total norm of the gradients the update left (a NaN or an
infinity anywhere in a gradient makes it non-finite) and all parameters and buffers of the
loss (targets included). A non-finite gradient turns the parameters it updates non-finite
(Adam), and a non-finite parameter the loss reads makes the next loss non-finite, so the run
stops within one update of either; within ``check_state_every`` for what the loss never reads.
A failure raises :class:`NonFiniteError` naming the first non-finite term, the phase and
update, and the likely causes. :func:`check_finite_state` checks a state before it is written,
so a checkpoint never holds a non-finite state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from tensordict import TensorDictBase

from torchrl_o3f.errors import O3FError

__all__ = ["NonFiniteError", "NonFiniteGuard", "check_finite_state"]


class NonFiniteError(O3FError, RuntimeError):
    """Training produced a NaN or an infinity; the run stops without writing that state."""


_KEPT = (
    "The last checkpoint written before this update is kept: nothing non-finite is saved. "
    "Resume from it after fixing the cause, or start again."
)


def _causes(context: Mapping[str, Any]) -> str:
    parts = ["a learning rate too high for the problem"]
    lr = context.get("lr")
    if isinstance(lr, Mapping):  # one rate per optimiser (algo.lr)
        rates = ", ".join(f"{k} {v:g}" for k, v in lr.items())
        parts[0] += f" (algo.lr: {rates}; try 3-10x lower)"
    elif lr is not None:
        parts[0] += f" (lr {lr:g}; try 3-10x lower)"
    rewards = context.get("rewards")
    text = "rewards too large for the critic"
    if rewards is not None:
        text += f" (the data's rewards span [{rewards[0]:.3g}, {rewards[1]:.3g}]; rescale them)"
    parts.append(text)
    bs = "a degenerate batch"
    if context.get("batch_size") is not None:
        bs += f" (batch_size {context['batch_size']})"
    parts.append(bs)
    return "Likely causes: " + "; ".join(parts) + ". "


class NonFiniteGuard:
    """Stops training at the first non-finite loss term, gradient, parameter or buffer.

    Args:
        loss: the loss module being trained (its parameters' gradients and its state are
            checked).
        check_state_every: check the gradients and every parameter and buffer (targets,
            normalisation statistics) every this many updates; the loss terms are checked at
            every update. A non-finite gradient or parameter used by the loss makes the next
            loss non-finite, so this only bounds the delay for the rest, and
            :func:`check_finite_state` runs before every checkpoint.
        context: what the error message quotes as likely causes: ``lr``, ``rewards``
            (``(min, max)`` of the data's rewards), ``batch_size``.
        device_flags: ``(nonfinite, first)``: a bool and an int64 scalar tensor that a captured
            update step sets on its device (:class:`~torchrl_o3f.trainers.agents.Agent`'s
            ``nonfinite`` / ``first_nonfinite``: any non-finite loss term or gradient, and the
            first such update, counted from 1 by the guard's checks). Given, :meth:`check`
            reads nothing on the host except every ``sync_every`` checks and at
            :meth:`flush` (before evaluations and checkpoints); the message still names the
            first non-finite update.
        sync_every: read ``device_flags`` back every this many checks.

    Example:
        >>> from tensordict import TensorDict
        >>> net = torch.nn.Linear(2, 1)
        >>> guard = NonFiniteGuard(net, context={"lr": 3e-4})
        >>> net(torch.ones(2)).sum().backward()
        >>> guard.check(TensorDict(loss_qvalue=torch.tensor(1.0)), phase="offline", step=1)
        >>> try:
        ...     guard.check(TensorDict(loss_qvalue=torch.tensor(float("inf"))),
        ...                 phase="offline", step=2)
        ... except NonFiniteError as e:
        ...     print(str(e).split(". ")[0])
        non-finite training at offline update 2: loss_qvalue is inf
    """

    def __init__(
        self,
        loss: torch.nn.Module,
        *,
        check_state_every: int = 100,
        context: Mapping[str, Any] | None = None,
        device_flags: tuple[torch.Tensor, torch.Tensor] | None = None,
        sync_every: int = 100,
    ):
        if check_state_every < 1:
            raise ValueError(f"check_state_every must be >= 1, got {check_state_every}")
        if sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {sync_every}")
        self.loss = loss
        self.check_state_every = check_state_every
        self.context = dict(context or {})
        self._params = [(n, p) for n, p in loss.named_parameters() if p.requires_grad]
        self.num_checks = 0
        self.device_flags = device_flags
        self.sync_every = sync_every
        self._labels: dict[int, tuple[str, int]] = {}  # check number -> (phase, step), unread
        self._last_out: TensorDictBase | Mapping | None = None
        self._last_state_check = 0

    def _fail(self, what: str, phase: str, step: int) -> None:
        raise NonFiniteError(
            f"non-finite training at {phase} update {step}: {what}. "
            + _causes(self.context)
            + _KEPT
        )

    def check(self, out: TensorDictBase | Mapping, *, phase: str, step: int) -> None:
        """Check one update's output (its ``loss_*`` terms); now and then, gradients and state.

        Args:
            out: the update's loss tensordict (or mapping of scalar tensors).
            phase: ``"offline"`` or ``"online"`` (quoted in the message).
            step: the update's number in its phase (quoted in the message).

        Raises:
            NonFiniteError: a loss term or (every ``check_state_every`` checks) a gradient,
                a parameter or a buffer is NaN or infinite.
        """
        if self.device_flags is not None:
            self.num_checks += 1
            self._labels[self.num_checks] = (phase, step)
            self._last_out = out
            if self.num_checks % self.sync_every == 0:
                self.flush()
            return
        names, values = [], []
        for k, v in out.items():
            if isinstance(k, str) and k.startswith("loss_"):
                names.append(k)
                values.append(v.reshape(()) if v.numel() == 1 else v.sum())
        if values and not bool(torch.isfinite(torch.stack(values)).all()):
            self._explain(names, values, phase, step)
        self.num_checks += 1
        if self.num_checks % self.check_state_every == 0:
            self.check_gradients(phase=phase, step=step)
            self.check_state(phase=phase, step=step)

    def flush(self) -> None:
        """Read the device flags back (a captured agent's); a no-op for an eager guard.

        Also checks every parameter and buffer when ``check_state_every`` checks have passed
        since the last state check.

        Raises:
            NonFiniteError: an update since the last flush had a non-finite loss term or
                gradient (the message names the first such update and the latest loss terms
                that are non-finite), or the state holds a NaN or an infinity.
        """
        if self.device_flags is None or not self._labels:
            return
        nonfinite, first = self.device_flags
        last = max(self._labels)
        if bool(nonfinite):
            phase, step = self._labels.get(int(first), self._labels[last])
            names, values = [], []
            for k, v in ({} if self._last_out is None else self._last_out).items():
                if isinstance(k, str) and k.startswith("loss_"):
                    names.append(k)
                    values.append(v.reshape(()) if v.numel() == 1 else v.sum())
            bad = [(n, float(v)) for n, v in zip(names, values) if not torch.isfinite(v)]
            what = (
                ", ".join(f"{n} is {v}" for n, v in bad) + " at the last update"
                if bad
                else "a loss term or a gradient was NaN or infinite"
            )
            self._fail(what, phase, step)
        if self.num_checks - self._last_state_check >= self.check_state_every:
            self._last_state_check = self.num_checks
            self.check_state(phase=self._labels[last][0], step=self._labels[last][1])
        self._labels.clear()

    def check_gradients(self, *, phase: str, step: int) -> None:
        """Check the gradients the last update left (one fused norm).

        Raises:
            NonFiniteError: a gradient is NaN or infinite, or their norm overflows (squares
                beyond float32's range: Adam's second moments would be infinite).
        """
        grads = [p.grad for _, p in self._params if p.grad is not None]
        if grads and not bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))):
            self._explain([], [], phase, step)

    def _explain(self, names: list, values: list, phase: str, step: int) -> None:
        bad = [(n, float(v)) for n, v in zip(names, values) if not torch.isfinite(v)]
        if bad:
            first, value = bad[0]
            also = ", ".join(f"{n}={v}" for n, v in bad[1:])
            self._fail(f"{first} is {value}" + (f" (also {also})" if also else ""), phase, step)
        for name, p in self._params:
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                self._fail(
                    f"the gradient of {name} is non-finite (the losses are finite)", phase, step
                )
        self._fail(
            "the total gradient norm overflows float32 (gradients beyond ~1e19)", phase, step
        )

    def check_state(self, *, phase: str, step: int) -> None:
        """Check every floating-point parameter and buffer of the loss (targets included).

        Raises:
            NonFiniteError: one is NaN or infinite (the message names it).
        """
        items = [
            (name, t)
            for name, t in self.loss.state_dict(keep_vars=True).items()
            if isinstance(t, torch.Tensor) and t.is_floating_point()
        ]
        first = _first_non_finite(items, [t for _, t in items])
        if first is not None:
            self._fail(f"{first} holds a NaN or an infinity", phase, step)


def _first_non_finite(items: Iterable, tensors: list) -> str | None:
    """The name of the first non-finite tensor, or ``None``; one fused norm when all are fine."""
    if not tensors:
        return None
    with torch.no_grad():
        detached = [t.detach() for t in tensors]
        if bool(torch.isfinite(torch.nn.utils.get_total_norm(detached))):
            return None
        # the norm is NaN or inf: find the tensor (a norm can also overflow on finite values)
        for name, t in items:
            if not bool(torch.isfinite(t.detach()).all()):
                return str(name)
    return None


def _leaves(obj: Any, prefix: str = ""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{prefix}[{i}]")


def check_finite_state(state: Mapping[str, Any], *, what: str = "state") -> None:
    """Refuse a state (e.g. the agent's part of a checkpoint) holding NaN or infinity.

    Args:
        state: nested mappings/lists of tensors (non-tensors are ignored).
        what: how the message calls the state.

    Raises:
        NonFiniteError: a floating-point tensor is non-finite; the message names it.

    Example:
        >>> check_finite_state({"w": torch.ones(2)})
        >>> try:
        ...     check_finite_state({"loss": {"w": torch.tensor([1.0, float("nan")])}})
        ... except NonFiniteError as e:
        ...     print(str(e)[:44])
        refusing to checkpoint state: loss.w is non-
    """
    items = [(n, t) for n, t in _leaves(state) if t.is_floating_point()]
    first = _first_non_finite(items, [t for _, t in items])
    if first is not None:
        raise NonFiniteError(
            f"refusing to checkpoint {what}: {first} is non-finite (NaN or infinity); the "
            "previous checkpoint is kept. " + _causes({}).strip()
        )
