"""A study's run records: what each run is and what it measured, read from its folder."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchrl_o3f.trainers.record import method_of

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
                method=method_of(config),
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


def eval_step(row: dict[str, Any]) -> int:
    """Where an ``evaluations.csv`` row lies: offline gradient steps, or online env frames.

    Example:
        >>> eval_step({"phase": "online", "step": "5000", "frames": "1000"})
        1000
    """
    return int(row["step"]) if row["phase"] == "offline" else int(row["frames"])


def phase_scores(run: RunRecord, phase: str) -> list[tuple[int, float]]:
    """``(step, score)`` of each evaluation of a run's ``phase`` (:func:`eval_step`), in order."""
    return [(eval_step(e), float(e["score"])) for e in run.evaluations if e["phase"] == phase]


def last_score(run: RunRecord, phase: str) -> float | None:
    """The score of the last evaluation of a run's ``phase`` (``None``: no evaluation)."""
    rows = phase_scores(run, phase)
    return rows[-1][1] if rows else None


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
                    "step": eval_step(ev),
                    "score": float(ev["score"]),
                    "score_std": float(ev.get("score_std") or "nan"),
                    "return": float(ev["return"]),
                    "eval_episodes": ev.get("eval_episodes", ""),
                }
            )
    return rows
