"""The per-run measures a claim can be tested on (:data:`METRICS`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from torchrl_o3f.analysis.runs import RunRecord, last_score, phase_scores

EARLY_EPISODES = 3
"""Online episodes the early over-estimation averages (the paper: ~40x "for at least several
thousands of steps after switching"; 3 halfcheetah episodes are 3000 frames)."""


@dataclass(frozen=True)
class Metric:
    """A per-run measure a claim is tested on.

    Attributes:
        label: what it is, for the tables.
        of_run: the run's value (``None``: the run did not record it).
        scale: the statistics see ``of_run / scale`` (scores on rliable's 0-1 scale); the
            tables show ``of_run``'s own units.
        fmt: the format of a value in the tables.
        relative: whether an effect also reads as a fraction of the other side's level (a score
            level, not a change or a ratio).

    Example:
        >>> run = RunRecord("t/m/seed0", "t", "m", 0, [], [], True)
        >>> METRICS["final"].of_run(run) is None
        True
    """

    label: str
    of_run: Callable[[RunRecord], float | None]
    scale: float = 1.0
    fmt: str = ".2f"
    relative: bool = False


def online_mean(run: RunRecord) -> float | None:
    """Mean score over a run's online evaluations, frame 0 (the offline policy) excluded.

    With evaluations every ``eval_every`` frames this is the area under the online curve
    divided by its length (right-endpoint rule): a score that counts how fast it was reached.

    Example:
        >>> rows = [{"phase": "offline", "step": "5", "frames": "0", "score": "50"}] + [
        ...     {"phase": "online", "step": "5", "frames": str(f), "score": str(s)}
        ...     for f, s in ((1000, 10.0), (2000, 30.0))
        ... ]
        >>> online_mean(RunRecord("t/m/seed0", "t", "m", 0, rows, [], True))
        20.0
    """
    scores = [s for frame, s in phase_scores(run, "online") if frame > 0]
    return float(np.mean(scores)) if scores else None


def _overestimation(run: RunRecord) -> list[float]:
    """The critic's mean Q over the Monte-Carlo return, per online episode, in order.

    An episode whose Monte-Carlo return is 0 has no ratio (NaN): it is left out.
    """
    ratios = (row.get("online/q_overestimation") for row in run.episodes)
    return [float(r) if r is not None and np.isfinite(r) else math.nan for r in ratios]


def _peak_overestimation(run: RunRecord) -> float | None:
    ratios = [r for r in _overestimation(run) if np.isfinite(r)]
    return max(ratios) if ratios else None


def _early_overestimation(run: RunRecord) -> float | None:
    ratios = [r for r in _overestimation(run)[:EARLY_EPISODES] if np.isfinite(r)]
    return float(np.mean(ratios)) if ratios else None


def _switch_change(run: RunRecord) -> float | None:
    offline, online = last_score(run, "offline"), phase_scores(run, "online")
    online = [s for frame, s in online if frame > 0]
    return online[0] - offline if online and offline is not None else None


METRICS: dict[str, Metric] = {
    "final": Metric(
        "final score", lambda run: last_score(run, "online"), scale=100.0, fmt=".1f", relative=True
    ),
    "online_mean": Metric("mean online score", online_mean, scale=100.0, fmt=".1f", relative=True),
    "q_peak": Metric("peak mean Q / MC return", _peak_overestimation),
    "q_early": Metric(
        f"mean Q / MC return, first {EARLY_EPISODES} episodes", _early_overestimation
    ),
    "switch_change": Metric(
        "score at the first online evaluation minus after offline", _switch_change, fmt="+.1f"
    ),
}
"""The measures a :class:`Claim` can name: ``final`` (the score after the online phase),
``online_mean`` (:func:`online_mean`), ``q_peak`` and ``q_early`` (the critic's over-estimation
ratio, mean Q over the Monte-Carlo return, of each online episode: its maximum, and its mean over
the first :data:`EARLY_EPISODES`), ``switch_change`` (the score at the first online evaluation
minus the score after the offline phase: negative for a drop)."""
