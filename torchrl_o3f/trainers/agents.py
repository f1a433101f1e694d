"""An agent = a loss of the package + its optimisers + target updates, behind one ``update``."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.objectives import SoftUpdate

from torchrl_o3f.envs import Task

__all__ = ["Agent", "build_agent"]


def _adam(params: list, lr: float) -> torch.optim.Adam:
    """Adam, fused (one kernel for all parameters) where the device supports it.

    The same maths as the default implementation; ~7% faster for an IQL update on 2 CPU
    threads (see docs/performance.md).
    """
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


class Agent:
    """Trains one loss module: an Adam per parameter group, soft target updates.

    The same agent (the same loss) is used in the offline and the online phase: only the
    number of updates per env step changes. ``update(batch, update_actor=False)`` runs the
    critic part only where the loss offers it (``critic_loss``), which is how LAPO takes
    20 critic updates per env step and one actor update.

    Args:
        loss: a loss of :mod:`torchrl_o3f.objectives` (``IQLLoss``, ``LAPOLoss``), exposing
            ``policy``, ``qvalue_network`` and ``parameter_groups()``.
        lr: Adam learning rate of every group.
        tau: soft target update rate.
        actor_groups: names of the groups that only move with actor updates.

    Example:
        >>> from torchrl_o3f.envs import make_env
        >>> from torchrl_o3f.trainers.config import AlgoConfig
        >>> env = make_env("hopper-medium")
        >>> agent = build_agent(AlgoConfig(num_cells=32), "hopper-medium",
        ...                     env.action_spec, observation_dim=11)
        >>> sorted(agent.optimizers)
        ['actor', 'qvalue', 'value']
    """

    def __init__(self, loss, *, lr: float, tau: float, actor_groups=("actor", "vae")):
        self.loss = loss
        groups = loss.parameter_groups()
        self.optimizers = {name: _adam(params, lr) for name, params in groups.items() if params}
        self.actor_groups = tuple(g for g in actor_groups if g in self.optimizers)
        self.target_updater = SoftUpdate(loss, tau=tau)
        self.num_updates = 0

    @property
    def policy(self):
        """The TensorDictModule that acts (observation -> action)."""
        return self.loss.policy

    @property
    def qvalue_network(self):
        """The Q ensemble the loss trains and the selector reads."""
        return self.loss.qvalue_network

    def update(self, batch: TensorDictBase, *, update_actor: bool = True) -> TensorDictBase:
        """One gradient step on ``batch``; returns the loss tensordict (detached)."""
        critic_only = not update_actor and hasattr(self.loss, "critic_loss")
        out = self.loss.critic_loss(batch) if critic_only else self.loss(batch)
        names = [k for k in self.optimizers if update_actor or k not in self.actor_groups]
        for k in names:
            self.optimizers[k].zero_grad(set_to_none=True)
        total = sum(v for k, v in out.items() if isinstance(k, str) and k.startswith("loss_"))
        total.backward()
        for k in names:
            self.optimizers[k].step()
        self.target_updater.step()
        self.num_updates += 1
        return out.detach()

    def state_dict(self) -> dict[str, Any]:
        """Loss (networks and targets), optimisers and the update counter."""
        return {
            "loss": self.loss.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.loss.load_state_dict(state["loss"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.num_updates = state["num_updates"]


def build_agent(
    algo,
    task: Task | str,
    action_spec,
    *,
    observation_dim: int,
    data: TensorDictBase | None = None,
    device: torch.device | str | None = None,
) -> Agent:
    """Build the agent of ``algo`` (an :class:`~torchrl_o3f.trainers.config.AlgoConfig`).

    IQL takes the task family's expectile and temperature unless the config sets them, and
    its reward shift (antmaze: -1). LAPO needs the offline ``data`` for its state/action
    normalisation and reward pre-processing.
    """
    from torchrl_o3f.envs import get_task
    from torchrl_o3f.objectives import make_iql_loss, make_lapo_loss

    task = get_task(task)
    res = algo.resolved()
    common = dict(
        num_qvalue=algo.num_qvalue,
        num_cells=algo.num_cells,
        depth=res["depth"],
        gamma=algo.gamma,
        device=device,
        **algo.extra,
    )
    if algo.name == "iql":
        d = task.defaults
        loss = make_iql_loss(
            observation_dim,
            action_spec,
            layer_norm=algo.layer_norm,
            expectile=algo.expectile if algo.expectile is not None else d.iql_expectile,
            temperature=algo.temperature if algo.temperature is not None else d.iql_temperature,
            qvalue_reduction=algo.qvalue_reduction,
            reward_shift=d.reward_shift,
            reward_scale=d.reward_scale,
            **common,
        )
    elif algo.name == "lapo":
        if data is None:
            raise ValueError("LAPO needs the offline data for its normalisation statistics")
        loss = make_lapo_loss(observation_dim, action_spec, data=data, family=task.family, **common)
    else:
        raise ValueError(f"unknown algorithm {algo.name!r}; choose 'iql' or 'lapo'")
    return Agent(loss, lr=res["lr"], tau=algo.tau)
