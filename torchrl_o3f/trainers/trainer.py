"""The offline-then-online trainer (the paper's Algorithm 1) for any loss of the package."""

from __future__ import annotations

import json
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase, TensorDictSequential
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, OfflineToOnlineReplayBuffer, ReplayBuffer
from torchrl.data.replay_buffers import RandomSampler
from tqdm.auto import tqdm

from torchrl_o3f.envs import get_task, make_env
from torchrl_o3f.trainers.agents import Agent, build_agent
from torchrl_o3f.trainers.checkpoint import (
    CheckpointError,
    copy_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    write_atomic,
)
from torchrl_o3f.trainers.config import ConfigError, TrainerConfig
from torchrl_o3f.trainers.evaluation import evaluate

__all__ = ["OfflineOnlineTrainer", "make_exploration", "resolve_device", "TED_KEYS"]

TED_KEYS = (
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "terminated"),
    ("next", "truncated"),
)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available; use device=auto or cpu")
    return torch.device(device)


def make_exploration(
    mode: str,
    qvalue_network,
    action_spec,
    *,
    sigma: float,
    num_candidates: int = 100,
    omega: float = 0.0,
    include_policy_action: bool = False,
    device=None,
) -> TensorDictModuleBase | None:
    """The post-policy exploration module of an exploration mode.

    ``"o3f"``: :class:`~torchrl_o3f.modules.O3FActionSelector` (with diagnostics) on the
    trained critic: ``qvalue_network`` is a critic the selector accepts (a ``QEnsemble``, a
    ``StackedCritic``, a callable) or a torchrl loss, read through
    :meth:`~torchrl_o3f.modules.O3FActionSelector.from_loss`; ``"gaussian"``: torchrl's
    ``AdditiveGaussianModule`` with the same constant sigma, projected onto the action spec
    (the paper's ablation); ``"none"``: ``None`` (the policy's own sampling). The module is
    moved to ``device`` when given.

    Raises:
        ConfigError: for an unknown mode.
    """
    if mode == "o3f":
        from torchrl.objectives import LossModule

        from torchrl_o3f.modules import O3FActionSelector

        kwargs = {
            "num_candidates": num_candidates,
            "sigma": sigma,
            "omega": omega,
            "include_policy_action": include_policy_action,
            "diagnostics": True,
        }
        if isinstance(qvalue_network, LossModule):
            selector = O3FActionSelector.from_loss(qvalue_network, action_spec, **kwargs)
        else:
            selector = O3FActionSelector(qvalue_network, action_spec, **kwargs)
        return selector if device is None else selector.to(device)
    if mode == "gaussian":
        from torchrl.modules import AdditiveGaussianModule

        return AdditiveGaussianModule(
            action_spec,
            sigma_init=sigma,
            sigma_end=sigma,
            annealing_num_steps=1,
            safe=True,
            device=device,
        )
    if mode == "none":
        return None
    raise ConfigError(f"unknown exploration mode {mode!r}; choose 'o3f', 'gaussian' or 'none'")


class _StopRequested(Exception):
    pass


