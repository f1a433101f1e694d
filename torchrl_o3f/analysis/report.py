"""The written analysis: an experiment's folder, ``claims.md``, one run's ``run.md``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from torchrl_o3f.analysis.claims import CLAIMS, Claim, paper_command
from torchrl_o3f.analysis.figures import (
    few_seeds_note,
    plot_aggregates,
    plot_curves,
    plot_overestimation,
    plot_profiles,
)
from torchrl_o3f.analysis.measures import EARLY_EPISODES, METRICS
from torchrl_o3f.analysis.runs import (
    TIDY_COLUMNS,
    RunRecord,
    collect_runs,
    experiment_grid,
    last_score,
    tidy_rows,
)
from torchrl_o3f.analysis.stats import (
    ALPHA,
    MIN_SEEDS,
    POWER,
    measure_claim,
    pairwise_improvement,
    score_matrix,
    seeded_bootstrap,
)
from torchrl_o3f.data.scores import score_label
from torchrl_o3f.envs import UnknownTaskError
from torchrl_o3f.trainers.record import method_of


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
        ``{"runs": n, "methods": [...], "tasks": [...], "aggregates": {...}, "claims": [...],
        "pairwise": [...]}`` (``pairwise``: :func:`~torchrl_o3f.analysis.pairwise_improvement`
        between every two methods on the final score).
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
            "score_after_offline": last_score(r, "offline"),
            "score_after_online": last_score(r, "online"),
        }
        for r in runs
    ]
    _write_csv(out / "final_scores.csv", list(finals[0]), finals)

    matrix = score_matrix(runs, methods, tasks)
    aggregates: dict[str, Any] = {}
    if matrix:
        funcs = lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])  # noqa: E731
        points, intervals = seeded_bootstrap(
            "aggregates", seed, rly.get_interval_estimates, matrix, funcs, reps=reps
        )
        aggregates = {
            m: {"iqm": points[m][0], "mean": points[m][1], "ci": intervals[m]} for m in matrix
        }
    pairwise = pairwise_improvement(matrix, reps, seed)
    experiment_claims = CLAIMS.get(str(experiment), [])
    claims = [
        measure_claim(claim, runs, [t for t in (claim.tasks or tasks) if t in tasks], reps, seed)
        for claim in experiment_claims
    ]

    plot_curves(runs, methods, tasks, out / "curves.png", reps=reps, seed=seed)
    if len(matrix) >= 1:
        plot_aggregates(matrix, aggregates, out / "aggregates.png", methods=methods)
        plot_profiles(matrix, out / "profiles.png", reps=reps, seed=seed, methods=methods)
    if any(r.episodes and "online/q_overestimation" in r.episodes[0] for r in runs):
        paper = [c.paper_value for c in experiment_claims if c.metric.startswith("q_")]
        plot_overestimation(
            runs,
            methods,
            tasks,
            out / "overestimation.png",
            paper=max((v for v in paper if v is not None), default=None),
        )
    _write_summary(
        out / "summary.md", runs, methods, tasks, aggregates, claims, experiment, pairwise
    )
    return {
        "runs": len(runs),
        "methods": methods,
        "tasks": tasks,
        "aggregates": aggregates,
        "claims": claims,
        "pairwise": pairwise,
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


def _write_summary(path, runs, methods, tasks, aggregates, claims, experiment, pairwise) -> None:
    lines = [f"# {experiment or 'study'}: final normalised scores", ""]
    lines.append(
        "Score after the online phase (D4RL-normalised: 0 random, 100 expert; pointmaze "
        "episodes go past 100, see docs/datasets.md), mean over seeds (seeds in brackets); "
        "unfinished runs are left out. Figures: `curves`, `aggregates`, `profiles` and, where "
        "logged, `overestimation`, each as `.png`, `.pdf` and `.svg`."
    )
    lines += ["", "| method | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    few = {}
    for method in methods:
        cells = []
        for task in tasks:
            vals = [
                last_score(r, "online")
                for r in runs
                if r.method == method and r.task == task and r.finished
            ]
            vals = [v for v in vals if v is not None]
            mark = ""
            if vals and len(vals) < MIN_SEEDS:
                few[f"{method} on {task}"], mark = len(vals), " †"
            cells.append(f"{np.mean(vals):.1f} ({len(vals)}){mark}" if vals else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    note = few_seeds_note(few)
    if note:
        lines += ["", f"† {note}."]
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
    if pairwise:
        lines += [
            "",
            "Between every two methods (final score; P(X > Y): rliable's probability of "
            "improvement, the chance that a run of X beats a run of Y on a task, 0.5 neither; "
            "stratified-bootstrap 95% CI; P(Y > X) = 1 - P(X > Y)):",
            "",
            "| X | Y | seeds X / Y | P(X > Y) | 95% CI |",
            "|---|---|---|---|---|",
        ]
        for row in pairwise:
            (n_x, n_y), (lo, hi) = row["seeds"], row["ci"]
            mark = " †" if min(n_x, n_y) < MIN_SEEDS else ""
            lines.append(
                f"| {row['x']} | {row['y']} | {n_x} / {n_y}{mark} | {row['p']:.2f} | "
                f"[{lo:.2f}, {hi:.2f}] |"
            )
        if any(min(row["seeds"]) < MIN_SEEDS for row in pairwise):
            lines += [
                "",
                f"† fewer than {MIN_SEEDS} seeds on every task on a side: the interval is not "
                "to be trusted.",
            ]
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
    needed = power["needed"]
    # the minimum a verdict needs: the paper's effect would show with fewer
    needed = f"{needed}, the minimum" if needed <= MIN_SEEDS else f"{needed}"
    return f"{detectable} | {needed} (effect {paper})"


def analyse_all(study: str | Path, out: str | Path, *, reps: int = 2000) -> list[dict]:
    """Every experiment of :data:`CLAIMS` into ``out/<experiment>/``, and ``out/claims.md``.

    ``claims.md`` puts each of the paper's claims next to what the study measured: the tasks,
    the seeds per side; on the claim's measure (:data:`METRICS`) and on its second measure the
    means, the probability of improvement with its 95% interval and the verdict; a flag where
    the two verdicts differ; the smallest effect the seeds detect and the seeds per side the
    paper's own effect needs (:func:`~torchrl_o3f.analysis.detectable_effect`,
    :func:`~torchrl_o3f.analysis.seeds_needed`); and whether both sides started from the same
    offline phases. It ends with each experiment's paper-scale command (:func:`paper_command`)
    and its finished runs. An experiment without runs yet is listed as "not run yet".

    Returns:
        One dict per claim (as in :func:`analyse`'s ``claims``, with ``"experiment"``; see
        :func:`~torchrl_o3f.analysis.stats.measure_claim`).
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
        f"# {method_of(config)} on {summary['task']}, seed {summary['seed']}: one run",
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
