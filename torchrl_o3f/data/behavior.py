"""Behaviour policies: SAC training through the trainer, and the shipped actor checkpoints.

D4RL made its locomotion datasets by rolling out SAC policies stopped at a given return
(``medium``: about a third of an expert's). This module trains such a policy with the
registered SAC (an online-only run of :class:`~torchrl_o3f.trainers.OfflineOnlineTrainer`),
keeps the actor with its measured returns, and
loads the checkpoints shipped in ``torchrl_o3f/data/policies`` as :class:`BehaviorPolicy`
objects that the dataset builder rolls out.

A checkpoint is two files: ``<name>.pt`` (the actor network's state dict only) and
``<name>.json`` (architecture, env id, mujoco version, training steps and the returns measured
over deterministic and stochastic episodes).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from torchrl_o3f.envs import Task, get_task, make_gym_env
from torchrl_o3f.modules.networks import build_mlp

__all__ = [
    "BehaviorPolicy",
    "PolicyInfo",
    "POLICY_DIR",
    "MEDIUM_TARGETS",
    "build_sac_actor",
    "evaluate_policy",
    "install_policy",
    "list_policies",
    "measure_policy",
    "load_policy",
    "train_behavior",
]

POLICY_DIR = Path(__file__).resolve().parent / "policies"
"""Where the shipped behaviour checkpoints live."""

MEDIUM_TARGETS: dict[str, float] = {"halfcheetah": 4000.0, "hopper": 1100.0, "walker2d": 1500.0}
"""Deterministic evaluation return at which ``train-behavior`` keeps a ``medium`` policy (v5
envs; about a third of an expert's return, as D4RL's medium policies)."""


@dataclass
class PolicyInfo:
    """The metadata stored next to an actor checkpoint (``<name>.json``).

    Attributes:
        name: checkpoint name, ``<family>-<quality>`` (e.g. ``"halfcheetah-medium"``).
        env_id: the gymnasium env the policy was trained and evaluated on.
        observation_dim: flat observation size.
        action_dim: action size.
        action_low: lower action bounds.
        action_high: upper action bounds.
        num_cells: hidden width of the actor MLP.
        depth: number of hidden layers of the actor MLP.
        train_steps: environment steps of training when the checkpoint was taken.
        seed: training seed.
        mujoco_version: the mujoco version of the measurements.
        returns: measured returns, e.g. ``{"deterministic": {"mean", "std", "episodes"},
            "stochastic": {...}}``.
        extra: free-form details (training hyper-parameters, wall time).

    Example:
        >>> info = PolicyInfo("toy", "Pendulum-v1", 3, 1, [-2.0], [2.0], num_cells=8, depth=1)
        >>> info.name, info.action_high
        ('toy', [2.0])
    """

    name: str
    env_id: str
    observation_dim: int
    action_dim: int
    action_low: list[float]
    action_high: list[float]
    num_cells: int = 256
    depth: int = 2
    train_steps: int = 0
    seed: int = 0
    mujoco_version: str = ""
    returns: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def build_sac_actor(
    observation_dim: int,
    action_dim: int,
    *,
    action_low: float | torch.Tensor = -1.0,
    action_high: float | torch.Tensor = 1.0,
    num_cells: int = 256,
    depth: int = 2,
):
    """A SAC actor: MLP -> (loc, scale) -> TanhNormal within the action bounds.

    Args:
        observation_dim: flat observation size.
        action_dim: action size.
        action_low: lower action bound(s).
        action_high: upper action bound(s).
        num_cells: hidden width.
        depth: number of hidden layers.

    Returns:
        :func:`torchrl_o3f.modules.actors.make_sac_actor`'s actor, reading ``observation`` and
        writing ``action`` (and ``loc``/``scale``); its MLP is ``actor.module[0].module``.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> actor = build_sac_actor(3, 2, num_cells=16)
        >>> actor(TensorDict({"observation": torch.zeros(4, 3)}, [4]))["action"].shape
        torch.Size([4, 2])
    """
    from torchrl.data import Bounded

    from torchrl_o3f.modules.actors import make_sac_actor

    low = torch.as_tensor(action_low, dtype=torch.float32).expand(action_dim).clone()
    high = torch.as_tensor(action_high, dtype=torch.float32).expand(action_dim).clone()
    spec = Bounded(low, high, shape=(action_dim,))
    return make_sac_actor(observation_dim, spec, num_cells=num_cells, depth=depth)


class BehaviorPolicy:
    """A trained actor, rolled out as a plain numpy-in, numpy-out policy.

    The stochastic action is ``low + (high - low) * (tanh(loc + scale * eps) + 1) / 2`` with
    ``eps ~ N(0, I)`` drawn from the given generator (the same TanhNormal as training, sampled
    reproducibly); the deterministic action uses ``eps = 0``.

    Args:
        net: the actor MLP (observation -> ``2 * action_dim``).
        info: the checkpoint metadata.

    Example:
        >>> import numpy as np, torch
        >>> info = PolicyInfo("toy", "Pendulum-v1", 3, 1, [-2.0], [2.0], num_cells=8, depth=1)
        >>> policy = BehaviorPolicy.from_info(info)
        >>> a = policy.act(np.zeros((5, 3), np.float32), generator=torch.Generator().manual_seed(0))
        >>> a.shape, bool((np.abs(a) <= 2).all())
        ((5, 1), True)
    """

    def __init__(self, net: nn.Module, info: PolicyInfo):
        from tensordict.nn import NormalParamExtractor

        self.net = net.eval()
        self.info = info
        self._extract = NormalParamExtractor()
        self._low = torch.tensor(info.action_low, dtype=torch.float32)
        self._high = torch.tensor(info.action_high, dtype=torch.float32)
        self.refresh()

    def refresh(self) -> None:
        """Re-read the network's weights into the fast single-observation path.

        Rolling out one observation at a time through torch modules costs ~0.3 ms of module
        overhead per step; a plain numpy evaluation of the same Linear/ReLU stack takes a few
        microseconds, which makes dataset builds several times faster. The weights are copied
        when the policy is made: call this after changing the network in place.
        """
        from tensordict.nn.utils import biased_softplus

        ops: list | None = []
        for module in self.net.children():
            if isinstance(module, nn.Linear):
                w = module.weight.detach().cpu().numpy().T.copy()
                b = module.bias.detach().cpu().numpy().copy()
                ops.append((w, b))
            elif isinstance(module, nn.ReLU):
                ops.append(None)
            else:  # another activation: keep the torch path
                ops = None
                break
        mapping = self._extract.scale_mapping
        if not isinstance(mapping, biased_softplus):
            ops = None
        self._ops = ops
        if ops is not None:
            self._scale = (float(mapping.bias), float(mapping.min_val), self._extract.scale_lb)
            self._low_np, self._high_np = self._low.numpy(), self._high.numpy()

    @classmethod
    def from_info(cls, info: PolicyInfo, state_dict: dict | None = None) -> BehaviorPolicy:
        """Build the actor MLP described by ``info`` (and load ``state_dict`` if given)."""
        net = build_mlp(
            info.observation_dim, 2 * info.action_dim, num_cells=info.num_cells, depth=info.depth
        )
        if state_dict is not None:
            net.load_state_dict(state_dict)
        return cls(net, info)

    @torch.no_grad()
    def act(
        self,
        observation: np.ndarray,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """Actions (float32) for a single observation ``[d]`` or a batch ``[B, d]``."""
        if self._ops is not None and np.ndim(observation) == 1:
            x = np.asarray(observation, dtype=np.float32)
            for op in self._ops:
                x = np.maximum(x, 0) if op is None else x @ op[0] + op[1]
            loc, pre_scale = np.split(x, 2)
            if not deterministic:
                bias, min_val, lb = self._scale
                scale = np.maximum(np.logaddexp(0, pre_scale + bias) + min_val, lb)
                noise = torch.randn(loc.shape, generator=generator).numpy()
                loc = loc + scale * noise
            unit = (np.tanh(loc) + 1) / 2
            return (self._low_np + (self._high_np - self._low_np) * unit).astype(np.float32)
        obs = torch.as_tensor(observation, dtype=torch.float32)
        loc, scale = self._extract(self.net(obs))
        if not deterministic:
            noise = torch.randn(loc.shape, generator=generator, dtype=loc.dtype)
            loc = loc + scale * noise
        unit = (torch.tanh(loc) + 1) / 2
        return (self._low + (self._high - self._low) * unit).numpy()

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        """Deterministic action (the ``expert_policy`` signature Minari expects)."""
        return self.act(observation, deterministic=True)

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``<path>.pt`` (the MLP's state dict) and ``<path>.json`` (the metadata)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pt, js = path.with_suffix(".pt"), path.with_suffix(".json")
        torch.save({k: v.detach().clone() for k, v in self.net.state_dict().items()}, pt)
        js.write_text(json.dumps(asdict(self.info), indent=2) + "\n")
        return pt, js


def list_policies(directory: str | os.PathLike | None = None) -> list[str]:
    """Names of the checkpoints in ``directory`` (default: the shipped ones).

    Example:
        >>> "halfcheetah-medium" in list_policies()
        True
    """
    directory = Path(directory) if directory is not None else POLICY_DIR
    return sorted(p.stem for p in directory.glob("*.json") if p.with_suffix(".pt").exists())


def load_policy(name: str, directory: str | os.PathLike | None = None) -> BehaviorPolicy:
    """Load a behaviour checkpoint by name (``"halfcheetah-medium"``).

    Args:
        name: checkpoint name, ``<family>-<quality>``.
        directory: where to look (default: the checkpoints shipped with the package).

    Raises:
        FileNotFoundError: no such checkpoint; the message lists the available ones and the
            command that trains one.

    Example:
        >>> policy = load_policy("halfcheetah-medium")
        >>> policy.info.env_id
        'HalfCheetah-v5'
    """
    directory = Path(directory) if directory is not None else POLICY_DIR
    js, pt = directory / f"{name}.json", directory / f"{name}.pt"
    if not (js.exists() and pt.exists()):
        family = name.split("-")[0]
        raise FileNotFoundError(
            f"no behaviour policy {name!r} in {directory} (available: "
            f"{', '.join(list_policies(directory)) or 'none'}). Train one with "
            f"`python -m torchrl_o3f.data train-behavior {family}`."
        )
    info = PolicyInfo(**json.loads(js.read_text()))
    state = torch.load(pt, map_location="cpu", weights_only=True)
    return BehaviorPolicy.from_info(info, state)


def evaluate_policy(
    policy: Callable[[np.ndarray], np.ndarray] | BehaviorPolicy,
    task: str | Task,
    *,
    num_episodes: int = 10,
    deterministic: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Undiscounted returns of full episodes of ``policy`` on the task's env.

    Args:
        policy: a :class:`BehaviorPolicy`, or any callable ``obs -> action``
            (``"random"`` is not accepted here; use a lambda sampling the action space).
        task: a task name or :class:`Task` (its env and episode cap are used).
        num_episodes: number of episodes.
        deterministic: for a :class:`BehaviorPolicy`, act with ``eps = 0``.
        seed: the env is reset with ``seed + i`` for episode ``i``; the policy noise is
            seeded with ``seed``.

    Returns:
        The returns, shape ``[num_episodes]`` (float64).

    Example:
        >>> env_returns = evaluate_policy(lambda o: np.zeros(6, np.float32), "halfcheetah-random",
        ...                               num_episodes=1)
        >>> env_returns.shape
        (1,)
    """
    env = make_gym_env(task)
    gen = torch.Generator().manual_seed(seed)
    returns = []
    for i in range(num_episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            if isinstance(policy, BehaviorPolicy):
                action = policy.act(obs, deterministic=deterministic, generator=gen)
            else:
                action = policy(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return np.asarray(returns, dtype=np.float64)


def _summary(returns: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(np.mean(returns)),
        "std": float(np.std(returns)),
        "episodes": len(returns),
    }


def train_behavior(
    family: str,
    *,
    quality: str = "medium",
    target_return: float | None = None,
    tolerance: float = 0.1,
    max_steps: int = 150_000,
    warmup_steps: int = 5_000,
    eval_every: int = 5_000,
    eval_episodes: int = 5,
    final_episodes: int = 10,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    run_dir: str | os.PathLike | None = None,
    algo_overrides: dict[str, Any] | None = None,
    threads: int = 0,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
) -> Path | None:
    """Train a behaviour actor with the registered SAC, as an online-only run of the trainer.

    The run is :class:`~torchrl_o3f.trainers.OfflineOnlineTrainer` with ``algo="sac"`` (its
    yaml's numbers, changed by ``algo_overrides``), no offline data, ``warmup_steps`` frames of
    uniform random actions, then one update per env step. After every evaluation (every
    ``eval_every`` env steps, ``eval_episodes`` deterministic episodes) the actor is written to
    ``<run_dir>/behavior/<family>-<quality>-step<N>.{pt,json}`` with its return; the run stops
    as soon as an evaluation after the warm-up is within ``target_return * (1 +- tolerance)``
    (or at ``max_steps``). The snapshot closest to the target is then measured over
    ``final_episodes`` deterministic and stochastic episodes and written as
    ``<out_dir>/<family>-<quality>.{pt,json}``.

    A run stopped by SIGINT/SIGTERM leaves its checkpoint in ``run_dir``: the same call resumes
    it (the trainer's exact resume) and returns ``None`` meanwhile. A finished ``run_dir`` is
    not trained again: its snapshots are selected from anew.

    Args:
        family: ``"halfcheetah"``, ``"hopper"`` or ``"walker2d"``.
        quality: checkpoint name suffix (``"medium"``; ``"expert"`` with a high target).
        target_return: the deterministic return to stop at (default: :data:`MEDIUM_TARGETS`).
        tolerance: relative half-width of the stopping band.
        max_steps: environment steps of the run at most.
        warmup_steps: random-action steps before learning starts.
        eval_every: environment steps between evaluations.
        eval_episodes: episodes per evaluation.
        final_episodes: episodes of each final measurement.
        seed: the run's seed.
        out_dir: where to write the policy. ``None``: the package's shipped policies, which
            are only replaced with ``overwrite=True``.
        overwrite: replace an existing ``<out_dir>/<family>-<quality>`` policy.
        run_dir: the trainer's run directory (default: ``runs/behavior/<name>-seed<k>``).
        algo_overrides: SAC config changes, e.g. ``{"num_cells": 64}``.
        threads: torch threads (0: torch's default).
        progress: show the trainer's progress bar.
        log: progress printer (``None``: silent).

    Returns:
        The path of the written ``.pt`` file, or ``None`` when the run was stopped by a signal.

    Raises:
        ConfigError: (a ``ValueError``) for a family without a locomotion env, settings that
            leave no evaluation after the warm-up, or a SAC override that does not fit its
            config (raised before any training).
        FileExistsError: the policy exists (or ``out_dir`` is the shipped folder) and
            ``overwrite`` is false; raised before any training.
    """
    from torchrl_o3f.objectives.registry import algo_config
    from torchrl_o3f.trainers import OfflineOnlineTrainer, TrainerConfig
    from torchrl_o3f.trainers.config import (
        BudgetConfig,
        ConfigError,
        ExplorationConfig,
        LoggerConfig,
    )

    if family not in MEDIUM_TARGETS:
        raise ConfigError(
            f"train-behavior trains locomotion policies, one of {sorted(MEDIUM_TARGETS)}; got "
            f"{family!r} (pointmaze data come from a scripted controller, antmaze and kitchen "
            "cannot be rebuilt)"
        )
    if max_steps < warmup_steps + eval_every:
        raise ConfigError(
            f"no evaluation after the warm-up: max_steps={max_steps} must be at least "
            f"warmup_steps={warmup_steps} + eval_every={eval_every}"
        )
    name = f"{family}-{quality}"
    target = Path(out_dir if out_dir is not None else POLICY_DIR) / f"{name}.pt"
    if not overwrite and (out_dir is None or target.exists()):
        where = "a shipped policy" if out_dir is None else "a policy"
        raise FileExistsError(
            f"{target} would replace {where}: give another --out-dir, or pass --overwrite "
            "(overwrite=True) to replace it"
            if target.exists()
            else f"writing into the shipped policies ({target.parent}) needs --overwrite "
            "(overwrite=True); or give --out-dir"
        )
    task = get_task(f"{family}-random")  # every quality of a family shares its env
    if target_return is None:
        target_return = MEDIUM_TARGETS[family]
    log = log or (lambda s: None)
    if run_dir is None:
        run_dir = Path("runs", "behavior", f"{name}-seed{seed}")
    run_dir = Path(run_dir)
    snapshots = run_dir / "behavior"
    resume = run_dir / "checkpoints" / "latest.pt"
    cfg = TrainerConfig(
        task=task.name,
        algo=algo_config("sac", task=task.name, overrides=algo_overrides or {}),
        offline_data=False,
        exploration=ExplorationConfig(mode="none"),
        budget=BudgetConfig(
            offline_steps=0,
            online_frames=max_steps,
            warmup_frames=warmup_steps,
            eval_every=eval_every,
            eval_episodes=eval_episodes,
            checkpoint_every=eval_every,
            log_every=min(1000, eval_every),
            dataset_size=None,
        ),
        logger=LoggerConfig(backend="csv", exp_name=f"train-behavior-{name}"),
        seed=seed,
        output_dir=str(run_dir),
        resume=str(run_dir) if resume.exists() else None,
        overwrite=not resume.exists(),  # a run stopped before its first checkpoint restarts
        threads=threads,
        progress=progress,
        method="train-behavior",
    )
    start = time.time()

    def snapshot(trainer, row: dict) -> bool:
        if row["phase"] != "online" or row["frames"] <= warmup_steps:
            return False  # the untrained actor of the warm-up is not a candidate
        spec = trainer.action_spec.space
        snap = PolicyInfo(
            name=name,
            env_id=task.env_id,
            observation_dim=int(trainer.observation_dim),
            action_dim=int(spec.low.numel()),
            action_low=spec.low.detach().cpu().reshape(-1).tolist(),
            action_high=spec.high.detach().cpu().reshape(-1).tolist(),
            num_cells=cfg.algo.num_cells,
            depth=cfg.algo.depth,
            seed=seed,
            train_steps=int(row["frames"]),
        )
        snap.returns = {
            "deterministic": {
                "mean": float(row["return"]),
                "std": float(row.get("return_std", float("nan"))),
                "episodes": int(row["eval_episodes"]),
            }
        }
        snap.extra = {"wall_time_s": round(time.time() - start, 1)}
        mlp = trainer.agent.policy.module[0].module[0]  # make_sac_actor's MLP
        BehaviorPolicy.from_info(snap, mlp.state_dict()).save(
            snapshots / f"{name}-step{row['frames']}"
        )
        log(
            f"[train-behavior {family}] step {row['frames']}: eval return {row['return']:.1f} "
            f"({time.time() - start:.0f}s)"
        )
        return abs(row["return"] - target_return) <= tolerance * abs(target_return)

    if not (run_dir / "summary.json").exists():  # else the run is done: only select again
        summary = OfflineOnlineTrainer(cfg, on_evaluation=snapshot).train()
        if summary.get("stopped"):
            log(f"[train-behavior {family}] stopped; the same command resumes it from {run_dir}")
            return None
    best = None
    for js in sorted(snapshots.glob(f"{name}-step*.json")):
        snap = PolicyInfo(**json.loads(js.read_text()))
        if snap.train_steps <= warmup_steps:
            continue
        gap = abs(snap.returns["deterministic"]["mean"] - target_return)
        if best is None or (gap, snap.train_steps) < best[:2]:
            best = (gap, snap.train_steps, js.with_suffix(""))
    policy = load_policy(best[2].name, best[2].parent)
    sac = cfg.algo
    policy.info.extra = {
        "algorithm": "SAC (torchrl_o3f's registered sac, an online-only run of the trainer)",
        "sac": {k: v for k, v in sac.hyperparameters().items()},
        "batch_size": sac.batch_size,
        "lr": dict(sac.lr),
        "gamma": sac.gamma,
        "tau": sac.tau,
        "warmup_steps": warmup_steps,
        "target_return": target_return,
        "torch_threads": torch.get_num_threads(),
        "wall_time_s": round(time.time() - start, 1),
    }
    measure_policy(policy, num_episodes=final_episodes)
    det, sto = policy.info.returns["deterministic"], policy.info.returns["stochastic"]
    log(
        f"[train-behavior {family}] kept step {policy.info.train_steps}: deterministic "
        f"{det['mean']:.1f} +- {det['std']:.1f}, stochastic {sto['mean']:.1f} +- {sto['std']:.1f}"
    )
    pt, _ = policy.save(target.with_suffix(""))
    return pt


def measure_policy(policy: BehaviorPolicy, *, num_episodes: int = 10) -> dict:
    """Measure a policy's returns on its env and record them in ``policy.info`` (in place).

    Runs ``num_episodes`` deterministic and ``num_episodes`` stochastic episodes (env seeds
    ``0..num_episodes-1``, noise seed 0) on ``policy.info.env_id`` and sets ``info.returns``
    (mean, std, episodes of each) and ``info.mujoco_version``.

    Returns:
        ``policy.info.returns``.

    Example:
        >>> info = PolicyInfo("toy", "Hopper-v5", 11, 3, [-1.0] * 3, [1.0] * 3, 8, 1)
        >>> returns = measure_policy(BehaviorPolicy.from_info(info), num_episodes=1)
        >>> sorted(returns)
        ['deterministic', 'stochastic']
    """
    import mujoco

    task = _task_of_env(policy.info.env_id)
    det = evaluate_policy(policy, task, num_episodes=num_episodes, deterministic=True, seed=0)
    sto = evaluate_policy(policy, task, num_episodes=num_episodes, deterministic=False, seed=0)
    policy.info.returns = {"deterministic": _summary(det), "stochastic": _summary(sto)}
    policy.info.mujoco_version = mujoco.__version__
    return policy.info.returns


def _task_of_env(env_id: str) -> Task:
    from torchrl_o3f.envs import list_tasks

    for task in list_tasks():
        if task.env_id == env_id and task.quality == "random":
            return task
    raise ValueError(f"no registered locomotion task runs {env_id!r}")


def install_policy(
    checkpoint: str | os.PathLike,
    *,
    name: str | None = None,
    num_episodes: int = 10,
    out_dir: str | os.PathLike | None = None,
    extra: dict | None = None,
) -> Path:
    """Measure a training checkpoint and install it as a behaviour policy.

    Takes a snapshot of :func:`train_behavior` (``<run_dir>/behavior/<name>-step<N>``), e.g.
    when a run had to stop before reaching its target, measures it with
    :func:`measure_policy` and writes it as ``<out_dir>/<name>.{pt,json}``.

    Args:
        checkpoint: the checkpoint path, with or without the ``.pt``/``.json`` suffix.
        name: the installed name (default: the checkpoint's, e.g. ``"halfcheetah-medium"``).
        num_episodes: episodes of each measurement.
        out_dir: where to install (default: the package's policy folder).
        extra: details merged into ``info.extra``.

    Returns:
        The path of the written ``.pt`` file.
    """
    path = Path(checkpoint)
    stem = path.with_suffix("") if path.suffix in (".pt", ".json") else path
    policy = load_policy(stem.name, stem.parent)
    policy.info.name = name or policy.info.name
    policy.info.extra = {**policy.info.extra, **(extra or {}), "installed_from": stem.name}
    measure_policy(policy, num_episodes=num_episodes)
    pt, _ = policy.save(Path(out_dir or POLICY_DIR) / policy.info.name)
    return pt
