"""The capturable update step: loss, gradients, Adam and target update with no host sync.

:class:`CapturedUpdate` is one gradient step of an :class:`~torchrl_o3f.trainers.agents.Agent`
written as a plain function of the batch, as LeanRL and torchrl's sota scripts write theirs:

- gradients by ``torch.autograd.grad`` (no ``.grad`` fields, no ``zero_grad``);
- Adam by :func:`adam_step_`, over the agent's own ``torch.optim.Adam`` state tensors (so a
  checkpoint written with compilation on loads with it off and back), with learning rates and
  step counts held in tensors: a schedule changes a tensor in place, nothing recompiles;
- the target update as one ``torch._foreach_lerp_`` (torchrl's ``SoftUpdate`` rule);
- the non-finite check as a device flag (:attr:`CapturedUpdate.nonfinite`), read back by the
  trainer's guard only where it must act.

No ``.item()``, no Python branch on a tensor value, no data-dependent shape: so the step
compiles with ``torch.compile(fullgraph=True)`` and, on CUDA, replays as a CUDA graph
(``tensordict.nn.CudaGraphModule``). The actor's participation is a Python choice made by the
loop (``update_actor``), so each of the (at most) two variants is traced once.

torch's own optimisers are not used inside the step: ``Optimizer.step`` inserts graph breaks
by design (``torch/optim/optimizer.py``, ``_use_grad``), ``Optimizer.zero_grad`` is marked not
to be traced, and ``capturable=True`` refuses CPU tensors outside compilation; the same Adam
in foreach operations runs on every device, eager or compiled.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDictBase

__all__ = ["CapturedUpdate", "adam_step_", "compile_step"]

_MAX_STEPS = 256  # compiled steps one process may build before dynamo stops compiling new ones


def adam_step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[torch.Tensor],
    *,
    lr: torch.Tensor,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """One Adam step in place (torch's ``Adam`` with ``capturable=True``, no weight decay).

    Every argument is a list of same-length tensors on one device; ``steps`` are scalar float
    tensors (torch's Adam state ``"step"``) and ``lr`` a scalar tensor, so nothing is read on
    the host and the step can be captured in a CUDA graph.

    Example:
        >>> p = torch.ones(2, requires_grad=True)
        >>> ref = torch.optim.Adam([q := torch.ones(2, requires_grad=True)], lr=0.1)
        >>> (q * torch.tensor([1.0, -2.0])).sum().backward(); ref.step()
        >>> m, v, s = torch.zeros(2), torch.zeros(2), torch.zeros(())
        >>> with torch.no_grad():
        ...     adam_step_([p], [torch.tensor([1.0, -2.0])], [m], [v], [s], lr=torch.tensor(0.1))
        >>> torch.allclose(p, q), float(s)
        (True, 1.0)
    """
    beta1, beta2 = betas
    torch._foreach_add_(steps, 1.0)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    # bias corrections as tensors (torch's capturable Adam): step sizes stay on the device
    bias1 = torch._foreach_pow(beta1, steps)
    torch._foreach_sub_(bias1, 1.0)  # -(1 - beta1^t)
    bias2 = torch._foreach_pow(beta2, steps)
    torch._foreach_neg_(bias2)
    torch._foreach_add_(bias2, 1.0)
    torch._foreach_sqrt_(bias2)  # sqrt(1 - beta2^t)
    step_size = torch._foreach_div(bias1, lr)
    torch._foreach_reciprocal_(step_size)  # -lr / (1 - beta1^t)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias2)
    torch._foreach_add_(denom, eps)
    torch._foreach_div_(denom, step_size)
    torch._foreach_addcdiv_(params, exp_avgs, denom)


class CapturedUpdate:
    """One agent update as a capturable function of the batch (see the module's docstring).

    Args:
        agent: the :class:`~torchrl_o3f.trainers.agents.Agent` whose loss, optimiser states and
            learning rates the step uses (the very same tensors: nothing is copied).
        update_actor: whether this variant steps the actor's parameter groups (otherwise the
            loss's ``critic_loss``, with the actor's groups still).

    Calling it with a batch returns the detached loss tensordict; the agent's ``nonfinite`` (a
    bool tensor on its device) becomes ``True`` at the first update whose loss terms or
    gradients are not all finite, and ``first_nonfinite`` holds that update's number (counted
    by the agent's ``update_count``, 1-based; 0 while all is finite).

    Example:
        >>> from torchrl_o3f.envs import make_env
        >>> from torchrl_o3f.objectives import algo_config
        >>> from torchrl_o3f.trainers.agents import build_agent
        >>> from torchrl.envs.utils import RandomPolicy
        >>> env = make_env("hopper-medium")
        >>> cfg = algo_config("iql", overrides={"num_cells": 16, "reward_normalization": "none"})
        >>> agent = build_agent(cfg, env.action_spec, observation_dim=11)
        >>> step = CapturedUpdate(agent, update_actor=True)
        >>> batch = env.rollout(8, RandomPolicy(env.action_spec))
        >>> sorted(k for k in step(batch).keys() if k.startswith("loss_"))
        ['loss_actor', 'loss_qvalue', 'loss_value']
        >>> bool(step.nonfinite)
        False
    """

    def __init__(self, agent, *, update_actor: bool):
        self.agent = agent
        self.loss = agent.loss
        self.update_actor = update_actor
        self._forward = self.loss if update_actor else self.loss.critic_loss
        stepped = [n for n in agent.optimizers if update_actor or n not in agent.actor_groups]
        self.groups = []
        for name in stepped:
            opt = agent.optimizers[name]
            # a frozen parameter (e.g. CQL's multiplier without lagrange) gets no gradient
            params = [p for g in opt.param_groups for p in g["params"] if p.requires_grad]
            state = [agent.adam_state(p) for p in params]
            self.groups.append((name, params, state, opt.defaults["betas"], opt.defaults["eps"]))
        self.targets, self.sources = agent.target_pairs()
        self.tau = float(agent.cfg.tau)
        self.nonfinite = agent.nonfinite
        self.first_nonfinite = agent.first_nonfinite
        self.count = agent.update_count

    def __call__(self, batch: TensorDictBase) -> TensorDictBase:
        """One update on ``batch``; returns the loss tensordict, detached."""
        out = self._forward(batch)
        terms = [v.sum() for k, v in out.items() if isinstance(k, str) and k.startswith("loss_")]
        total = torch.stack(terms).sum()
        params = [p for _, group, _, _, _ in self.groups for p in group]
        grads = torch.autograd.grad(total, params, allow_unused=True)
        finite = torch.isfinite(total)
        with torch.no_grad():
            i = 0
            for name, group, state, betas, eps in self.groups:
                g = grads[i : i + len(group)]
                i += len(group)
                # a parameter the loss does not reach keeps its state, as in torch's Adam
                used = [k for k, grad in enumerate(g) if grad is not None]  # static per trace
                if not used:
                    continue
                used_grads = [g[k] for k in used]
                finite = finite & torch.isfinite(torch.stack(torch._foreach_norm(used_grads))).all()
                adam_step_(
                    [group[k] for k in used],
                    used_grads,
                    [state[k]["exp_avg"] for k in used],
                    [state[k]["exp_avg_sq"] for k in used],
                    [state[k]["step"] for k in used],
                    lr=self.agent.lr_tensor(name),
                    betas=betas,
                    eps=eps,
                )
            if self.targets:
                torch._foreach_lerp_(self.targets, self.sources, self.tau)
            self.count.add_(1)
            first = (~finite) & (~self.nonfinite)
            self.first_nonfinite.copy_(torch.where(first, self.count, self.first_nonfinite))
            self.nonfinite.logical_or_(~finite)
        return out.detach()


def compile_step(
    step: Callable[[TensorDictBase], TensorDictBase],
    *,
    compile: bool,
    mode: str | None,
    cudagraphs: bool,
    warmup: int = 3,
) -> Callable[[TensorDictBase], TensorDictBase]:
    """``step`` compiled (``torch.compile``, ``mode``) and/or replayed as a CUDA graph.

    Args:
        step: a function of one batch tensordict (a :class:`CapturedUpdate`).
        compile: wrap with ``torch.compile(step, mode=mode)``.
        mode: a ``torch.compile`` mode (``None``: its default).
        cudagraphs: wrap with ``tensordict.nn.CudaGraphModule`` (CUDA only; the first
            ``warmup`` calls run eagerly on a side stream, then the graph is captured and
            replayed with the batch copied into its static inputs).
        warmup: eager calls before capture.

    Raises:
        RuntimeError: ``cudagraphs`` without CUDA.
    """
    fn = step
    if compile:
        # backward inside the graph: dynamo traces torch.autograd.grad only with this switch
        # (a torch without it breaks the graph there; a CUDA graph still captures both parts)
        if hasattr(torch._dynamo.config, "trace_autograd_ops"):
            torch._dynamo.config.trace_autograd_ops = True
        # every step is a new instance of one method, which dynamo counts as a recompilation of
        # it: a process that builds many agents (a sweep worker, a benchmark) would otherwise
        # fall back to eager after 8, silently
        limit = torch._dynamo.config
        limit.recompile_limit = max(limit.recompile_limit, _MAX_STEPS)
        limit.accumulated_recompile_limit = max(limit.accumulated_recompile_limit, _MAX_STEPS)
        fn = torch.compile(fn, mode=mode)
    if cudagraphs:
        if not torch.cuda.is_available():
            raise RuntimeError("compile.cudagraphs=true needs CUDA; set it to false on this device")
        from tensordict.nn import CudaGraphModule

        fn = CudaGraphModule(fn, warmup=warmup)
    return fn
