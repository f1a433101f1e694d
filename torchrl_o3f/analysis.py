"""Study analysis: the runs of a sweep into a tidy table, rliable statistics and figures.

    python -m torchrl_o3f.analysis studies/study --experiment fig5_exploration --out <dir>
    python -m torchrl_o3f.analysis studies/study --all --out <dir>   # every experiment, claims.md
    python -m torchrl_o3f.analysis <run dir> --run --out <dir>        # one run's record, run.md

reads every run under the study folder (its ``config.yaml``, ``evaluations.csv`` and
``metrics.jsonl``; the shared offline phases are skipped), and writes to ``--out``:

- ``tidy.csv``: one row per evaluation: run, task, method, seed, phase, step (offline
  gradient steps in the offline phase, online env frames in the online phase), score
  (D4RL-normalised: 0 random, 100 expert; mean over the evaluation episodes), its spread
  over those episodes (score_std), return, eval_episodes;
- ``final_scores.csv``: per run, the score after the offline phase and after the online one;
- ``summary.md``: per method and task the mean final score over seeds; across tasks the IQM and
  mean with stratified-bootstrap 95% confidence intervals, and the paper's claims that the
  experiment tests, each on its measure of :data:`METRICS` (the final score unless it names
  another) and on its pre-declared second measure (the mean online score), with the probability
  of improvement and the verdict its interval gives;
- figures (PNG): normalised-score curves over online frames per task (mean over seeds, each
  seed faintly behind it, 95% bootstrap band), the aggregate intervals, performance profiles
  and, where logged, the critic's over-estimation of the Monte-Carlo return per online episode
  (the paper's Figure 2).

With ``--all``, ``claims.md`` gathers every claim with both measures, a flag where their verdicts
differ, and its power: the smallest effect its seeds detect and the seeds per side the paper's
own effect needs (:func:`detectable_effect`, :func:`seeds_needed`).

With ``--run`` the folder is one finished run (e.g. the default recipe's ``outputs/...``):
:func:`report_run` copies its record next to a ``run.md`` table of its evaluations.

Every estimate and interval comes from ``rliable`` (stratified bootstrap, IQM, probability of
improvement, performance profiles); the power of a claim is the closed-form normal approximation
of a two-sample difference of means (:func:`detectable_effect`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = [
    "CLAIMS",
    "METRICS",
    "Claim",
    "Metric",
    "RunRecord",
    "analyse",
    "analyse_all",
    "collect_runs",
    "detectable_effect",
    "experiment_grid",
    "main",
    "online_mean",
    "pairing",
    "paper_command",
    "report_run",
    "seeds_needed",
]

TIDY_COLUMNS = (
    "run",
    "task",
    "method",
    "seed",
    "phase",
    "step",
    "score",
    "score_std",
    "return",
    "eval_episodes",
)


PAPER_SCALE = (
    "python recipes/sweep.py experiment={experiment} budget=paper device=cuda "
    "hydra/launcher=submitit_slurm"
)
"""The command that reruns an experiment at the paper's scale (add the cluster's own
``hydra.launcher.*`` keys, see docs/sweeps.md)."""

PAPER_OVERRIDES: dict[str, str] = {
    # fig5_lapo.yaml sets budget.online_frames and algo.utd_ratio for a CPU: undo both
    "fig5_lapo": "budget.online_frames=1000000 algo.utd_ratio=20",
}
"""Extra overrides of :data:`PAPER_SCALE` where an experiment's yaml cuts the budget for a CPU."""


def paper_command(experiment: str) -> str:
    """The one command that reruns ``experiment`` at the paper's scale on a SLURM cluster.

    Example:
        >>> paper_command("fig5_lapo").split()[-1]
        'algo.utd_ratio=20'
    """
    extra = PAPER_OVERRIDES.get(experiment)
    command = PAPER_SCALE.format(experiment=experiment)
    return f"{command} {extra}" if extra else command


@dataclass
class RunRecord:
    """One run of a study: what it is and what it measured.

    Attributes:
        path: the run folder, relative to the study folder.
        task, method, seed: what the run is.
        evaluations: its ``evaluations.csv`` rows (dicts).
        episodes: per online episode, its ``metrics.jsonl`` row (return, Q, MC return, ...).
        finished: whether the run wrote its ``summary.json``.
        offline: the shared offline phase the run started from, as
            ``<task>/<algo>-<hash>/seed<k>`` (``""``: the run trained its own).

    Example:
        >>> RunRecord("t/m/seed0", "t", "m", 0, [], [], True).seed
        0
    """

    path: str
    task: str
    method: str
    seed: int
    evaluations: list[dict[str, Any]]
    episodes: list[dict[str, Any]]
    finished: bool
    offline: str = ""


def _method_of(config: dict[str, Any]) -> str:
    if config.get("method"):
        return str(config["method"])
    algo = config["algo"]["name"]
    online = config.get("online_algo") or algo
    mode = config["exploration"]["mode"]
    return f"{algo}-{online}-{mode}" if online != algo else f"{algo}-{mode}"


def _offline_phase(checkpoint: str | None) -> str:
    """``<task>/<algo>-<hash>/seed<k>`` of a sweep's shared offline checkpoint path."""
    if not checkpoint:
        return ""
    parts = Path(checkpoint).parts
    if "offline" not in parts:
        return str(checkpoint)
    i = len(parts) - 1 - parts[::-1].index("offline")
    return "/".join(parts[i + 1 : i + 4])


