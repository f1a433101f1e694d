"""Shared harness of tiny specs and data for the loss tests (and the loss benchmark)."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torchrl.data import Bounded

OBS_DIM = 3
ACT_DIM = 2
CELLS = 16


def action_spec(act_dim: int = ACT_DIM, low: float = -1.0, high: float = 1.0) -> Bounded:
    return Bounded(low, high, shape=(act_dim,))


def ted_batch(
    n: int = 32,
    obs_dim: int = OBS_DIM,
    act_dim: int = ACT_DIM,
    *,
    low: float = -1.0,
    high: float = 1.0,
    terminated_frac: float = 0.1,
    generator: torch.Generator | None = None,
    keys: dict | None = None,
) -> TensorDict:
    """Random transitions in the TED layout; ``keys`` renames observation/action/reward/..."""
    k = {"observation": "observation", "action": "action", "reward": "reward"}
    k.update({"done": "done", "terminated": "terminated"})
    k.update(keys or {})
    g = generator
    term = torch.rand(n, 1, generator=g) < terminated_frac
    return TensorDict(
        {
            k["observation"]: torch.randn(n, obs_dim, generator=g),
            k["action"]: low + (high - low) * torch.rand(n, act_dim, generator=g),
            "next": {
                k["observation"]: torch.randn(n, obs_dim, generator=g),
                k["reward"]: torch.randn(n, 1, generator=g),
                k["done"]: term.clone(),
                k["terminated"]: term,
            },
        },
        batch_size=[n],
    )


def groups_with_grad(groups: dict[str, list[torch.nn.Parameter]]) -> set[str]:
    """Names of the parameter groups holding a non-zero gradient."""
    return {
        name
        for name, params in groups.items()
        if any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params)
    }
