"""Statistics of a claim: rliable's probability of improvement, verdicts, power."""

from __future__ import annotations

import math
import zlib
from statistics import NormalDist
from typing import Any

import numpy as np

from torchrl_o3f.analysis.claims import Claim
from torchrl_o3f.analysis.measures import METRICS
from torchrl_o3f.analysis.runs import RunRecord, pairing


def score_matrix(
    runs: list[RunRecord], methods: list[str], tasks: list[str], metric: str = "final"
) -> dict[str, np.ndarray]:
    """``{method: [seeds x tasks]}`` of a measure of :data:`METRICS` over finished runs.

    Values are ``of_run / scale``: the default final (after online) scores on the 0-1 scale.
    Only seeds every task has for the method are used (rliable needs a full matrix).

    Example:
        >>> row = {"phase": "online", "step": "5", "frames": "5", "score": "40"}
        >>> score_matrix([RunRecord("t/m/seed0", "t", "m", 0, [row], [], True)], ["m"], ["t"])
        {'m': array([[0.4]])}
    """
    measure = METRICS[metric]
    out = {}
    for method in methods:
        per_task = []
        for task in tasks:
            scores = {
                r.seed: measure.of_run(r)
                for r in runs
                if r.method == method and r.task == task and r.finished
            }
            per_task.append({s: v for s, v in scores.items() if v is not None})
        seeds = sorted(set.intersection(*(set(t) for t in per_task))) if per_task else []
        if seeds:
            out[method] = np.array([[t[s] / measure.scale for t in per_task] for s in seeds])
    return out


MIN_SEEDS = 3
"""Seeds per side below which a claim gets no verdict (the paper's minimum per comparison)."""


POWER = 0.8
"""The probability of detecting an effect that :func:`detectable_effect` and
:func:`seeds_needed` ask for."""


ALPHA = 0.05
"""The two-sided level of the test they assume."""


def _z_sum(power: float, alpha: float) -> float:
    normal = NormalDist()
    return normal.inv_cdf(1 - alpha / 2) + normal.inv_cdf(power)


def detectable_effect(
    sd_x: float, sd_y: float, n_x: int, n_y: int, *, power: float = POWER, alpha: float = ALPHA
) -> float:
    """The smallest difference of means that ``n_x`` and ``n_y`` seeds detect.

    Normal approximation of a two-sample difference of means: a two-sided test at level
    ``alpha`` detects a true difference ``d`` with probability ``power`` when
    ``d = (z[1 - alpha / 2] + z[power]) * sqrt(sd_x**2 / n_x + sd_y**2 / n_y)``, the spreads
    being the per-seed standard deviations of each side.

    Example:
        >>> round(detectable_effect(1.0, 1.0, 2, 2), 2)  # 2.80 standard errors of 1
        2.8
    """
    return _z_sum(power, alpha) * math.sqrt(sd_x**2 / n_x + sd_y**2 / n_y)


def seeds_needed(
    effect: float, sd_x: float, sd_y: float, *, power: float = POWER, alpha: float = ALPHA
) -> int | None:
    """Seeds per side at which :func:`detectable_effect` reaches ``effect``.

    ``n = (z[1 - alpha / 2] + z[power])**2 * (sd_x**2 + sd_y**2) / effect**2``, rounded up and
    at least :data:`MIN_SEEDS` (below it a claim gets no verdict).

    Returns:
        The seeds per side; ``None`` for a zero effect (no number of seeds detects it).

    Example:
        >>> seeds_needed(1.0, 1.0, 1.0)  # 2 * 2.80**2 = 15.7
        16
    """
    if effect == 0:
        return None
    n = _z_sum(power, alpha) ** 2 * (sd_x**2 + sd_y**2) / effect**2
    return max(MIN_SEEDS, math.ceil(n))


def _spread(matrix: np.ndarray) -> float:
    """Per-seed standard deviation of one side's mean over tasks: ``sqrt(sum var_t) / tasks``.

    Tasks are run independently, so a seed's mean over tasks has the variance
    ``sum_t var_t / tasks**2``, each ``var_t`` the sample variance over seeds on task ``t``.
    """
    return float(np.sqrt(np.var(matrix, axis=0, ddof=1).sum()) / matrix.shape[1])


def _verdict(claim: Claim, lo: float, hi: float) -> str:
    if claim.kind == "equal":
        if lo > 0.5 or hi < 0.5:
            return "not reproduced (one side is better)"
        return "reproduced within the noise (the interval contains 0.5)"
    if lo > 0.5:
        return "reproduced"
    if hi < 0.5:
        return "not reproduced (the other way round)"
    return "too noisy to tell at this budget"


