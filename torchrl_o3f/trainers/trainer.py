"""The offline-then-online trainer (the paper's Algorithm 1) for any loss of the package.

The two phase loops read top to bottom (sample, update, collect, evaluate, log); what they
lean on lives beside them: the run's folder and start state (:mod:`.run_dir`), checkpoints,
restore and signals (:mod:`.run_state`), diagnostics and logs (:mod:`.diagnostics`), dataset
coercion (:mod:`torchrl_o3f.data.ted`), exploration modules
(:mod:`torchrl_o3f.modules.exploration`).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.collectors import Collector
from tqdm.auto import tqdm

from torchrl_o3f.data import TED_KEYS, as_ted_dataset
from torchrl_o3f.envs import cap_episodes, get_task, make_env_from_id
from torchrl_o3f.modules import make_exploration
from torchrl_o3f.trainers.agents import Agent
from torchrl_o3f.trainers.checkpoint import StopNow, StopSignals, rng_state, set_rng_state
from torchrl_o3f.trainers.config import ConfigError, TrainerConfig, resolve_device
from torchrl_o3f.trainers.deploy import save_policy
from torchrl_o3f.trainers.diagnostics import (
    Annealer,
    episode_q_record,
    run_summary,
    update_metrics,
    write_summary,
)
from torchrl_o3f.trainers.evaluation import evaluate
from torchrl_o3f.trainers.guard import NonFiniteError, NonFiniteGuard
from torchrl_o3f.trainers.record import method_name
from torchrl_o3f.trainers.run_dir import check_output_dir, load_start_state
from torchrl_o3f.trainers.run_setup import RunSetup
from torchrl_o3f.trainers.run_state import RunState, StopRequested

__all__ = [
    "HOOK_STAGES",
    "OfflineOnlineTrainer",
    # where these lived before the trainer was split (their homes: data, envs, modules, config)
    "TED_KEYS",
    "as_ted_dataset",
    "cap_episodes",
    "make_env_from_id",
    "make_exploration",
    "resolve_device",
]

_LOG = logging.getLogger(__name__)  # hydra's job log (<recipe>.log) receives these lines

HOOK_STAGES = ("post_evaluation", "post_episode", "post_offline")
"""Where :meth:`OfflineOnlineTrainer.register_hook` may attach a function, and what it gets:

- ``post_evaluation``: ``fn(trainer, row)`` after every evaluation (``row``: phase, counters,
  score, return, ...). Returning ``True`` during the online phase ends the run there, as
  finished (final checkpoint, ``policy.pt`` and ``summary.json`` with the frames done).
