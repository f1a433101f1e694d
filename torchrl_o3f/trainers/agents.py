"""An agent = a registered algorithm's loss + its optimisers + target updates, behind ``update``.

Also the objective switch at the phase boundary (:func:`switch_agent`): the online agent of
another algorithm starts from the offline agent's policy and critics.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.objectives import SoftUpdate

from torchrl_o3f.errors import ConfigError
from torchrl_o3f.objectives.base import OfflineOnlineLoss
from torchrl_o3f.objectives.registry import AlgoConfig, get_algorithm
from torchrl_o3f.trainers.capture import CapturedUpdate, compile_step

__all__ = [
    "Agent",
    "acting_entries",
    "build_agent",
    "placeholder_data",
    "switch_agent",
    "switch_plan",
    "switch_refusal",
]


def _adam(params: list, lr: float) -> torch.optim.Adam:
    """Adam, fused (one kernel for all parameters) where the device supports it."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


class Agent:
    """Trains one loss module: an Adam per parameter group, soft target updates.

    ``update(batch, update_actor=False)`` updates the critic only: it runs the loss's
    ``critic_loss`` where the loss has one (LAPO's 20 critic updates per env step and one actor
    update), otherwise the whole loss with the actor's groups left still. The actor's groups are
    the loss's ``actor_groups`` (default ``("actor",)``). The actor also waits
    ``cfg.actor_delay`` updates between its updates (TD3's policy delay; 1: every update).

    Learning rates: ``cfg.lr[group]`` per optimiser; groups with ``cfg.lr_schedule[group] ==
    "cosine"`` follow :meth:`set_offline_progress` (cosine-annealed to 0 over the offline phase,
    the base rate online).

    Args:
        loss: a loss of :mod:`torchrl_o3f.objectives`, exposing ``policy``, ``qvalue_network``
            and ``parameter_groups()``.
        cfg: its algorithm config (learning rates, schedules, tau, actor delay).
        compile: update through :class:`~torchrl_o3f.trainers.capture.CapturedUpdate` compiled
            with ``torch.compile`` (the same maths, no host synchronisation; its device flags
            :attr:`nonfinite` / :attr:`first_nonfinite` replace reading every loss).
        compile_mode: the ``torch.compile`` mode (``None``: its default).
        cudagraphs: replay the captured update as a CUDA graph (CUDA only).

    Raises:
        ValueError: when ``cfg.lr`` does not name exactly the loss's parameter groups.

    Example:
        >>> from torchrl_o3f.envs import make_env
        >>> from torchrl_o3f.objectives import algo_config
        >>> env = make_env("hopper-medium")
        >>> cfg = algo_config("iql", overrides={"num_cells": 32, "reward_normalization": "none"})
        >>> agent = build_agent(cfg, env.action_spec, observation_dim=11)
        >>> sorted(agent.optimizers)
        ['actor', 'qvalue', 'value']
    """

    def __init__(
        self,
        loss,
        cfg: AlgoConfig,
        *,
        compile: bool = False,
        compile_mode: str | None = None,
        cudagraphs: bool = False,
    ):
        self.loss = loss
        self.cfg = cfg
        groups = {k: v for k, v in loss.parameter_groups().items() if v}
        if set(groups) != set(cfg.lr):
            raise ValueError(
                f"algo.lr names the groups {sorted(cfg.lr)} but the {cfg.name} loss trains "
                f"{sorted(groups)}: give one learning rate per parameter group in its yaml"
            )
        self.optimizers = {name: _adam(params, cfg.lr[name]) for name, params in groups.items()}
        if not isinstance(loss, OfflineOnlineLoss):
            raise TypeError(
                f"{type(loss).__name__} does not meet the trainer's loss protocol "
                "(torchrl_o3f.objectives.base.OfflineOnlineLoss): subclass EnsembleLoss"
            )
        self.actor_groups = tuple(g for g in loss.actor_groups if g in groups)
        self.target_updater = SoftUpdate(loss, tau=cfg.tau)
        self.num_updates = 0
        self.captured = compile or cudagraphs
        device = next(iter(loss.parameters())).device
        # the captured step's run-time numbers, as tensors changed in place (never re-traced)
        self._lr = {n: torch.tensor(float(cfg.lr[n]), device=device) for n in self.optimizers}
        self.update_count = torch.zeros((), dtype=torch.int64, device=device)
        # set by the captured steps at the first non-finite loss or gradient, and its update
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.first_nonfinite = torch.zeros((), dtype=torch.int64, device=device)
        self._steps = {}
        if self.captured:
            for update_actor in (True, False):
                step = CapturedUpdate(self, update_actor=update_actor)
                self._steps[update_actor] = (
                    step,
                    compile_step(step, compile=compile, mode=compile_mode, cudagraphs=cudagraphs),
                )

    def adam_state(self, param: torch.nn.Parameter) -> dict[str, torch.Tensor]:
        """The Adam state of ``param`` (``step``, ``exp_avg``, ``exp_avg_sq``), created now if new.

        The captured step updates these very tensors, so the optimiser's ``state_dict`` saves
        them and a checkpoint is the same with and without compilation.
        """
        for opt in self.optimizers.values():
            if any(param is p for g in opt.param_groups for p in g["params"]):
                state = opt.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(
                        param, memory_format=torch.preserve_format
                    )
                return state
        raise KeyError("the parameter is not trained by any of the agent's optimisers")

    def lr_tensor(self, group: str) -> torch.Tensor:
        """The learning rate of ``group`` as a scalar tensor (what the captured step reads)."""
        return self._lr[group]

    def target_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(targets, sources)``: every target tensor of the loss and the tensor it follows.

        The loss's ``target_<name>_params`` follow ``<name>_params`` (torchrl's convention,
        which :class:`~torchrl.objectives.SoftUpdate` reads).
        """
        targets, sources = [], []
        for child, value in self.loss.named_children():
            if not (child.startswith("target_") and child.endswith("_params")):
                continue
            source = getattr(self.loss, child[len("target_") :]).flatten_keys()
            target = value.flatten_keys()
            for key in sorted(target.keys(True, True), key=str):
                targets.append(target.get(key))
                sources.append(source.get(key))
        return targets, sources

    @property
    def policy(self):
        """The TensorDictModule that acts (observation -> action)."""
        return self.loss.policy

    @property
    def qvalue_network(self):
        """The Q ensemble the loss trains and the selector reads."""
        return self.loss.qvalue_network

    def set_offline_progress(self, step: int | None, total: int) -> None:
        """Set the scheduled learning rates for offline ``step`` of ``total`` (``None``: online).

        A ``"cosine"`` group runs at ``lr * (1 + cos(pi * step / total)) / 2``; online (``step``
        ``None``) every group runs at its base rate. Stateless: a resumed run sets the same rates.
        """
        for name, opt in self.optimizers.items():
            lr = self.cfg.lr[name]
            if step is not None and self.cfg.lr_schedule.get(name, "constant") == "cosine":
                lr = lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
            for group in opt.param_groups:
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].fill_(lr)
                else:
                    group["lr"] = lr
            if self.captured:  # what the captured step reads; eager Adam has its own
                self._lr[name].fill_(lr)

    def update(self, batch: TensorDictBase, *, update_actor: bool = True) -> TensorDictBase:
        """One gradient step on ``batch``; returns the loss tensordict (detached)."""
        update_actor = update_actor and self.num_updates % self.cfg.actor_delay == 0
        if self.captured:
            out = self._steps[update_actor][1](batch)
            self.num_updates += 1
            return out
        out = self.loss(batch) if update_actor else self.loss.critic_loss(batch)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        total = sum(v for k, v in out.items() if isinstance(k, str) and k.startswith("loss_"))
        total.backward()
        for name, opt in self.optimizers.items():
            if update_actor or name not in self.actor_groups:
                opt.step()
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
        self.loss.load_state_dict(state["loss"])  # in place: captured graphs keep their inputs
        for k, o in self.optimizers.items():
            if not self.captured:
                o.load_state_dict(state["optimizers"][k])
                continue
            params = [p for g in o.param_groups for p in g["params"]]
            held = [self.adam_state(p) for p in params]
            o.load_state_dict(state["optimizers"][k])
            for p, mine in zip(params, held):
                loaded = o.state.get(p) or {}
                for name, tensor in mine.items():
                    if name in loaded:
                        tensor.copy_(loaded[name])
                    else:
                        tensor.zero_()
                o.state[p] = mine
        self.num_updates = state["num_updates"]


def build_agent(
    cfg: AlgoConfig,
    action_spec,
    *,
    observation_dim: int,
    data: TensorDictBase | None = None,
    device: torch.device | str | None = None,
    compile: bool = False,
    compile_mode: str | None = None,
    cudagraphs: bool = False,
) -> Agent:
    """The agent of the registered algorithm ``cfg.name``, with ``cfg``'s numbers.

    Args:
        cfg: a resolved algorithm config (:func:`~torchrl_o3f.objectives.algo_config`).
        action_spec: the env's bounded action spec.
        observation_dim: the flat observation size.
        data: the offline TED data (normalisation statistics, reward scales); required by
            algorithms registered with ``needs_data``.
        device: where the networks live.
        compile: run updates through the captured step compiled with ``torch.compile``
            (:mod:`torchrl_o3f.trainers.capture`); ``False``: torch's optimisers, eagerly.
        compile_mode: the ``torch.compile`` mode (``None``: its default).
        cudagraphs: replay the captured step as a CUDA graph (CUDA only).

    Raises:
        UnknownAlgorithmError: for an unregistered ``cfg.name``.
    """
    loss = get_algorithm(cfg.name).make_loss(
        cfg, observation_dim=observation_dim, action_spec=action_spec, data=data, device=device
    )
    return Agent(loss, cfg, compile=compile, compile_mode=compile_mode, cudagraphs=cudagraphs)


def placeholder_data(observation_dim: int, action_dim: int) -> TensorDict:
    """Four transitions, two episodes: enough for a loss's data-derived settings.

    Used to build a loss before (or without) its data: to check a config before any work
    (:func:`switch_plan`).

    Example:
        >>> placeholder_data(3, 2)["next", "done"].sum().item()
        2
    """
    n = 4
    return TensorDict(
        {
            "observation": torch.zeros(n, observation_dim),
            "action": torch.zeros(n, action_dim),
            "next": {
                "observation": torch.zeros(n, observation_dim),
                "reward": torch.tensor([[0.0], [1.0], [0.0], [2.0]]),
                "done": torch.tensor([[False], [True], [False], [True]]),
                "terminated": torch.zeros(n, 1, dtype=torch.bool),
            },
        },
        batch_size=[n],
    )


def acting_entries(loss) -> list[str]:
    """The state-dict entries of the networks a loss acts with: its policy, critics, targets.

    The policy's parameters and buffers (whatever the loss calls them: ``actor_network.*``,
    LAPO's ``cvae.*`` and ``latent_actor.*``), the critic ensemble the O3F selector reads
    (``qvalue_network.*``) and every target network (``target_<name>_params.*``).

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.objectives import algo_config
        >>> cfg = algo_config("lapo", overrides={"num_cells": 8})
        >>> agent = build_agent(cfg, Bounded(-1.0, 1.0, shape=(2,)), observation_dim=3,
        ...                     data=placeholder_data(3, 2))
        >>> sorted({k.split(".")[0] for k in acting_entries(agent.loss)})[:3]
        ['cvae', 'latent_actor', 'qvalue_network']
    """
    policy = {id(t) for t in (*loss.policy.parameters(), *loss.policy.buffers())}

    def target(name: str) -> bool:
        first = name.split(".", 1)[0]
        return first.startswith("target_") and first.endswith("_params")

    return [
        name
        for name, value in loss.state_dict(keep_vars=True).items()
        if id(value) in policy or name.startswith("qvalue_network.") or target(name)
    ]


def switch_plan(offline, online) -> dict[str, list[str]]:
    """What an objective switch from loss ``offline`` to loss ``online`` carries over.

    An entry of the online loss's state dict is carried when the offline loss has one of the
    same name, shape and dtype.

    Returns:
        ``{"copied": [...], "kept": [...], "uncarried": [...]}``: the online entries taken from
        the offline loss, those left at their initial values, and among the latter those of
        the networks the online algorithm acts with (:func:`acting_entries`): what the online
        phase would start from untrained.
    """
    source = offline.state_dict()
    copied, kept = [], []
    for key, value in online.state_dict().items():
        other = source.get(key)
        if other is not None and other.shape == value.shape and other.dtype == value.dtype:
            copied.append(key)
        else:
            kept.append(key)
    acting = set(acting_entries(online))
    return {"copied": copied, "kept": kept, "uncarried": [k for k in kept if k in acting]}


def _networks_of(entries: list[str]) -> str:
    """The networks of state-dict ``entries``, by their first name part: ``cvae.*, ...``."""
    return ", ".join(dict.fromkeys(f"{k.split('.')[0]}.*" for k in entries))


def switch_agent(offline: Agent, online: Agent, *, fresh: bool = False) -> dict[str, list[str]]:
    """Start ``online`` (another algorithm) from ``offline``'s policy and critics, in place.

    Copied: every entry of the offline loss's state dict whose name and shape the online loss
    also has (:func:`switch_plan`): the policy's and the critic ensemble's parameters, their
    target copies, shared hyper-parameter buffers such as SAC/CQL's entropy temperature. Not
    copied: optimiser states (the online objective starts its own Adam moments) and what only
    one loss has (e.g. CQL's Lagrange multiplier, IQL's V network for SAC).

    Args:
        offline: the agent trained offline.
        online: the online algorithm's agent, changed in place.
        fresh: accept a switch that cannot carry every network the online algorithm acts with
            (its policy, critics and their targets): those start at their initial values
            (``switch_fresh=true`` of the config).

    Returns:
        ``{"copied": [...], "kept": [...], "fresh": [...]}``: the online state-dict entries
        taken from the offline agent, those left at their initial values, and among them
        those of the networks it acts with.

    Raises:
        ConfigError: when a network the online algorithm acts with cannot be carried over and
            ``fresh`` is false (the two algorithms build different networks).
    """
    plan = switch_plan(offline.loss, online.loss)
    uncarried = plan["uncarried"]
    if uncarried and not fresh:
        raise ConfigError(switch_refusal(offline.cfg.name, online.cfg.name, uncarried))
    source = offline.loss.state_dict()
    target = online.loss.state_dict()
    update = {k: source[k].detach().clone() for k in plan["copied"]}
    online.loss.load_state_dict({**target, **update})
    return {"copied": plan["copied"], "kept": plan["kept"], "fresh": uncarried}


def switch_refusal(offline: str, online: str, uncarried: list[str]) -> str:
    """The one-line refusal of a switch whose acting networks cannot be carried over."""
    return (
        f"online_algo={online}: the switch {offline} -> {online} cannot carry "
        f"{_networks_of(uncarried)} ({len(uncarried)} entries: {online} acts with "
        f"networks {offline} does not train), so the online phase would start from untrained "
        f"networks; choose an online_algo with the same networks as algo={offline} (e.g. "
        f"cql -> sac), or set switch_fresh=true to start those networks from scratch"
    )