def seeded_bootstrap(label: str, seed: int, estimate, *args, **kwargs):
    """``estimate(*args, **kwargs)`` (an rliable interval estimate) with a reproducible bootstrap.

    rliable 1.x's stratified bootstraps draw their indices from numpy's global generator
    (``np.random.choice`` in ``update_indices``), not from the ``random_state`` they take, so the
    same call gave other intervals depending on what ran before it. Each estimate therefore runs
    with the global generator seeded from ``seed`` and its own ``label`` (one estimate does not
    shift another's) and restored afterwards.
    """
    state = np.random.get_state()
    np.random.seed((seed + zlib.crc32(label.encode())) % 2**32)
    try:
        return estimate(*args, **kwargs)
    finally:
        np.random.set_state(state)


def pairwise_improvement(
    matrix: dict[str, np.ndarray], reps: int = 2000, seed: int = 0
) -> list[dict[str, Any]]:
    """P(X > Y) between every pair of methods of ``matrix`` (:func:`score_matrix`).

    rliable's probability of improvement with its stratified-bootstrap 95% interval (``reps``
    repetitions, seeded from ``seed`` and the pair), for each pair in the order of ``matrix``:
    ``n * (n - 1) / 2`` rows, X before Y. P(Y > X) is ``1 - P(X > Y)``.

    Returns:
        One ``{"x", "y", "p", "ci": (lo, hi), "seeds": (n_x, n_y)}`` per pair.

    Example:
        >>> matrix = {"a": np.array([[0.5], [0.6]]), "b": np.array([[0.1], [0.2]])}
        >>> [(r["x"], r["y"], r["p"]) for r in pairwise_improvement(matrix, reps=50)]
        [('a', 'b', 1.0)]
    """
    from rliable import library as rly
    from rliable import metrics

    methods, rows = list(matrix), []
    for i, x in enumerate(methods):
        for y in methods[i + 1 :]:
            points, intervals = seeded_bootstrap(
                f"pair {x} {y}",
                seed,
                rly.get_interval_estimates,
                {"pair": [matrix[x], matrix[y]]},
                metrics.probability_of_improvement,
                reps=reps,
            )
            lo, hi = (float(v) for v in np.ravel(intervals["pair"]))
            rows.append(
                {
                    "x": x,
                    "y": y,
                    "p": float(np.ravel(points["pair"])[0]),
                    "ci": (lo, hi),
                    "seeds": (len(matrix[x]), len(matrix[y])),
                }
            )
    return rows


def _sides(
    claim: Claim, runs: list[RunRecord], tasks: list[str], metric: str
) -> tuple[np.ndarray, np.ndarray, list[str]] | str:
    """The claim's two ``[seeds x tasks]`` matrices on ``metric`` and each task's Y method.

    Returns the verdict of a claim that cannot be measured yet instead.
    """
    sides = [claim.better, *(claim.against or (claim.worse,))]
    matrix = score_matrix(runs, sides, tasks, metric)
    if len(matrix) < len(sides):
        missing = ", ".join(m for m in sides if m not in matrix)
        return "not run yet" if not claim.against else f"not run yet ({missing} missing)"
    n = min(len(v) for v in matrix.values())
    x = matrix[claim.better][:n]
    if not claim.against:
        return x, matrix[claim.worse][:n], [claim.worse] * len(tasks)
    means = {m: matrix[m][:n].mean(axis=0) for m in claim.against}  # per task, the best mean
    best = [max(claim.against, key=lambda m: means[m][j]) for j in range(len(tasks))]
    return x, np.stack([matrix[m][:n, j] for j, m in enumerate(best)], axis=1), best


def _measure(
    claim: Claim, runs: list[RunRecord], tasks: list[str], metric: str, reps: int, seed: int
) -> dict[str, Any]:
    """One claim on one measure: P(X > Y) (rliable) with its interval, the verdict, the means."""
    from rliable import library as rly
    from rliable import metrics

    sides = _sides(claim, runs, tasks, metric)
    if isinstance(sides, str):
        return {"metric": metric, "verdict": sides, "p": None, "ci": None}
    x, y, against = sides
    label = claim.text if metric == claim.metric else f"{claim.text} [{metric}]"
    points, intervals = seeded_bootstrap(
        label,
        seed,
        rly.get_interval_estimates,
        {"pair": [x, y]},
        metrics.probability_of_improvement,
        reps=reps,
    )
    lo, hi = (float(v) for v in np.ravel(intervals["pair"]))
    n, scale = len(x), METRICS[metric].scale
    verdict = _verdict(claim, lo, hi)
    if n < MIN_SEEDS:  # a bootstrap over one or two seeds is degenerate
        verdict = f"too few seeds to tell ({n} per side, {MIN_SEEDS} needed)"
    return {
        "metric": metric,
        "verdict": verdict,
        "p": float(np.ravel(points["pair"])[0]),
        "ci": (lo, hi),
        "seeds": (n, n),
        "means": (float(np.mean(x)) * scale, float(np.mean(y)) * scale),
        "spreads": (_spread(x) * scale, _spread(y) * scale) if n > 1 else None,
        "x": x,
        "y": y,
        "against": against,
    }