def pairing(runs: list[RunRecord], x: str, y: str, tasks: list[str]) -> str:
    """Whether methods ``x`` and ``y`` started each (task, seed) from the same offline phase.

    Returns ``"shared (n of n)"``, ``"different algorithms"`` (by design, e.g. O3F-IQL
    against CQL) or ``"NOT shared: k of n"``: the same algorithm's offline phases differ (another
    config, thread count or budget), so the comparison also measures offline noise.

    Example:
        >>> a = RunRecord("a", "t", "x", 0, [], [], True, "t/iql-1/seed0")
        >>> b = RunRecord("b", "t", "y", 0, [], [], True, "t/iql-2/seed0")
        >>> pairing([a, b], "x", "y", ["t"])
        'NOT shared: 1 of 1'
    """
    phase = {(r.method, r.task, r.seed): r.offline for r in runs if r.finished}
    keys = [(t, s) for (m, t, s) in phase if m == x and t in tasks and (y, t, s) in phase]
    if not keys:
        return "-"
    pairs = [(phase[(x, *k)], phase[(y, *k)]) for k in keys]
    # a resumed run does not record its offline checkpoint (resume replaces it): unknown
    unknown = sum(a == "" or b == "" for a, b in pairs)
    pairs = [(a, b) for a, b in pairs if a != "" and b != ""]
    note = f", {unknown} not recorded (resumed runs)" if unknown else ""
    if not pairs:
        return f"not recorded ({unknown} resumed)"
    same = sum(a == b for a, b in pairs)
    algo = lambda p: p.split("/")[1].rsplit("-", 1)[0] if p.count("/") >= 2 else p  # noqa: E731
    if same == 0 and all(algo(a) != algo(b) for a, b in pairs):
        return "different algorithms"
    if same == len(pairs):
        return f"shared ({same} of {len(pairs)}{note})"
    return f"NOT shared: {len(pairs) - same} of {len(pairs)}{note}"


def collect_runs(study: str | Path) -> list[RunRecord]:
    """Every run under ``study`` (folders holding a ``config.yaml``), the offline phases aside.

    Raises:
        FileNotFoundError: when ``study`` holds no run.
    """
    from omegaconf import OmegaConf

    study = Path(study)
    runs = []
    for config_file in sorted(study.rglob("config.yaml")):
        folder = config_file.parent
        rel = folder.relative_to(study)
        if "offline" in rel.parts or ".hydra" in rel.parts:
            continue
        config = OmegaConf.to_container(OmegaConf.load(config_file))
        evaluations = []
        if (folder / "evaluations.csv").exists():
            with open(folder / "evaluations.csv") as f:
                evaluations = list(csv.DictReader(f))
        episodes = []
        if (folder / "metrics.jsonl").exists():
            for line in (folder / "metrics.jsonl").read_text().splitlines():
                row = json.loads(line)
                if "online/episode_return" in row:
                    episodes.append(row)
        runs.append(
            RunRecord(
                path=str(rel),
                task=config["task"],
                method=_method_of(config),
                seed=int(config["seed"]),
                evaluations=evaluations,
                episodes=episodes,
                finished=(folder / "summary.json").exists(),
                offline=_offline_phase(config.get("offline_checkpoint")),
            )
        )
    if not runs:
        raise FileNotFoundError(f"no run (a folder with config.yaml) under {study}")
    return runs


def _values(text: str) -> list[str]:
    text = str(text).strip()
    match = re.fullmatch(r"range\((\d+)(?:,\s*(\d+))?\)", text)
    if match:
        lo, hi = (0, int(match[1])) if match[2] is None else (int(match[1]), int(match[2]))
        return [str(i) for i in range(lo, hi)]
    return [v.strip() for v in text.split(",") if v.strip()]


def experiment_grid(experiment: str | Path) -> dict[str, list[str]]:
    """The ``task``/``method``/``seed`` values an experiment config sweeps.

    ``experiment`` is a yaml path, or a name looked up in ``recipes/config/experiment/``.

    Raises:
        FileNotFoundError: for an experiment that cannot be found.
    """
    from omegaconf import OmegaConf

    path = Path(experiment)
    if not path.exists():
        path = Path("recipes") / "config" / "experiment" / f"{experiment}.yaml"
    if not path.exists():
        raise FileNotFoundError(
            f"no experiment {experiment!r}: give a yaml path or a name of "
            "recipes/config/experiment/ (run from the repository root)"
        )
    params = OmegaConf.to_container(OmegaConf.load(path))["hydra"]["sweeper"]["params"]
    return {k: _values(v) for k, v in params.items() if k in ("task", "method", "seed")}


def _step(row: dict[str, Any]) -> int:
    return int(row["step"]) if row["phase"] == "offline" else int(row["frames"])


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


def _scores(run: RunRecord, phase: str) -> list[tuple[int, float]]:
    return [(_step(e), float(e["score"])) for e in run.evaluations if e["phase"] == phase]


def _final(run: RunRecord, phase: str) -> float | None:
    rows = _scores(run, phase)
    return rows[-1][1] if rows else None


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
    scores = [s for frame, s in _scores(run, "online") if frame > 0]
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
    offline, online = _final(run, "offline"), _scores(run, "online")
    online = [s for frame, s in online if frame > 0]
    return online[0] - offline if online and offline is not None else None