- ``post_episode``: ``fn(trainer, row)`` after every online episode (its return, and the
  critic's mean Q against the Monte-Carlo returns).
- ``post_offline``: ``fn(trainer, row)`` once the offline phase is evaluated and checkpointed
  (``row``: its last evaluation), before an objective switch.
"""


class OfflineOnlineTrainer(RunSetup, RunState):
    """Offline pre-training then online fine-tuning (Algorithm 1), for any registered algorithm.

    Offline: ``budget.offline_steps`` gradient steps of ``algo`` on a replay buffer holding the
    offline dataset. Online: a torchrl :class:`~torchrl.collectors.Collector` runs
    ``TensorDictSequential(policy, exploration)`` on the task's env, one frame at a time;
    every transition is appended to the same buffer and ``algo.utd_ratio`` updates follow each
    frame. By default the same loss goes on training (O3F's point: the objective does not
    change). With ``online_algo`` the objective switches at the phase boundary: the online
    agent starts from the offline policy and critics (:func:`~torchrl_o3f.trainers.agents.
    switch_agent`; what was copied is written to ``switch.json``) and the exploration module is
    rebuilt on the online critic. Evaluation (deterministic policy, whole episodes) runs every
    ``eval_every`` steps/frames and at each phase boundary.

    Every online episode also logs what the paper's Figure 2 plots: the critic's mean Q on the
    episode's transitions (``online/q_mean``, members averaged), the discounted Monte-Carlo
    return from each of those transitions to the episode's end (``online/mc_return``, rewards
    as the critic sees them: the loss's ``reward_shift``/``reward_scale`` applied) and their
    ratio (``online/q_overestimation``).

    Outputs in ``output_dir``: ``config.yaml`` (the resolved config: every number the run
    uses, library versions), ``logs/`` (torchrl logger, CSV by default), ``metrics.jsonl``
    (every logged row, one JSON object a line), ``evaluations.csv``, ``learning_curve.png``,
    ``summary.json`` and ``checkpoints/`` (``latest.pt``, ``offline.pt`` at the phase boundary,
    ``final.pt``, with ``latest.prev.pt`` the previous ``latest.pt``), all written
    atomically; checkpoints are verified on load and never hold a non-finite state.

    Resuming: ``resume=<run dir or checkpoint>`` continues where the run stopped. Offline
    checkpoints are exact at any step; online checkpoints are taken at episode ends (the env
    is reseeded from the run seed and the episode index at every episode end), so a resumed
    run reproduces the uninterrupted one. ``offline_checkpoint=<path>`` starts a fresh online
    phase from a phase-boundary checkpoint, e.g. to compare exploration modes fairly.

    Online-only runs (``offline_data=False``, e.g. SAC from scratch): no dataset, an empty
    buffer, ``budget.warmup_frames`` frames of uniform random actions before the first update.

    Hooks, as torchrl's trainer has them: :meth:`register_hook` attaches a function after each
    evaluation, online episode or the offline phase (:data:`HOOK_STAGES`); a
    ``post_evaluation`` hook returning ``True`` online ends the run as finished:
    :func:`torchrl_o3f.trainers.train_behavior` stops at its target return this way.
    SIGINT/SIGTERM: the offline phase checkpoints after the current update; the online phase
    stops after the current frame's updates, discards the partial episode and writes the state
    of the last episode end (a resumed run redoes those frames exactly); a second signal stops
    at once. A NaN or infinity in a loss, gradient or parameter stops the run with
    :class:`~torchrl_o3f.trainers.guard.NonFiniteError` (see docs/reliability.md).

    Example:
        >>> from torchrl_o3f.trainers import OfflineOnlineTrainer, TrainerConfig, BUDGETS
        >>> import tempfile
        >>> cfg = TrainerConfig(task="hopper-medium", algo="iql", budget=BUDGETS["smoke"],
        ...                     output_dir=tempfile.mkdtemp(), progress=False)
        >>> cfg.algo.num_cells = 32
        >>> summary = OfflineOnlineTrainer(cfg).train()  # doctest: +SKIP
    """

    def __init__(
        self,
        cfg: TrainerConfig,
        *,
        dataset=None,
        env=None,
        on_evaluation: Callable[..., bool | None] | None = None,
    ):
        self.cfg = cfg.validate()
        if dataset is not None and not cfg.offline_data:
            raise ConfigError(
                "a dataset was given but offline_data=false (an online-only run); drop the "
                "dataset or set offline_data=true"
            )
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.task = get_task(cfg.task)
        self.device = resolve_device(cfg.device)
        self.out = Path(cfg.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        check_output_dir(cfg)
        # where the run starts: checked now, before any work
        self._resume_state, self.resumed_from = load_start_state(cfg)
        if dataset is not None and cfg.dataset is not None:
            raise ConfigError(
                f"a dataset object was given and dataset={cfg.dataset}: give the dataset once "
                "(the object, or the Minari id in the config)"
            )
        self._dataset, self._env_fn = dataset, env
        self._hooks: dict[str, list[Callable]] = {stage: [] for stage in HOOK_STAGES}
        if on_evaluation is not None:
            warnings.warn(
                "OfflineOnlineTrainer(on_evaluation=fn) is deprecated; use "
                "trainer.register_hook('post_evaluation', fn)",
                DeprecationWarning,
                stacklevel=2,
            )
            self.register_hook("post_evaluation", on_evaluation)
        # run state (see RunState): signals, the last online episode end, the last write
        self._signals = StopSignals(message="stopping after the current update")
        self._episode_end: dict[str, Any] | None = None
        self._saved_state: dict[str, Any] | None = None
        self._writing = False
        self._end_requested = False
        # built by _build(), when train() starts
        self.env_kwargs: dict[str, Any] = {"max_episode_steps": cfg.max_episode_steps()}
        self.action_spec = self.observation_dim = None
        self.dataset_id, self.num_offline, self.data = None, 0, None
        self.agent: Agent | None = None
        self._online_agent: Agent | None = None
        self.switched, self.switch_info = False, None
        self.guard: NonFiniteGuard | None = None
        self.buffer = self.online_data = None
        self.exploration = self.behavior = None
        self.counters = {"phase": "offline", "step": 0, "frames": 0, "episodes": 0}
        self.evaluations: list[dict[str, Any]] = []
        self.anneal_start: dict[str, float] = {}
        self.offline_eval: dict[str, Any] | None = None
        self.eval_env = self.run_log = self.config_record = None
        # the online loop's bookkeeping: episode start, its return, selector gains, rate mark
        self._annealer: Annealer | None = None
        self._episode_start, self._episode_return, self._gains = 0, 0.0, []
        self._rate_mark = (0.0, 0)

    @property
    def _stop(self) -> bool:
        return self._signals.requested

    def register_hook(self, stage: str, fn: Callable[..., bool | None]) -> None:
        """Call ``fn(trainer, row)`` at ``stage`` (one of :data:`HOOK_STAGES`), in order added.

        Raises:
            ConfigError: for an unknown stage (naming the known ones).

        Example:
            >>> from torchrl_o3f.trainers import TrainerConfig
            >>> trainer = OfflineOnlineTrainer(TrainerConfig(task="hopper-medium", algo="iql"))
            >>> scores = []
            >>> trainer.register_hook("post_evaluation", lambda t, row: scores.append(row["score"]))
        """
        if stage not in self._hooks:
            raise ConfigError(
                f"unknown hook stage {stage!r}; choose one of {', '.join(HOOK_STAGES)}"
            )
        self._hooks[stage].append(fn)

    def _call_hooks(self, stage: str, row: dict[str, Any]) -> bool:
        """Run the hooks of ``stage``; whether one of them asked the run to end."""
        asked = [bool(fn(self, dict(row))) for fn in self._hooks[stage]]
        return any(asked)

    def _log(self, row: dict[str, float]) -> None:
        self.run_log.log(row, step=self.counters["step"] + self.counters["frames"])

    def _rate(self, count: int) -> tuple[float, float]:
        """``(seconds, units)`` since the last mark, and a new mark at ``count`` units."""
        now = time.perf_counter()
        t0, n0 = self._rate_mark
        self._rate_mark = (now, count)
        return now - t0, count - n0

    def _bar(self, desc: str, total: int, initial: int):
        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            disable=not self.cfg.progress,
            dynamic_ncols=True,
        )

    # ------------------------------------------------------------------ phases
    def _evaluate(self, phase: str, step: int) -> bool:
        """Evaluate the deterministic policy; whether a hook asked the run to end."""
        self.guard.flush()
        # the same evaluation episodes every time: curves compare policies, not start states
        self.eval_env.set_seed(self.cfg.seed + 10_000)
        res = evaluate(
            self.agent.policy,
            self.eval_env,
            self.task,
            num_episodes=self.cfg.budget.eval_episodes,
            dataset_id=self.dataset_id if self.num_offline else None,
            dataset_root=self.cfg.dataset_root,
        )
        row = {"phase": phase, "step": step, **self.counters, **res}
        row["phase"] = phase  # the key order of evaluations.csv; "step" is the counters'
        _LOG.info(
            "evaluation (%s, step %d, frame %d): normalised score %.1f +- %.1f, return %.1f "
            "over %d episodes",
            phase,
            self.counters["step"],
            self.counters["frames"],
            res["score"],
            res["score_std"],
            res["return"],
            res["eval_episodes"],
        )
        self.evaluations.append(row)
        self._log({f"eval/{k}": v for k, v in res.items()})
        if self._call_hooks("post_evaluation", row):
            self._end_requested = phase == "online"
        return self._end_requested

    def _offline_phase(self) -> None:
        """Algorithm 1, offline: sample a batch, update, log, evaluate, checkpoint."""
        b = self.cfg.budget
        start = self.counters["step"]
        bar = self._bar("offline", b.offline_steps, start)
        self._rate_mark = (time.perf_counter(), start)
        batch_size = self.agent.cfg.batch_size
        for step in range(start, b.offline_steps):
            self.agent.set_offline_progress(step, b.offline_steps)
            out = self.agent.update(self.buffer.sample(batch_size))
            self.guard.check(out, phase="offline", step=step + 1)
            self.counters["step"] = step + 1
            bar.update(1)
            if (step + 1) % b.log_every == 0:
                row = update_metrics(out, *self._rate(step + 1))
                self._log(row)
                bar.set_postfix(q=f"{row.get('train/qvalue_mean', float('nan')):.1f}")
            if (step + 1) % b.eval_every == 0 and step + 1 < b.offline_steps:
                self._evaluate("offline", step + 1)
            if (step + 1) % b.checkpoint_every == 0 or self._stop:
                self.save()
            if self._stop:
                bar.close()
                raise StopRequested(dict(self.counters))
        bar.close()
        self.counters["phase"] = "online"
        self._evaluate("offline", self.counters["step"])
        self.offline_eval = self.evaluations[-1]
        self.save("offline")
        self._call_hooks("post_offline", self.offline_eval)
        if self.cfg.switches():
            self._switch(copy=True)

    def _online_phase(self) -> None:
        """Algorithm 1, online: act (policy + exploration), store, update ``utd`` times."""
        b = self.cfg.budget
        if self.counters["frames"] >= b.online_frames:
            return
        collector = self._start_online()
        plan = self.agent.cfg
        utd, actor_utd, batch_size = plan.utd_ratio, plan.actor_utd_ratio, plan.batch_size
        bar = self._bar("online", b.online_frames, self.counters["frames"])
        try:
            for batch in collector:
                frames = self._store(batch.reshape(-1))
                if self._annealer is not None:
                    self._annealer.apply(self.agent.loss, frames)
                warming_up = frames <= b.warmup_frames
                if frames == b.warmup_frames:  # update rates count from the first update
                    self._rate_mark = (time.perf_counter(), frames)
                for u in range(0 if warming_up else utd):
                    out = self.agent.update(
                        self.buffer.sample(batch_size), update_actor=u >= utd - actor_utd
                    )
                    self.guard.check(out, phase="online", step=(frames - 1) * utd + u + 1)
                if self.exploration is not None:
                    self.exploration.step(1)
                bar.update(batch.numel())
                if frames % b.log_every == 0 and not warming_up:
                    self._log_online(out, frames, utd)
                if frames % b.eval_every == 0 and frames < b.online_frames:
                    if self._evaluate("online", frames):
                        _LOG.info("the run ends at frame %d, as a hook asked", frames)
                        break
                if bool(batch["next", "done"].any()):
                    bar.set_postfix(ret=f"{self._episode_return:.0f}")
                    self._end_episode(collector, frames)
                if self._stop:
                    self._stop_online()
        finally:
            bar.close()
            collector.shutdown()

    def _start_online(self) -> Collector:
        """The collector of the online phase, and the loop's bookkeeping at its start."""
        b = self.cfg.budget
        rng = rng_state()
        collector = Collector(
            self._make_env(device=self.device),
            self.behavior,
            frames_per_batch=1,
            total_frames=b.online_frames - self.counters["frames"],
            # the warm-up's uniform random actions (env.rand_action), the policy not called
            init_random_frames=max(0, b.warmup_frames - self.counters["frames"]),
            device=self.device,
            # the package's policies are not recurrent: nothing to add to the env
            auto_register_policy_transforms=False,
            # acting (policy + selector) compiled / graph-replayed like the update step
            compile_policy={"mode": self.cfg.compile.mode} if self.cfg.compile.compile else None,
            cudagraph_policy=self.cfg.compile.cudagraphs or None,
        )
        # every episode starts from a seed derived from the run seed and the episode index,
        # so a run resumed at an episode end sees the very same episodes.
        # building the collector must not move the global generators: a run resumed here
        # then draws the same candidates and batches as the uninterrupted one.
        collector.env.set_seed(self._episode_seed())
        collector.reset()
        set_rng_state(rng)
        self.agent.set_offline_progress(None, b.offline_steps)
        target = self.cfg.anneal_target()
        if target is not None:
            self._annealer = Annealer(*target, self.cfg.anneal, start=self.anneal_start)
        self._episode_start, self._episode_return, self._gains = self.counters["frames"], 0.0, []
        self._mark_episode_end()
        self._rate_mark = (time.perf_counter(), self.counters["frames"])
        return collector

    def _episode_seed(self) -> int:
        return self.cfg.seed + 1 + 7919 * self.counters["episodes"]

    def _store(self, batch: TensorDictBase) -> int:
        """Add one collected frame to the buffer and the run's online data; frames done."""
        trans = batch.select(*TED_KEYS)
        self.buffer.extend(trans)
        f = self.counters["frames"]
        self.online_data[f : f + trans.numel()] = trans.cpu()
        if "o3f_score_gain" in batch.keys():
            self._gains.append(batch["o3f_score_gain"].mean())
        self._episode_return += float(batch["next", "reward"].sum())
        self.counters["frames"] += batch.numel()
        return self.counters["frames"]

    def _log_online(self, out: TensorDictBase, frames: int, utd: int) -> None:
        elapsed, count = self._rate(frames)
        row = update_metrics(out, elapsed, count * utd)
        row["online/frames_per_s"] = count / max(elapsed, 1e-9)
        if self._gains:
            row["online/score_gain"] = float(torch.stack(self._gains).mean())
            self._gains = []
        self._log(row)

    def _end_episode(self, collector: Collector, frames: int) -> None:
        """Log the episode, reseed the env, keep the state, checkpoint every few episodes."""
        self.counters["episodes"] += 1
        episode = self.online_data[self._episode_start : frames].to(self.device)
        row = {"online/episode_return": self._episode_return}
        row.update(episode_q_record(self.agent, episode))
        self._log(row)
        self._call_hooks("post_episode", row)
        self._episode_start, self._episode_return = frames, 0.0
        collector.env.set_seed(self._episode_seed())
        collector.reset()
        per_checkpoint = max(1, self.cfg.budget.checkpoint_every // self.cfg.max_episode_steps())
        state = self._mark_episode_end()
        if self.counters["episodes"] % per_checkpoint == 0:
            self.save(state=state)

    def train(self) -> dict[str, Any]:
        """Run (or resume) both phases; returns the summary also written to summary.json."""
        self._build()
        state = self._resume_state
        if state is not None:
            self._restore(state, fresh_online=bool(self.cfg.offline_checkpoint))
            c = state["counters"]
            _LOG.info(
                "%s from %s: phase %s, offline step %d, online frame %d",
                "resumed" if self.cfg.resume else "online phase started",
                self.resumed_from,
                c["phase"],
                c["step"],
                c["frames"],
            )
        self._signals.install()
        t_start = time.perf_counter()
        try:
            if self.counters["phase"] == "offline":
                first = self.counters["step"] == 0 and not self.evaluations
                if first and self.cfg.budget.offline_steps:  # else the phase's end evaluates
                    self._evaluate("offline", 0)
                self._offline_phase()
            self._online_phase()
        except StopRequested as stop:
            _LOG.info(
                "stopped by a signal at offline step %d / online frame %d; resume with resume=%s",
                stop.counters["step"],
                stop.counters["frames"],
                self.out,
            )
            self._close()
            return {"stopped": True, **stop.counters}
        except StopNow:
            counters = self._stopped_at_once()
            self._close()
            return {"stopped": True, "at_once": True, **counters}
        except NonFiniteError:
            self._close()
            raise
        finally:
            self._signals.restore()
        last = self.evaluations[-1] if self.evaluations else None
        done = (self.counters["step"], self.counters["frames"])
        if last is None or (last["step"], last["frames"]) != done:
            self._evaluate("online", self.counters["frames"])
        # else nothing trained since the last evaluation (e.g. no online phase)
        self.save("final")
        save_policy(self, self.out / "policy.pt")
        summary = run_summary(self, time.perf_counter() - t_start)
        write_summary(
            summary,
            self.evaluations,
            self.out,
            title=f"{method_name(self.cfg)} on {self.task.name} (seed {self.cfg.seed})",
            score=self.task.score,
        )
        _LOG.info(
            "finished: normalised score %.1f after offline -> %.1f after online, %.1f min",
            summary["score_after_offline"],
            summary["score_after_online"],
            summary["wall_time_s"] / 60,
        )
        self._close()
        return summary

    def _close(self) -> None:
        if self.run_log is not None:
            self.run_log.close()
        if self.eval_env is not None:
            self.eval_env.close()