def _power(claim: Claim, measured: dict[str, Any]) -> dict[str, Any]:
    """The smallest effect the claim's seeds detect and the seeds the paper's effect needs."""
    if measured.get("spreads") is None:
        return {"detectable": None, "paper_effect": None, "needed": None}
    (sd_x, sd_y), (n_x, n_y) = measured["spreads"], measured["seeds"]
    y_mean = measured["means"][1]
    paper_effect = None
    if claim.paper_gain is not None:
        paper_effect = claim.paper_gain * abs(y_mean)
    elif claim.paper_value is not None:
        paper_effect = claim.paper_value - y_mean
    return {
        "detectable": detectable_effect(sd_x, sd_y, n_x, n_y),
        "paper_effect": paper_effect,
        "needed": None if paper_effect is None else seeds_needed(abs(paper_effect), sd_x, sd_y),
    }


def _against_paper(claim: Claim, measured: dict[str, Any], reps: int, seed: int) -> str:
    """Whether the paper's own value of the measure lies in the 95% interval of X's mean."""
    from rliable import library as rly
    from rliable import metrics

    _, intervals = seeded_bootstrap(
        f"{claim.text} [level]",
        seed,
        rly.get_interval_estimates,
        {"x": measured["x"] * METRICS[claim.metric].scale},
        metrics.aggregate_mean,
        reps=reps,
    )
    lo, hi = (float(v) for v in np.ravel(intervals["x"]))
    fmt = METRICS[claim.metric].fmt
    where = (
        "inside"
        if lo <= claim.paper_value <= hi
        else ("above" if claim.paper_value > hi else "below")
    )
    return (
        f"{claim.better}'s mean {measured['means'][0]:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]: the "
        f"paper's {claim.paper_value:g} is {where} the interval"
    )


def measure_claim(
    claim: Claim, runs: list[RunRecord], tasks: list[str], reps: int, seed: int
) -> dict[str, Any]:
    """One claim on ``tasks``: its measure and its second measure, verdicts, power, pairing.

    Returns:
        ``{"claim", "verdict", "p", "ci", "paired"}``, ``p`` and ``ci`` ``None`` (and the
        verdict "not run yet") while a side has no finished run; once measured also ``"seeds"``,
        ``"tasks"``, ``"means"`` (X and Y in the measure's units), ``"secondary"`` (the second
        measure's ``metric``, ``verdict``, ``p``, ``ci``, ``means``; ``None`` without one),
        ``"disagree"`` (whether the two verdicts differ; ``None`` without a second measure),
        ``"power"`` (``detectable``, ``paper_effect``, ``needed``) and, for an ``against``
        claim, ``"best"`` (each task's baseline).
    """
    primary = _measure(claim, runs, tasks, claim.metric, reps, seed)
    if primary["p"] is None:
        return {"claim": claim, "verdict": primary["verdict"], "p": None, "ci": None, "paired": "-"}
    x_mean, y_mean = primary["means"]
    verdict, extra = primary["verdict"], {}
    if claim.against:
        best = primary["against"]
        x, y = primary["x"].mean(axis=0), primary["y"].mean(axis=0)  # per task
        gain = np.mean((x - y) / np.abs(y)) * 100
        extra["best"] = dict(zip(tasks, best))
        verdict += (
            f"; O3F >= the best baseline on {int(np.sum(x >= y))} of {len(tasks)} tasks, "
            f"{gain:+.0f}% over it on average"
        )
        paired = "; ".join(
            f"{t} vs {m}: {pairing(runs, claim.better, m, [t])}" for t, m in zip(tasks, best)
        )
    else:
        paired = pairing(runs, claim.better, claim.worse, tasks)
    if claim.paper_value is not None and primary["seeds"][0] > 1:
        verdict += "; " + _against_paper(claim, primary, reps, seed)
    second = None
    if claim.secondary is not None:
        second = _measure(claim, runs, tasks, claim.secondary, reps, seed)
    disagree = (
        None if second is None or second["p"] is None else (second["verdict"] != primary["verdict"])
    )
    return {
        "claim": claim,
        "verdict": verdict,
        "p": primary["p"],
        "ci": primary["ci"],
        "paired": paired,
        "seeds": primary["seeds"],
        "tasks": tasks,
        "means": (x_mean, y_mean),
        "secondary": second,
        "disagree": disagree,
        "power": _power(claim, primary),
        **extra,
    }