METRICS: dict[str, Metric] = {
    "final": Metric(
        "final score", lambda run: _final(run, "online"), scale=100.0, fmt=".1f", relative=True
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


@dataclass(frozen=True)
class Claim:
    """A pairwise claim of the paper: ``better`` measures above ``worse`` (or ``equal``).

    Attributes:
        text: the claim as the paper makes it.
        better: the method claimed better (or one side of an equality).
        worse: the other method.
        kind: ``"better"`` or ``"equal"``.
        tasks: the tasks the claim is about (``None``: every task of the study).
        against: when given, ``worse`` is only a label and the other side is, on each task, the
            one of these methods with the highest mean of the measure tested over seeds (the
            paper's "next best" baseline). Choosing it on the same runs favours the baselines.
        metric: the measure of :data:`METRICS` the claim is about; its verdict is the claim's.
        secondary: a second measure, declared before any run, tested the same way; its verdict
            is shown next to the claim's, and where the two differ the claim is flagged
            (``None``: none).
        paper_gain: the paper's own effect, relative to ``worse`` (``0.58`` for +58%); it
            sets the effect the seeds needed are computed for.
        paper_value: the paper's own value of ``metric`` for ``better`` (``40.0`` for 40x
            over-estimation); the study's interval for ``better`` is set against it.

    Raises:
        ValueError: for an unknown ``kind``, ``metric`` or ``secondary``.

    Example:
        >>> Claim("O3F beats noise", "o3f_lapo", "gaussian_lapo").metric
        'final'
        >>> Claim("O3F beats the best", "o3f_iql", "best baseline", against=("iql", "cql")).against
        ('iql', 'cql')
        >>> Claim("SAC over-estimates", "cql_sac", "cql", metric="q_peak", secondary=None).secondary
    """

    text: str
    better: str
    worse: str
    kind: str = "better"
    tasks: tuple[str, ...] | None = None
    against: tuple[str, ...] = ()
    metric: str = "final"
    secondary: str | None = "online_mean"
    paper_gain: float | None = None
    paper_value: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("better", "equal"):
            raise ValueError(f"kind must be 'better' or 'equal', not {self.kind!r}")
        for name in (self.metric, self.secondary):
            if name is not None and name not in METRICS:
                raise ValueError(f"unknown metric {name!r}: one of {', '.join(METRICS)}")


CLAIMS: dict[str, list[Claim]] = {
    "fig5_lapo": [
        Claim(
            "O3F-LAPO beats LAPO with Gaussian noise on halfcheetah-medium (+58%)",
            "o3f_lapo",
            "gaussian_lapo",
            tasks=("halfcheetah-medium",),
            paper_gain=0.58,
        )
    ],
    "fig5_exploration": [
        Claim(
            "O3F-IQL equals IQL with Gaussian noise on locomotion",
            "o3f_iql",
            "gaussian_iql",
            kind="equal",
            tasks=("halfcheetah-medium", "hopper-medium"),
        )
    ],
    "fig4_baselines": [
        Claim("O3F beats IQL fine-tuning", "o3f_iql", "iql", paper_gain=0.56),
        Claim("O3F beats CQL fine-tuning", "o3f_iql", "cql"),
        Claim("O3F beats AWAC fine-tuning", "o3f_iql", "awac"),
        Claim(
            "O3F >= every baseline on 11 of 12 tasks, +56% over the next best on average",
            "o3f_iql",
            "the best of iql, cql, awac per task",
            against=("iql", "cql", "awac"),
            paper_gain=0.56,
        ),
    ],
    "fig2_switch": [
        Claim("Switching CQL -> SAC at the boundary is worse than CQL", "cql", "cql_sac"),
        Claim(
            "Switching CQL -> SAC makes the critic over-estimate: its peak (the paper: ~40x)",
            "cql_sac",
            "cql",
            metric="q_peak",
            secondary=None,
            paper_value=40.0,
        ),
        Claim(
            "Switching CQL -> SAC makes the critic over-estimate from the start (the paper: ~40x "
            "for several thousand steps)",
            "cql_sac",
            "cql",
            metric="q_early",
            secondary=None,
            paper_value=40.0,
        ),
        Claim(
            "Switching CQL -> SAC drops the score right after the switch (the paper: it takes "
            "~15k steps to recover)",
            "cql",
            "cql_sac",
            metric="switch_change",
            secondary=None,
        ),
    ],
    "fig3_loosening": [
        Claim("Loosening CQL abruptly does not help", "cql", "cql_abrupt", kind="equal"),
        Claim("Loosening CQL linearly does not help", "cql", "cql_linear", kind="equal"),
        Claim("Loosening AWAC abruptly does not help", "awac", "awac_abrupt", kind="equal"),
        Claim("Loosening AWAC linearly does not help", "awac", "awac_linear", kind="equal"),
        Claim("Loosening IQL abruptly does not help", "iql", "iql_abrupt", kind="equal"),
        Claim("Loosening IQL linearly does not help", "iql", "iql_linear", kind="equal"),
    ],
    "fig6_omega": [
        Claim(
            "omega = 1 hurts on halfcheetah-medium",
            "o3f_iql",
            "o3f_iql_omega1",
            tasks=("halfcheetah-medium",),
        )
    ],
}
"""The paper's claims each experiment tests (see ``docs/results.md``)."""


def tidy_rows(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """One row per evaluation of every run (columns :data:`TIDY_COLUMNS`)."""
    rows = []
    for run in runs:
        for ev in run.evaluations:
            rows.append(
                {
                    "run": run.path,
                    "task": run.task,
                    "method": run.method,
                    "seed": run.seed,
                    "phase": ev["phase"],
                    "step": _step(ev),
                    "score": float(ev["score"]),
                    "score_std": float(ev.get("score_std") or "nan"),
                    "return": float(ev["return"]),
                    "eval_episodes": ev.get("eval_episodes", ""),
                }
            )
    return rows


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


def _bootstrap(label: str, seed: int, estimate, *args, **kwargs):
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
    points, intervals = _bootstrap(
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

    _, intervals = _bootstrap(
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


def _test_claim(
    claim: Claim, runs: list[RunRecord], tasks: list[str], reps: int, seed: int
) -> dict[str, Any]:
    """One claim on its measure and its second measure, its verdict and what it rests on."""
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


def analyse(
    study: str | Path,
    out: str | Path,
    *,
    experiment: str | None = None,
    reps: int = 2000,
    seed: int = 0,
    runs: list[RunRecord] | None = None,
) -> dict[str, Any]:
    """Write the tidy CSV, the statistics (``summary.md``) and the figures of a study.

    Args:
        study: the study folder (e.g. ``studies/study``).
        out: where to write.
        experiment: restrict to an experiment's tasks/methods/seeds and test its claims.
        reps: bootstrap repetitions.
        seed: seed of the bootstrap.
        runs: the study's runs when already read (:func:`collect_runs`); ``None`` reads them.

    Raises:
        FileNotFoundError: when the study (or the experiment's part of it) holds no run.

    Returns:
        ``{"runs": n, "methods": [...], "tasks": [...], "aggregates": {...}, "claims": [...]}``.
    """
    from rliable import library as rly
    from rliable import metrics

    runs = collect_runs(study) if runs is None else runs
    grid = experiment_grid(experiment) if experiment else {}
    if grid:
        seeds = {int(s) for s in grid.get("seed", [])}
        runs = [
            r
            for r in runs
            if r.task in grid.get("task", [r.task])
            and r.method in grid.get("method", [r.method])
            and (not seeds or r.seed in seeds)
        ]
    if not runs:
        raise FileNotFoundError(f"no run of experiment {experiment!r} under {study}")
    methods = grid.get("method") or sorted({r.method for r in runs})
    methods = [m for m in methods if any(r.method == m for r in runs)]
    tasks = grid.get("task") or sorted({r.task for r in runs})
    tasks = [t for t in tasks if any(r.task == t for r in runs)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "tidy.csv", TIDY_COLUMNS, tidy_rows(runs))
    finals = [
        {
            "run": r.path,
            "task": r.task,
            "method": r.method,
            "seed": r.seed,
            "finished": r.finished,
            "score_after_offline": _final(r, "offline"),
            "score_after_online": _final(r, "online"),
        }
        for r in runs
    ]
    _write_csv(out / "final_scores.csv", list(finals[0]), finals)

    matrix = score_matrix(runs, methods, tasks)
    aggregates: dict[str, Any] = {}
    if matrix:
        funcs = lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])  # noqa: E731
        points, intervals = _bootstrap(
            "aggregates", seed, rly.get_interval_estimates, matrix, funcs, reps=reps
        )
        aggregates = {
            m: {"iqm": points[m][0], "mean": points[m][1], "ci": intervals[m]} for m in matrix
        }
    experiment_claims = CLAIMS.get(str(experiment), [])
    claims = [
        _test_claim(claim, runs, [t for t in (claim.tasks or tasks) if t in tasks], reps, seed)
        for claim in experiment_claims
    ]

    _plot_curves(runs, methods, tasks, out / "curves.png", reps=reps, seed=seed)
    if len(matrix) >= 1:
        _plot_aggregates(matrix, aggregates, out / "aggregates.png")
        _plot_profiles(matrix, out / "profiles.png", reps=reps, seed=seed)
    if any(r.episodes and "online/q_overestimation" in r.episodes[0] for r in runs):
        paper = [c.paper_value for c in experiment_claims if c.metric.startswith("q_")]
        _plot_overestimation(
            runs,
            methods,
            tasks,
            out / "overestimation.png",
            paper=max((v for v in paper if v is not None), default=None),
        )
    _write_summary(out / "summary.md", runs, methods, tasks, aggregates, claims, experiment)
    return {
        "runs": len(runs),
        "methods": methods,
        "tasks": tasks,
        "aggregates": aggregates,
        "claims": claims,
    }


def _write_csv(path: Path, columns, rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def _cells(metric: str, measured: dict[str, Any] | None) -> tuple[str, str, str, str]:
    """The means X / Y, P(X > Y), its interval and the verdict of one measure, as table cells."""
    if measured is None or measured["p"] is None:
        verdict = "not measured" if measured is None else measured["verdict"]
        return "-", "-", "-", verdict
    fmt = METRICS[metric].fmt
    x, y = measured["means"]
    lo, hi = measured["ci"]
    return (
        f"{x:{fmt}} / {y:{fmt}}",
        f"{measured['p']:.2f}",
        f"[{lo:.2f}, {hi:.2f}]",
        measured["verdict"],
    )


def _write_summary(path, runs, methods, tasks, aggregates, claims, experiment) -> None:
    lines = [f"# {experiment or 'study'}: final normalised scores", ""]
    lines.append(
        "Score after the online phase (D4RL-normalised: 0 random, 100 expert; pointmaze "
        "episodes go past 100, see docs/datasets.md), mean over seeds (seeds in brackets); "
        "unfinished runs are left out."
    )
    lines += ["", "| method | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for method in methods:
        cells = []
        for task in tasks:
            vals = [
                _final(r, "online")
                for r in runs
                if r.method == method and r.task == task and r.finished
            ]
            vals = [v for v in vals if v is not None]
            cells.append(f"{np.mean(vals):.1f} ({len(vals)})" if vals else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if aggregates:
        head = "Across tasks (rliable, stratified bootstrap, 95% CI; D4RL-normalised scores):"
        lines += ["", head, ""]
        lines += ["| method | IQM | IQM 95% CI | mean | mean 95% CI |", "|---|---|---|---|---|"]
        for m, a in aggregates.items():
            ci = np.asarray(a["ci"]) * 100
            lines.append(
                f"| {m} | {a['iqm'] * 100:.1f} | [{ci[0][0]:.1f}, {ci[1][0]:.1f}] | "
                f"{a['mean'] * 100:.1f} | [{ci[0][1]:.1f}, {ci[1][1]:.1f}] |"
            )
    if claims:
        lines += ["", "Claims (probability of improvement P(X > Y), 95% CI), on each measure:", ""]
        lines += [
            "| claim | X | Y | measure | X / Y | P(X > Y) | 95% CI | verdict | offline phases "
            "of X and Y |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for c in claims:
            cl = c["claim"]
            measured = [(cl.metric, c), (cl.secondary, c.get("secondary"))]
            for metric, m in measured:
                if metric is None:
                    continue
                means, p, ci, verdict = _cells(metric, m)
                lines.append(
                    f"| {cl.text} | {cl.better} | {cl.worse} | {METRICS[metric].label} | {means} | "
                    f"{p} | {ci} | {verdict} | {c.get('paired', '-')} |"
                )
        lines += [
            "",
            "Offline phases: *shared* means both methods started each seed from the very same "
            "offline checkpoint, so the comparison measures the online phase alone.",
        ]
    path.write_text("\n".join(lines) + "\n")


def _online_curve(run: RunRecord) -> dict[int, float]:
    """Score per online frame, starting at frame 0 with the policy the offline phase handed over."""
    online = {_step(e): float(e["score"]) for e in run.evaluations if e["phase"] == "online"}
    start = _final(run, "offline")
    if online and start is not None:
        online.setdefault(0, start)
    return dict(sorted(online.items()))


def _plot_curves(runs, methods, tasks, path, *, reps, seed) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library as rly
    from rliable import metrics

    below = len(methods) > 4  # a legend of many methods goes under the axes, not over the data
    height = 3.6 + (0.2 * -(-len(methods) // 3) if below else 0.0)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), height), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for method in methods:
            curves = [_online_curve(r) for r in runs if r.method == method and r.task == task]
            curves = [c for c in curves if c]
            if not curves:
                continue
            frames = sorted(set.intersection(*(set(c) for c in curves)))
            if not frames:
                continue
            scores = np.array([[c[f] for f in frames] for c in curves])  # [seeds, frames]
            (line,) = ax.plot(
                frames, scores.mean(0), marker="o", ms=3, label=f"{method} (n={len(curves)})"
            )
            for curve in curves:  # each seed, faintly behind the mean
                ax.plot(
                    list(curve), list(curve.values()), color=line.get_color(), lw=0.7, alpha=0.3
                )
            if len(curves) > 1:
                data = {str(i): scores[:, i : i + 1] for i in range(len(frames))}
                _, ci = _bootstrap(
                    f"curve {task} {method}",
                    seed,
                    rly.get_interval_estimates,
                    data,
                    metrics.aggregate_mean,
                    reps=max(200, reps // 10),
                )
                lo = np.array([ci[str(i)][0] for i in range(len(frames))]).ravel()
                hi = np.array([ci[str(i)][1] for i in range(len(frames))]).ravel()
                ax.fill_between(frames, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
        ax.set_title(task)
        ax.set_xlabel("online env frames (0: the offline policy)")
        ax.set_ylabel("D4RL-normalised score")
        ax.grid(alpha=0.3)
        if below:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
        else:
            ax.legend(fontsize=7)
    fig.suptitle(
        "Online fine-tuning: mean over seeds, 95% bootstrap band\n(thin lines: each seed)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # the legend below included
    plt.close(fig)


def _plot_aggregates(matrix, aggregates, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(matrix)
    fig, axes = plt.subplots(1, 2, figsize=(8, 0.5 * len(methods) + 1.6))
    for ax, (k, name) in zip(axes, ((0, "IQM"), (1, "Mean"))):
        for i, m in enumerate(methods):
            ci = np.asarray(aggregates[m]["ci"]) * 100
            point = aggregates[m]["iqm" if k == 0 else "mean"] * 100
            ax.plot([ci[0][k], ci[1][k]], [i, i], lw=6, alpha=0.5)
            ax.plot([point], [i], "k|", ms=12)
        ax.set_yticks(range(len(methods)), methods if k == 0 else [""] * len(methods))
        ax.set_xlabel(f"{name} D4RL-normalised score")
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle("Final score across tasks: point estimate and 95% stratified-bootstrap CI")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_profiles(matrix, path, *, reps, seed) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library as rly
    from rliable import plot_utils

    top = max(1.0, max(float(v.max()) for v in matrix.values()))
    taus = np.linspace(0.0, top, 41)
    profiles, cis = _bootstrap(
        "profiles", seed, rly.create_performance_profile, matrix, taus, reps=max(200, reps // 10)
    )
    fig, ax = plt.subplots(figsize=(5, 3.5))
    plot_utils.plot_performance_profiles(
        profiles,
        taus,
        performance_profile_cis=cis,
        ax=ax,
        xlabel=r"normalised score $\tau$ (0-1 scale)",
        ylabel=r"fraction of runs with score $> \tau$",
    )
    ax.legend(list(matrix), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_overestimation(runs, methods, tasks, path, *, paper: float | None = None) -> None:
    """Mean over seeds of each online episode's ratio; ``paper``: the paper's value, drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        plotted = [1.0]
        for method in methods:
            series = defaultdict(list)
            for r in runs:
                if r.method != method or r.task != task:
                    continue
                for i, row in enumerate(r.episodes):
                    ratio = row.get("online/q_overestimation")
                    if ratio is not None and np.isfinite(ratio):
                        series[i].append(ratio)
            if series:
                idx = sorted(series)
                means = [float(np.mean(series[i])) for i in idx]
                plotted += means
                ax.plot(idx, means, marker="o", ms=3, label=method)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        if paper is not None:  # the claims' reference and the window of their early mean
            ax.axhline(paper, color="r", lw=0.8, ls=":", label=f"the paper: ~{paper:g}x")
            ax.axvspan(
                -0.5,
                EARLY_EPISODES - 0.5,
                color="0.85",
                alpha=0.5,
                lw=0,
                label=f"first {EARLY_EPISODES} episodes",
            )
            plotted.append(paper)
        ax.set_title(task)
        ax.set_xlabel("online episode")
        ax.set_ylabel("mean Q / Monte-Carlo return")
        if min(plotted) > 0:  # ratios: a log axis, 1 = exact, 40 = the paper's CQL -> SAC
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        else:  # a negative ratio (Q or the return below 0): linear near 0, log beyond
            ax.set_yscale("symlog", linthresh=1.0)
            steps = [0.5] + [m * 10.0**e for e in range(4) for m in (1.0, 2.0, 5.0)]
            lo, hi = ax.get_ylim()
            ax.set_yticks(sorted([0.0] + [v for t in steps for v in (t, -t) if lo <= v <= hi]))
            ax.set_ylim(lo, hi)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    title = "Critic over-estimation per online episode\n(mean over seeds; 1 = exact)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _joined(p: str, ci: str) -> str:
    return p if ci == "-" else f"{p} {ci}"


def _power_cells(claim: Claim, measured: dict[str, Any]) -> str:
    """The two power cells of a claim's row: the effect its seeds detect, the seeds needed."""
    power, (_, y_mean) = measured["power"], measured["means"]
    if power["detectable"] is None:
        return "- | -"
    metric = METRICS[claim.metric]
    fmt = metric.fmt.lstrip("+")
    detectable = f"{power['detectable']:{fmt}}"
    if metric.relative and y_mean != 0:
        detectable += f" ({power['detectable'] / abs(y_mean):.0%} of Y)"
    if power["needed"] is None:
        return f"{detectable} | -"
    paper = f"{power['paper_effect']:{fmt}}"
    return f"{detectable} | {power['needed']} (effect {paper})"


def analyse_all(study: str | Path, out: str | Path, *, reps: int = 2000) -> list[dict]:
    """Every experiment of :data:`CLAIMS` into ``out/<experiment>/``, and ``out/claims.md``.

    ``claims.md`` puts each of the paper's claims next to what the study measured: the tasks,
    the seeds per side, the mean final scores, the probability of improvement with its 95%
    interval, the verdict and whether both sides started from the same offline phases. An
    experiment without runs yet is listed as "not run yet".

    Returns:
        One dict per claim (as in :func:`analyse`'s ``claims``, with ``"experiment"``).
    """
    out = Path(out)
    rows = []
    try:
        runs = collect_runs(study)  # read once, shared by every experiment's analysis
    except FileNotFoundError:
        runs = []
    every = [r for r in runs if r.finished]
    progress = []
    for experiment in CLAIMS:
        grid = experiment_grid(experiment)
        cells = {(t, m, int(k)) for t in grid["task"] for m in grid["method"] for k in grid["seed"]}
        done = sum((r.task, r.method, r.seed) in cells for r in every)
        progress.append(f"| `{experiment}` | {done} | {len(cells)} |")
    for experiment, claims in CLAIMS.items():
        try:
            res = analyse(study, out / experiment, experiment=experiment, reps=reps, runs=runs)
            found = res["claims"]
        except FileNotFoundError:
            found = [{"claim": c, "verdict": "not run yet", "p": None} for c in claims]
        rows += [{**c, "experiment": experiment} for c in found]
    lines = [
        "# The paper's claims against the committed study",
        "",
        "Written by `python -m torchrl_o3f.analysis <study> --all --out <dir>` from the runs' own "
        "records. Each claim is tested on its measure (the paper's own: the final score unless "
        "the claim names another) and, for the score claims, on a second measure declared before "
        "the runs: the mean online score. Scores are D4RL-normalised (0 random, 100 expert; "
        "pointmaze goes past 100, see docs/datasets.md), means over seeds and tasks; P(X > Y): "
        "rliable's probability of improvement with its stratified-bootstrap 95% interval. "
        "Per-experiment tables and figures: `<experiment>/summary.md`.",
        "",
        "| claim (the paper's) | experiment | tasks | seeds X / Y | measure | X / Y | P(X > Y) "
        "[95% CI] | verdict | mean online score X / Y | P(X > Y) [95% CI] | verdict | measures "
        "disagree | smallest effect the seeds detect | seeds per side for the paper's effect | "
        "offline phases |",
        "|---" * 15 + "|",
    ]
    for c in rows:
        cl = c["claim"]
        if c["p"] is None:
            lines.append(
                f"| {cl.text} ({cl.better} vs {cl.worse}) | `{c['experiment']}` | - | - | "
                f"{METRICS[cl.metric].label} | - | - | {c['verdict']} | - | - | - | - | - | - | - |"
            )
            continue
        means, p, ci, verdict = _cells(cl.metric, c)
        second = ("-", "-", "-", "-")
        if cl.secondary is not None:
            second = _cells(cl.secondary, c["secondary"])
        flag = {None: "-", True: "**yes**", False: "no"}[c["disagree"]]
        lines.append(
            f"| {cl.text} ({cl.better} vs {cl.worse}) | "
            f"[`{c['experiment']}`]({c['experiment']}/summary.md) | {', '.join(c['tasks'])} | "
            f"{c['seeds'][0]} / {c['seeds'][1]} | {METRICS[cl.metric].label} | {means} | "
            f"{_joined(p, ci)} | {c['verdict']} | {second[0]} | {_joined(*second[1:3])} | "
            f"{second[3]} | "
            f"{flag} | {_power_cells(cl, c)} | {c['paired']} |"
        )
    lines += [
        "",
        'Verdicts: "reproduced" needs the 95% interval of P(X > Y) above 0.5 ("the other way '
        'round": below it); an equality claim is reproduced within the noise while the interval '
        'contains 0.5; otherwise "too noisy to tell". The verdict on the claim\'s own measure is '
        "the claim's; *measures disagree* flags a claim whose second measure gets another one.",
        "",
        "Measures: *final score*, the score of the last evaluation after the online phase; *mean "
        "online score*, the mean score over the online evaluations, the one at frame 0 (the "
        "offline policy) excluded: the area under the online curve over its length, which also "
        "counts how fast a score was reached; *mean Q / MC return*, the critic's mean Q on an "
        "online episode's transitions over their discounted Monte-Carlo return (1: exact), its "
        f"peak over the online phase and its mean over the first {EARLY_EPISODES} episodes (the "
        "paper's Figure 2a); *score at the first online evaluation minus after offline* "
        "(negative: a drop; the paper's Figure 2b).",
        "",
        f"Power: *smallest effect the seeds detect* is the difference of means X - Y that the "
        f"present seeds detect with probability {POWER:g} in a two-sided test at level "
        f"{ALPHA:g}, by the normal approximation of a two-sample difference of means, "
        f"`(z({1 - ALPHA / 2:g}) + z({POWER:g})) * sqrt(sd_X^2 / n_X + sd_Y^2 / n_Y)`, with "
        "each side's per-seed "
        "standard deviation of its mean over the claim's tasks as measured (`sd^2 = sum over "
        "tasks of the variance over seeds / tasks^2`); on scores also as a share of Y's mean. "
        "*Seeds per side for the paper's effect*: the `n` at which that smallest effect reaches "
        "the paper's own (in parentheses, in the measure's units: the paper's gain times Y's "
        "measured mean, or the paper's value minus Y's mean), rounded up, at least "
        f'{MIN_SEEDS}; "-" where the paper gives no effect size.',
        "",
        "Each experiment at the paper's scale (1M offline steps, 1M online frames, on GPUs; add "
        "the cluster's `hydra.launcher.*` keys, see docs/sweeps.md):",
        "",
    ]
    lines += [f"- `{paper_command(experiment)}`" for experiment in CLAIMS]
    lines += ["", "Finished runs of each experiment (a run may serve several):", ""]
    lines += ["| experiment | finished | of |", "|---|---|---|", *progress]
    out.mkdir(parents=True, exist_ok=True)
    (out / "claims.md").write_text("\n".join(lines) + "\n")
    return rows


RUN_RECORD = ("config.yaml", "evaluations.csv", "summary.json", "learning_curve.png")
"""The files of a finished run that :func:`report_run` copies: what ran and what it measured."""


def report_run(run: str | Path, out: str | Path) -> dict[str, Any]:
    """One finished run's record, and a ``run.md`` table of what it measured, into ``out``.

    Copies :data:`RUN_RECORD` (the resolved config, every evaluation, the summary, the learning
    curve) from the run folder ``run`` to ``out`` and writes ``out/run.md``: the run's summary
    line (score after each phase, mean +- std over its evaluation episodes, returns, wall time)
    and one table row per evaluation. Scores are the task's normalised score
    (:func:`~torchrl_o3f.data.score_label`: D4RL-normalised on locomotion). One run
    is one seed: the std is the spread of one policy's episodes, not a confidence interval.

    Raises:
        FileNotFoundError: when ``run`` lacks a file of :data:`RUN_RECORD` (no ``summary.json``:
            the run has not finished; resume it with ``resume=<run>``).

    Returns:
        The run's ``summary.json`` as a dict.

    Example:
        >>> import tempfile
        >>> try:
        ...     report_run(tempfile.mkdtemp(), tempfile.mkdtemp())
        ... except FileNotFoundError as err:
        ...     print(str(err).split(":")[0])
        not a finished run
    """
    import shutil

    from omegaconf import OmegaConf

    from torchrl_o3f.data.scores import score_label
    from torchrl_o3f.envs import UnknownTaskError

    run, out = Path(run), Path(out)
    missing = [f for f in RUN_RECORD if not (run / f).is_file()]
    if missing:
        hint = (
            "the run has not finished: resume it with resume=<run dir>"
            if "summary.json" in missing
            else "give the folder of a run of a recipe"
        )
        raise FileNotFoundError(f"not a finished run: {run} has no {', '.join(missing)} ({hint})")
    summary = json.loads((run / "summary.json").read_text())
    config = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))
    with open(run / "evaluations.csv") as f:
        evaluations = list(csv.DictReader(f))
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_RECORD:
        if (out / name).resolve() != (run / name).resolve():
            shutil.copyfile(run / name, out / name)
    episodes = summary["eval_episodes"]
    try:
        label = score_label(summary["task"])
    except UnknownTaskError:  # a user's task, registered by their own code, not here
        label = "score (the task is not registered in this process)"
    lines = [
        f"# {_method_of(config)} on {summary['task']}, seed {summary['seed']}: one run",
        "",
        "Written by `python -m torchrl_o3f.analysis <run dir> --run --out <dir>` from the run's "
        "own record, copied here: `config.yaml` (every number the run used), `evaluations.csv`, "
        "`summary.json`, `learning_curve.png`.",
        "",
        f"{label}: **{summary['score_after_offline']:.1f} +- "
        f"{summary['score_std_after_offline']:.1f} after {summary['offline_steps']} offline "
        f"gradient steps -> {summary['score_after_online']:.1f} +- "
        f"{summary['score_std_after_online']:.1f} after {summary['online_frames']} online "
        f"frames** (mean +- std over {episodes} evaluation episodes of the deterministic "
        f"policy; return {summary['return_after_offline']:.0f} -> "
        f"{summary['return_after_online']:.0f}). Training took "
        f"{summary['wall_time_s'] / 60:.1f} min on {summary['device']} (`wall_time_s`: from the "
        "end of the set-up and the dataset build; a resumed run counts its last sitting).",
        "",
        f"One seed: the +- is the spread of one policy's {episodes} episodes, not a confidence "
        "interval, and one run does not tell whether the online phase helped; the study "
        "(docs/results.md) asks that over seeds.",
        "",
        "| phase | offline gradient steps | online env frames | score | score std | return "
        "| return std |",
        "|---|---|---|---|---|---|---|",
    ]
    for ev in evaluations:
        lines.append(
            f"| {ev['phase']} | {ev['step']} | {ev['frames']} | {float(ev['score']):.1f} | "
            f"{float(ev.get('score_std') or 'nan'):.1f} | {float(ev['return']):.0f} | "
            f"{float(ev.get('return_std') or 'nan'):.0f} |"
        )
    lines += ["", "![learning curve](learning_curve.png)"]
    (out / "run.md").write_text("\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m torchrl_o3f.analysis``."""
    parser = argparse.ArgumentParser(prog="python -m torchrl_o3f.analysis", description=__doc__)
    parser.add_argument("study", help="the study folder (e.g. studies/study), or a run with --run")
    parser.add_argument("--experiment", default=None, help="an experiment name or yaml path")
    parser.add_argument(
        "--all",
        action="store_true",
        help="every experiment of the paper into <out>/<experiment>/, and <out>/claims.md",
    )
    parser.add_argument("--out", default=None, help="output folder (default <study>/analysis)")
    parser.add_argument(
        "--run",
        action="store_true",
        help="the folder is one finished run: copy its record and write <out>/run.md",
    )
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap repetitions")
    args = parser.parse_args(argv)
    if args.run:
        if args.all or args.experiment:
            parser.error("--run reports one run: give neither --all nor --experiment")
        out = args.out or str(Path(args.study) / "report")
        try:
            summary = report_run(args.study, out)
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(
            f"{summary['task']} seed {summary['seed']}: {summary['score_after_offline']:.1f} -> "
            f"{summary['score_after_online']:.1f}: written to {out}/run.md"
        )
        return 0
    if args.all:
        if args.experiment:
            parser.error("give --all or --experiment, not both")
        out = args.out or str(Path(args.study) / "analysis")
        rows = analyse_all(args.study, out, reps=args.reps)
        done = sum(r["p"] is not None for r in rows)
        print(f"{done} of {len(rows)} claims measured: written to {out}/claims.md")
        return 0
    out = args.out or str(Path(args.study) / "analysis" / (args.experiment or "all"))
    try:
        res = analyse(args.study, out, experiment=args.experiment, reps=args.reps)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{res['runs']} runs, methods {res['methods']}, tasks {res['tasks']}: written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
