"""What a run measures besides its score: update metrics, Q against returns, annealing, logs.

- :func:`update_metrics`: the scalar outputs of an update as ``train/*`` rows, with the rate.
- :func:`episode_q_record`: the paper's Figure 2 numbers for one online episode (the critic's
  mean Q on its transitions against their discounted Monte-Carlo returns).
- :class:`Annealer`: the online loosening schedule of one loss hyper-parameter.
- :class:`RunLog`: the run's torchrl logger and ``metrics.jsonl``, one row at a time.
- :func:`run_summary` / :func:`write_summary`: what a finished run reports (``summary.json``,
  ``evaluations.csv``, ``learning_curve.png``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.record import loggers

from torchrl_o3f.data.scores import SCORE_LABELS
from torchrl_o3f.trainers.checkpoint import write_atomic
from torchrl_o3f.trainers.config import AnnealConfig, LoggerConfig
from torchrl_o3f.trainers.plotting import plot_learning_curve, write_evaluations

__all__ = [
    "Annealer",
    "RunLog",
    "episode_q_record",
    "run_summary",
    "update_metrics",
    "write_summary",
]


def update_metrics(out: TensorDictBase, elapsed: float, count: int) -> dict[str, float]:
    """``train/<key>`` for every scalar of an update's output, and ``train/updates_per_s``.

    Args:
        out: the last update's output (``loss_*`` terms and detached diagnostics).
        elapsed: seconds the ``count`` updates took.
        count: updates since the last row.
    """
    row = {f"train/{k}": float(v) for k, v in out.items() if isinstance(k, str) and v.numel() == 1}
    row["train/updates_per_s"] = count / max(elapsed, 1e-9)
    return row


def episode_q_record(agent, episode: TensorDictBase) -> dict[str, float]:
    """Mean Q on an episode's transitions against their discounted Monte-Carlo returns.

    Rewards are taken as the critic sees them (the loss's reward transform applied); Q is
    averaged over the ensemble's members. The return from each transition runs to the episode's
    end (an episode cut by the cap is not bootstrapped: the ratio is the paper's Figure 2
    quantity).

    Args:
        agent: the run's :class:`~torchrl_o3f.trainers.agents.Agent`.
        episode: the episode's transitions ``[T]`` (TED keys), on the agent's device.

    Returns:
        ``online/q_mean``, ``online/mc_return`` and their ratio ``online/q_overestimation``
        (NaN when the mean return is 0).
    """
    loss = agent.loss
    gamma = float(loss.gamma)
    reward = loss.transform_reward(episode["next", "reward"].reshape(-1).double())
    returns = torch.empty_like(reward)
    running = 0.0
    for t in range(reward.numel() - 1, -1, -1):
        running = float(reward[t]) + gamma * running
        returns[t] = running
    with torch.no_grad():
        q = agent.qvalue_network.values(episode["observation"], episode["action"]).mean(0)
    q_mean, mc = float(q.mean()), float(returns.mean())
    ratio = q_mean / mc if abs(mc) > 1e-8 else float("nan")
    return {"online/q_mean": q_mean, "online/mc_return": mc, "online/q_overestimation": ratio}


class Annealer:
    """The online loosening schedule of one annealable loss hyper-parameter.

    ``abrupt``: the end value from the first online frame; ``linear``: from the value the loss
    had when the online phase began to ``end`` over ``frames`` frames. The start value is kept
    in ``start`` (checkpointed by the trainer), so a resumed run continues the same line.

    Args:
        param: the loss attribute (one of ``loss.annealable``).
        end: its value at the end of the schedule.
        config: the run's ``anneal`` config (mode and length).
        start: the start values recorded so far (``{param: value}``; shared, updated in place).

    Example:
        >>> from types import SimpleNamespace
        >>> loss = SimpleNamespace(beta=3.0)
        >>> ramp = Annealer("beta", 1.0, AnnealConfig(mode="linear", frames=10), start={})
        >>> ramp.apply(loss, frames=5); loss.beta
        2.0
    """

    def __init__(self, param: str, end: float, config: AnnealConfig, *, start: dict):
        self.param, self.end, self.config, self.start = param, end, config, start

    def apply(self, loss, frames: int) -> None:
        """Set the loss's hyper-parameter for ``frames`` online frames done."""
        start = self.start.setdefault(self.param, float(getattr(loss, self.param)))
        if self.config.mode == "abrupt":
            value = self.end
        else:
            value = start + (self.end - start) * min(1.0, frames / self.config.frames)
        setattr(loss, self.param, value)


class RunLog:
    """A run's rows: to the torchrl logger of ``config.backend`` and to ``metrics.jsonl``.

    ``metrics.jsonl`` holds every row as one JSON object a line (with its ``step``), appended
    and flushed as it is logged, so a run stopped at any point has a readable log.

    Args:
        out: the run directory.
        config: the run's logger config (``backend``: ``csv``, ``tensorboard``, ``wandb``,
            ``none``, ...).
        name: the experiment name.

    Example:
        >>> import tempfile, json
        >>> out = tempfile.mkdtemp()
        >>> log = RunLog(out, LoggerConfig(backend="none"), name="demo")
        >>> log.log({"eval/score": 12.5}, step=3); log.close()
        >>> json.loads(open(f"{out}/metrics.jsonl").read())
        {'step': 3, 'eval/score': 12.5}
    """

    def __init__(self, out: str | Path, config: LoggerConfig, *, name: str):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.logger = None
        if config.backend != "none":
            kwargs = {}
            if config.backend == "wandb":
                wandb = {
                    "project": config.project,
                    "mode": config.mode,
                    "offline": config.mode == "offline",
                }
                wandb.update(
                    {k: v for k, v in (("group", config.group), ("entity", config.entity)) if v}
                )
                kwargs["wandb_kwargs"] = wandb
            self.logger = loggers.get_logger(
                config.backend, logger_name=str(self.out / "logs"), experiment_name=name, **kwargs
            )
        self._file = open(self.out / "metrics.jsonl", "a")  # noqa: SIM115

    def log_hparams(self, flat: dict[str, Any]) -> None:
        """Send the flattened resolved config to the logger (when it records them)."""
        if self.logger is not None and hasattr(self.logger, "log_hparams"):
            self.logger.log_hparams(flat)

    def log(self, row: dict[str, float], step: int) -> None:
        """Log the scalars of ``row`` at ``step`` (frames + offline steps)."""
        if self.logger is not None:
            for k, v in row.items():
                self.logger.log_scalar(k, v, step=step)
        self._file.write(json.dumps({"step": step, **row}) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close ``metrics.jsonl`` (idempotent)."""
        if not self._file.closed:
            self._file.close()


def run_summary(trainer, wall: float) -> dict[str, Any]:
    """The summary of a finished run: what ran, its scores after each phase, its time.

    ``score_after_offline`` is the last offline evaluation, ``score_after_online`` the last
    evaluation (normalised scores, mean and std over ``eval_episodes`` episodes).

    Args:
        trainer: the :class:`~torchrl_o3f.trainers.OfflineOnlineTrainer` that ran.
        wall: the run's wall-clock seconds (this sitting).
    """
    evaluations = trainer.evaluations
    final = evaluations[-1]
    offline = next((e for e in reversed(evaluations) if e["phase"] == "offline"), evaluations[0])
    return {
        "task": trainer.task.name,
        "algo": trainer.cfg.algo.name,
        "online_algo": trainer.agent.cfg.name,
        "exploration": trainer.cfg.exploration.mode,
        "seed": trainer.cfg.seed,
        "offline_steps": trainer.counters["step"],
        "online_frames": trainer.counters["frames"],
        "score_after_offline": offline["score"],
        "score_after_online": final["score"],
        "score_std_after_offline": offline.get("score_std", float("nan")),
        "score_std_after_online": final.get("score_std", float("nan")),
        "eval_episodes": trainer.cfg.budget.eval_episodes,
        "return_after_offline": offline["return"],
        "return_after_online": final["return"],
        "wall_time_s": wall,
        "device": str(trainer.device),
    }


def write_summary(
    summary: dict[str, Any],
    evaluations: list[dict[str, Any]],
    out: str | Path,
    *,
    title: str,
    score: str,
) -> None:
    """Write ``evaluations.csv``, ``learning_curve.png`` and ``summary.json`` into ``out``.

    Args:
        summary: from :func:`run_summary`.
        evaluations: every evaluation row of the run.
        out: the run directory.
        title: the learning curve's title.
        score: the task's score kind (a key of :data:`~torchrl_o3f.data.SCORE_LABELS`).
    """
    out = Path(out)
    write_evaluations(evaluations, out / "evaluations.csv")
    plot_learning_curve(
        evaluations, out / "learning_curve.png", title=title, score_label=SCORE_LABELS[score]
    )
    text = json.dumps(summary, indent=2).encode()
    write_atomic(out / "summary.json", lambda f: f.write(text))
