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


def pendulum_controller(obs) -> float:
    """A swing-up + PD controller (about -145 return; a random policy gets about -1200)."""
    import numpy as np

    c, s, thdot = obs
    if c > 0.85:
        return float(np.clip(-(10.0 * np.arctan2(s, c) + 2.0 * thdot), -2, 2))
    energy = thdot**2 / 6 + 5 * (c - 1)
    return 2.0 * float(np.sign(thdot or 1.0)) * (1.0 if energy < 0 else -0.5)


def pendulum_dataset(episodes: int = 10, noise: float = 0.3, seed: int = 0) -> TensorDict:
    """Transitions of the noisy controller on Pendulum-v1, in the TED layout (200 per episode)."""
    import gymnasium as gym
    import numpy as np

    rng = np.random.default_rng(seed)
    env = gym.make("Pendulum-v1")
    rows = {"observation": [], "action": [], "reward": [], "next_observation": []}
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        for _ in range(200):
            act = np.clip(pendulum_controller(obs) + noise * rng.standard_normal(), -2, 2)
            nxt, rew, *_ = env.step(np.array([act], dtype=np.float32))
            for k, v in zip(rows, (obs, [act], [rew], nxt)):
                rows[k].append(np.asarray(v, dtype=np.float32))
            obs = nxt
    t = {k: torch.as_tensor(np.stack(v)) for k, v in rows.items()}
    n = t["reward"].shape[0]
    false = torch.zeros(n, 1, dtype=torch.bool)
    return TensorDict(
        {
            "observation": t["observation"],
            "action": t["action"],
            "next": {
                "observation": t["next_observation"],
                "reward": t["reward"],
                "done": false,
                "terminated": false.clone(),
            },
        },
        batch_size=[n],
    )


def pendulum_return(policy, env, seeds=(100, 101, 102)) -> float:
    """Mean deterministic return of ``policy`` over 200-step episodes of ``env``."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    returns = []
    for seed in seeds:
        env.set_seed(seed)
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            rollout = env.rollout(200, policy)
        returns.append(rollout["next", "reward"].sum().item())
    return sum(returns) / len(returns)


def train_offline(loss, data: TensorDict, steps: int, *, lr: float = 1e-3, tau: float = 0.005):
    """``steps`` updates of ``loss`` on batches of 256 from ``data``: one Adam per group."""
    from torchrl.objectives import SoftUpdate

    updater = SoftUpdate(loss, tau=tau)
    opts = [torch.optim.Adam(p, lr) for p in loss.parameter_groups().values()]
    n = data.shape[0]
    for _ in range(steps):
        out = loss(data[torch.randint(0, n, (256,))])
        for o in opts:
            o.zero_grad()
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        for o in opts:
            o.step()
        updater.step()