class OfflineOnlineTrainer:
    """Offline pre-training then online fine-tuning with the same loss (Algorithm 1).

    Offline: ``budget.offline_steps`` gradient steps on a replay buffer holding the offline
    dataset. Online: a torchrl :class:`~torchrl.collectors.Collector` runs
    ``TensorDictSequential(policy, exploration)`` on the task's env, one frame at a time;
    every transition is appended to the same buffer and ``utd_ratio`` updates of the same loss
    follow each frame. Evaluation (deterministic policy, whole episodes) runs every
    ``eval_every`` steps/frames and at each phase boundary.

    Outputs in ``output_dir``: ``logs/`` (torchrl logger, CSV by default), ``metrics.jsonl``
    (every logged row, one JSON object a line), ``evaluations.csv``, ``learning_curve.png``,
    ``summary.json`` and ``checkpoints/`` (``latest.pt``, ``offline.pt`` at the phase boundary,
    ``final.pt``), all written atomically.

    Resuming: ``resume=<run dir or checkpoint>`` continues where the run stopped. Offline
    checkpoints are exact at any step; online checkpoints are taken at episode ends (the env
    is reseeded from the run seed and the episode index at every episode end), so a resumed
    run reproduces the uninterrupted one. ``offline_checkpoint=<path>`` starts a fresh online
    phase from a phase-boundary checkpoint, e.g. to compare exploration modes fairly.
    SIGINT/SIGTERM: the offline phase checkpoints at once; the online phase finishes the
    current episode, checkpoints and exits.

    Example:
        >>> from torchrl_o3f.trainers import OfflineOnlineTrainer, TrainerConfig, BUDGETS
        >>> import tempfile
        >>> cfg = TrainerConfig(task="hopper-medium", budget=BUDGETS["smoke"],
        ...                     output_dir=tempfile.mkdtemp(), progress=False)
        >>> cfg.algo.num_cells = 32
        >>> summary = OfflineOnlineTrainer(cfg).train()  # doctest: +SKIP
    """

    def __init__(self, cfg: TrainerConfig):
        self.cfg = cfg.validate()
        self.task = get_task(cfg.task)
        self.device = resolve_device(cfg.device)
        self.out = Path(cfg.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self._stop = False
        self._signal_handlers: dict[int, Any] = {}
        self._check_resume_compatible()

    # ------------------------------------------------------------------ set-up
    def _check_resume_compatible(self) -> None:
        src = self.cfg.resume or self.cfg.offline_checkpoint
        if not src:
            self._resume_state = None
            return
        state = load_checkpoint(src)
        meta = state.get("meta", {})
        for key in ("task", "algo"):
            mine = self.cfg.task if key == "task" else self.cfg.algo.name
            if meta.get(key) != mine:
                raise CheckpointError(
                    f"checkpoint {src} is from {key}={meta.get(key)!r}, this run has "
                    f"{key}={mine!r}; resume with the same {key} or start a new run"
                )
        if self.cfg.offline_checkpoint and state["counters"]["phase"] != "online":
            raise CheckpointError(
                f"{src} is not a phase-boundary checkpoint (phase="
                f"{state['counters']['phase']!r}); use checkpoints/offline.pt of a run"
            )
        self._resume_state = state

    def _build(self) -> None:
        from torchrl_o3f.data import ensure_dataset, load_offline_dataset

        cfg, task = self.cfg, self.task
        dataset_id = ensure_dataset(
            task,
            size=cfg.budget.dataset_size,
            seed=cfg.dataset_seed,
            root=cfg.dataset_root,
            progress=cfg.progress,
        )
        data = load_offline_dataset(dataset_id, root=cfg.dataset_root)
        data = data.select(*TED_KEYS).to(self.device)
        env_kwargs = {}
        if cfg.budget.max_episode_steps:
            env_kwargs["max_episode_steps"] = cfg.budget.max_episode_steps
        self.env_kwargs = env_kwargs
        probe = make_env(task, **env_kwargs)
        self.action_spec = probe.action_spec.to(self.device)
        obs_dim = probe.observation_spec["observation"].shape[-1]
        probe.close()
        if data["observation"].shape[-1] != obs_dim or (
            data["action"].shape[-1] != self.action_spec.shape[-1]
        ):
            raise ValueError(
                f"dataset {dataset_id} has observations of size {data['observation'].shape[-1]} "
                f"and actions of size {data['action'].shape[-1]}, but {task.env_id} has "
                f"{obs_dim} and {self.action_spec.shape[-1]}: the dataset is not for this task"
            )
        self.observation_dim = obs_dim
        self.dataset_id = dataset_id
        self.num_offline = data.shape[0]
        # seeded here, after the data: building a dataset draws from the global generators
        # (its networks' initialisation), so a seed set before it would give one run with a
        # fresh dataset folder and another with the dataset already on disk
        seed_everything(cfg.seed)
        self.agent: Agent = build_agent(
            cfg.algo,
            task,
            self.action_spec,
            observation_dim=obs_dim,
            data=data,
            device=self.device,
        )
        batch_size = cfg.algo.resolved()["batch_size"]
        online = cfg.budget.online_frames
        if cfg.offline_fraction is None:
            self.buffer = ReplayBuffer(
                storage=LazyTensorStorage(self.num_offline + max(online, 1), device=self.device),
                sampler=RandomSampler(),
                batch_size=batch_size,
            )
            self.buffer.extend(data)
        else:
            offline_rb = ReplayBuffer(
                storage=LazyTensorStorage(self.num_offline, device=self.device),
                sampler=RandomSampler(),
            )
            offline_rb.extend(data)
            self.buffer = OfflineToOnlineReplayBuffer(
                offline_rb,
                online_storage=LazyTensorStorage(max(online, 1), device=self.device),
                offline_fraction=cfg.offline_fraction,
                batch_size=batch_size,
            )
        # every online transition, preallocated on the CPU (checkpoints save the filled part)
        self.online_data = torch.zeros_like(data[:1].cpu()).expand(max(online, 1)).clone()
        self.exploration = make_exploration(
            cfg.exploration.mode,
            self.agent.qvalue_network,
            self.action_spec,
            sigma=cfg.sigma(),
            num_candidates=cfg.exploration.num_candidates,
            omega=cfg.exploration.omega,
            include_policy_action=cfg.exploration.include_policy_action,
            device=self.device,
        )
        policy = self.agent.policy
        self.behaviour = (
            policy if self.exploration is None else TensorDictSequential(policy, self.exploration)
        )
        self.counters = {"phase": "offline", "step": 0, "frames": 0, "episodes": 0}
        self.evaluations: list[dict[str, Any]] = []
        self.anneal_start: dict[str, float] = {}
        self.eval_env = make_env(task, seed=cfg.seed + 10_000, device=self.device, **env_kwargs)
        self._make_logger()

    def _make_logger(self) -> None:
        from torchrl.record.loggers import get_logger

        self.out.mkdir(parents=True, exist_ok=True)
        name = self.cfg.logger.exp_name or f"{self.cfg.algo.name}-{self.task.name}"
        backend = self.cfg.logger.backend
        self.logger = None
        if backend != "none":
            self.logger = get_logger(
                backend, logger_name=str(self.out / "logs"), experiment_name=name
            )
        self._metrics_file = open(self.out / "metrics.jsonl", "a")  # noqa: SIM115

    def _log(self, row: dict[str, float], step: int) -> None:
        if self.logger is not None:
            for k, v in row.items():
                self.logger.log_scalar(k, v, step=step)
        record = {"step": step, **row}
        self._metrics_file.write(json.dumps(record) + "\n")
        self._metrics_file.flush()

    # ------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        online = self.online_data[: self.counters["frames"]].clone()
        return {
            "meta": {
                "task": self.task.name,
                "algo": self.cfg.algo.name,
                "dataset_id": self.dataset_id,
                "config": asdict(self.cfg),
            },
            "counters": dict(self.counters),
            "agent": self.agent.state_dict(),
            "exploration": self.exploration.state_dict() if self.exploration else None,
            "online_data": online,
            "rng": rng_state(),
            "evaluations": list(self.evaluations),
            "anneal_start": dict(self.anneal_start),
        }

    def save(self, name: str = "latest") -> Path:
        """Write ``checkpoints/<name>.pt`` (and ``latest.pt``) atomically."""
        path = save_checkpoint(self._state(), self.ckpt_dir / f"{name}.pt")
        if name != "latest":
            copy_checkpoint(path, self.ckpt_dir / "latest.pt")
        return path

    def _restore(self, state: dict[str, Any], *, fresh_online: bool) -> None:
        self.agent.load_state_dict(state["agent"])
        if self.exploration is not None and state["exploration"] is not None and not fresh_online:
            self.exploration.load_state_dict(state["exploration"])
        self.counters = dict(state["counters"])
        self.evaluations = list(state["evaluations"])
        self.anneal_start = dict(state.get("anneal_start", {}))
        online = state["online_data"]
        if fresh_online:
            online = online[:0]
            self.counters.update(frames=0, episodes=0)
            self.evaluations = [e for e in self.evaluations if e["phase"] == "offline"]
        if len(online):
            self.buffer.extend(online.to(self.device))
            self.online_data[: len(online)] = online
        set_rng_state(state["rng"])
        if fresh_online:
            seed_everything(self.cfg.seed + 1)

    # --------------------------------------------------------------- signals
    def _install_signals(self) -> None:
        def handler(signum, frame):
            self._stop = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._signal_handlers[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass

    def _restore_signals(self) -> None:
        for sig, h in self._signal_handlers.items():
            signal.signal(sig, h)
        self._signal_handlers.clear()

    # ------------------------------------------------------------------ phases
    def _evaluate(self, phase: str, step: int) -> dict[str, Any]:
        # the same evaluation episodes every time: curves compare policies, not start states
        self.eval_env.set_seed(self.cfg.seed + 10_000)
        res = evaluate(
            self.agent.policy,
            self.eval_env,
            self.task,
            num_episodes=self.cfg.budget.eval_episodes,
            dataset_id=self.dataset_id,
            dataset_root=self.cfg.dataset_root,
        )
        row = {"phase": phase, "step": step, **self.counters, **res}
        row["phase"] = phase
        self.evaluations.append(row)
        self._log({f"eval/{k}": v for k, v in res.items()}, step=self._global_step())
        return row

    def _global_step(self) -> int:
        return self.counters["step"] + self.counters["frames"]

    def _update_metrics(self, out: TensorDictBase, elapsed: float, count: int) -> dict:
        row = {}
        for k, v in out.items():
            if isinstance(k, str) and v.numel() == 1:
                row[f"train/{k}"] = float(v)
        row["train/updates_per_s"] = count / max(elapsed, 1e-9)
        return row

    def _offline_phase(self) -> None:
        b = self.cfg.budget
        start = self.counters["step"]
        bar = tqdm(
            total=b.offline_steps,
            initial=start,
            desc="offline",
            disable=not self.cfg.progress,
            dynamic_ncols=True,
        )
        t0, n0 = time.perf_counter(), start
        for step in range(start, b.offline_steps):
            out = self.agent.update(self.buffer.sample())
            self.counters["step"] = step + 1
            bar.update(1)
            if (step + 1) % b.log_every == 0:
                now = time.perf_counter()
                row = self._update_metrics(out, now - t0, step + 1 - n0)
                t0, n0 = now, step + 1
                self._log(row, step=self._global_step())
                bar.set_postfix(q=f"{row.get('train/qvalue_mean', float('nan')):.1f}")
            if (step + 1) % b.eval_every == 0 and step + 1 < b.offline_steps:
                self._evaluate("offline", step + 1)
            if (step + 1) % b.checkpoint_every == 0 or self._stop:
                self.save()
            if self._stop:
                bar.close()
                raise _StopRequested
        bar.close()
        self.counters["phase"] = "online"
        ev = self._evaluate("offline", self.counters["step"])
        self.offline_eval = ev
        self.save("offline")

    def _episode_seed(self) -> int:
        return self.cfg.seed + 1 + 7919 * self.counters["episodes"]

    def _apply_anneal(self) -> None:
        frames = self.counters["frames"]
        loss = self.agent.loss
        for a in self.cfg.anneal:
            if not hasattr(loss, a.param):
                raise ConfigError(f"anneal: the loss has no hyper-parameter {a.param!r}")
            start = self.anneal_start.setdefault(a.param, float(getattr(loss, a.param)))
            if a.mode == "abrupt":
                value = a.end
            else:
                value = start + (a.end - start) * min(1.0, frames / a.frames)
            setattr(loss, a.param, value)

    def _online_phase(self) -> None:
        b = self.cfg.budget
        remaining = b.online_frames - self.counters["frames"]
        if remaining <= 0:
            return
        rng = rng_state()
        env = make_env(self.task, device=self.device, **self.env_kwargs)
        collector = Collector(
            env,
            self.behaviour,
            frames_per_batch=1,
            total_frames=remaining,
            device=self.device,
            # the package's policies are not recurrent: nothing to add to the env
            auto_register_policy_transforms=False,
        )
        # every episode starts from a seed derived from the run seed and the episode index,
        # so a run resumed at an episode end sees the very same episodes.
        # building the collector must not move the global generators: a run resumed here
        # then draws the same candidates and batches as the uninterrupted one.
        collector.env.set_seed(self._episode_seed())
        collector.reset()
        set_rng_state(rng)
        utd = self.cfg.utd_ratio()
        actor_utd = min(b.actor_utd_ratio, utd)
        bar = tqdm(
            total=b.online_frames,
            initial=self.counters["frames"],
            desc="online",
            disable=not self.cfg.progress,
            dynamic_ncols=True,
        )
        t0, f0 = time.perf_counter(), self.counters["frames"]
        ep_return, gains = 0.0, []
        try:
            for batch in collector:
                batch = batch.reshape(-1)
                trans = batch.select(*TED_KEYS)
                self.buffer.extend(trans)
                f = self.counters["frames"]
                self.online_data[f : f + trans.numel()] = trans.cpu()
                if "o3f_score_gain" in batch.keys():
                    gains.append(batch["o3f_score_gain"].mean())
                ep_return += float(batch["next", "reward"].sum())
                self.counters["frames"] += batch.numel()
                frames = self.counters["frames"]
                if self.cfg.anneal:
                    self._apply_anneal()
                for u in range(utd):
                    out = self.agent.update(self.buffer.sample(), update_actor=u >= utd - actor_utd)
                if self.exploration is not None and hasattr(self.exploration, "step"):
                    self.exploration.step(1)
                bar.update(batch.numel())
                if frames % b.log_every == 0:
                    now = time.perf_counter()
                    row = self._update_metrics(out, now - t0, (frames - f0) * utd)
                    row["online/frames_per_s"] = (frames - f0) / max(now - t0, 1e-9)
                    if gains:
                        row["online/score_gain"] = float(torch.stack(gains).mean())
                        gains = []
                    t0, f0 = now, frames
                    self._log(row, step=self._global_step())
                if frames % b.eval_every == 0 and frames < b.online_frames:
                    self._evaluate("online", frames)
                if bool(batch["next", "done"].any()):
                    self.counters["episodes"] += 1
                    self._log({"online/episode_return": ep_return}, step=self._global_step())
                    bar.set_postfix(ret=f"{ep_return:.0f}")
                    ep_return = 0.0
                    collector.env.set_seed(self._episode_seed())
                    collector.reset()
                    ep_len = b.max_episode_steps or self.task.max_episode_steps
                    due = self.counters["episodes"] % max(1, b.checkpoint_every // ep_len)
                    if self._stop or due == 0:
                        self.save()
                    if self._stop:
                        raise _StopRequested
        finally:
            bar.close()
            collector.shutdown()

    def train(self) -> dict[str, Any]:
        """Run (or resume) both phases; returns the summary also written to summary.json."""
        self._build()
        state = self._resume_state
        if state is not None:
            self._restore(state, fresh_online=bool(self.cfg.offline_checkpoint))
        self._install_signals()
        t_start = time.perf_counter()
        try:
            if self.counters["phase"] == "offline":
                if self.counters["step"] == 0 and not self.evaluations:
                    self._evaluate("offline", 0)
                self._offline_phase()
            self._online_phase()
        except _StopRequested:
            self._close()
            return {"stopped": True, **self.counters}
        finally:
            self._restore_signals()
        last = self.evaluations[-1] if self.evaluations else None
        if (
            last is not None
            and last["step"] == self.counters["step"]
            and (last["frames"] == self.counters["frames"])
        ):
            final = last  # nothing trained since the last evaluation (e.g. no online phase)
        else:
            final = self._evaluate("online", self.counters["frames"])
        self.save("final")
        summary = self._summary(final, time.perf_counter() - t_start)
        self._close()
        return summary

    def _summary(self, final: dict, wall: float) -> dict[str, Any]:
        from torchrl_o3f.trainers.plotting import plot_learning_curve, write_evaluations

        offline = next(
            (e for e in reversed(self.evaluations) if e["phase"] == "offline"), self.evaluations[0]
        )
        summary = {
            "task": self.task.name,
            "algo": self.cfg.algo.name,
            "exploration": self.cfg.exploration.mode,
            "seed": self.cfg.seed,
            "offline_steps": self.counters["step"],
            "online_frames": self.counters["frames"],
            "score_after_offline": offline["score"],
            "score_after_online": final["score"],
            "return_after_offline": offline["return"],
            "return_after_online": final["return"],
            "wall_time_s": wall,
            "device": str(self.device),
        }
        write_evaluations(self.evaluations, self.out / "evaluations.csv")
        plot_learning_curve(
            self.evaluations,
            self.out / "learning_curve.png",
            title=f"O3F-{self.cfg.algo.name.upper()} on {self.task.name} "
            f"({self.cfg.exploration.mode})",
        )
        text = json.dumps(summary, indent=2).encode()
        write_atomic(self.out / "summary.json", lambda f: f.write(text))
        return summary

    def _close(self) -> None:
        if not self._metrics_file.closed:
            self._metrics_file.close()
        self.eval_env.close()
