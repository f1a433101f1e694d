"""A run's state and its exact resume: checkpoints, restore, and stopping on a signal.

What a checkpoint holds, writing it, restoring it, and stopping at a point a resumed run
continues from exactly.
:class:`RunState` is the part of :class:`~torchrl_o3f.trainers.OfflineOnlineTrainer` that
owns this bookkeeping, kept beside the phase loops rather than inside them. Offline checkpoints
are exact at any step; online ones are taken at episode ends (the env is reseeded from the run
seed and the episode index at every episode end), so a run stopped mid-episode writes the
state of the last episode end and a resumed run redoes the discarded frames exactly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from torchrl_o3f.trainers.checkpoint import (
    copy_checkpoint,
    copy_state,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from torchrl_o3f.trainers.guard import check_finite_state

__all__ = ["RunState", "StopRequested"]


class StopRequested(Exception):
    """A signal asked the run to stop; ``counters`` are those of the checkpoint written."""

    def __init__(self, counters: dict):
        super().__init__()
        self.counters = counters


class RunState:
    """Checkpoint, restore and signal handling of a trainer (a base class of the trainer).

    Reads the trainer's ``task``, ``cfg``, ``config_record``, ``dataset_id``, ``agent``,
    ``exploration``, ``online_data``, ``buffer``, ``counters``, ``evaluations``,
    ``anneal_start``, ``guard``, ``switched``, ``ckpt_dir`` and ``_signals``; keeps
    ``_episode_end`` (the state at the last online episode end), ``_saved_state`` (the last
    state written) and ``_writing`` (a write in progress).
    """

    def _state(self) -> dict[str, Any]:
        """The whole run as a checkpoint: counters, agent, exploration, online data, RNG."""
        online = self.online_data[: self.counters["frames"]]  # save_checkpoint copies the rows
        return {
            "meta": {
                "task": self.task.name,
                "algo": self.cfg.algo.name,
                "dataset_id": self.dataset_id,
                "config": self.config_record,
                "switched": self.switched,
            },
            "counters": dict(self.counters),
            "agent": self.agent.state_dict(),
            "exploration": self.exploration.state_dict() if self.exploration else None,
            "online_data": online,
            "rng": rng_state(),
            "evaluations": list(self.evaluations),
            "anneal_start": dict(self.anneal_start),
        }

    def save(self, name: str = "latest", state: dict[str, Any] | None = None) -> Path:
        """Write ``checkpoints/<name>.pt`` (and ``latest.pt``) atomically.

        ``state`` defaults to the current one; a non-finite one is refused
        (:class:`~torchrl_o3f.trainers.guard.NonFiniteError`), the previous file kept.
        """
        self.guard.flush()
        state = self._state() if state is None else state
        check_finite_state(state["agent"], what="the agent")
        self._writing = True
        path = save_checkpoint(state, self.ckpt_dir / f"{name}.pt", keep_previous=name == "latest")
        if name != "latest":
            copy_checkpoint(path, self.ckpt_dir / "latest.pt", keep_previous=True)
        self._writing, self._saved_state = False, state
        return path

    def _mark_episode_end(self) -> dict[str, Any]:
        """Keep the current state as the last episode end (what an online stop writes)."""
        self._episode_end = copy_state(self._state(), share=("online_data",))
        return self._episode_end

    def _restore(self, state: dict[str, Any], *, fresh_online: bool) -> None:
        """Load ``state``; ``fresh_online``: only its offline phase (``offline_checkpoint``)."""
        if state["meta"].get("switched") and not fresh_online:
            self._switch(copy=False)  # the checkpoint holds the online algorithm's agent
        self.agent.load_state_dict(state["agent"])
        if fresh_online and self.cfg.switches():
            self._switch(copy=True)
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

    def _stop_online(self) -> None:
        """Write the state of the last episode end (the partial episode is discarded), stop."""
        state = self._episode_end
        lost = self.counters["frames"] - state["counters"]["frames"]
        if lost:
            print(
                f"discarding the partial episode ({lost} frames since frame "
                f"{state['counters']['frames']}, the last episode end): a resumed run redoes "
                "them exactly",
                file=sys.stderr,
            )
        if self._saved_state is not state:
            self.save(state=state)
        raise StopRequested(dict(state["counters"]))

    def _stopped_at_once(self) -> dict[str, Any]:
        """After a second signal: write the last episode end unless a write was cut short."""
        self._signals.restore()  # a third signal ends the process
        state = self._episode_end
        if state is not None and not self._writing and self._saved_state is not state:
            self.save(state=state)
        saved = self._saved_state if self._saved_state is not None else self._resume_state
        return dict(saved["counters"]) if saved is not None else {"resumable": False}
