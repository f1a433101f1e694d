"""The figures of an experiment: curves, aggregates, profiles, over-estimation.

Every figure labels a method by its name in the sweep, gives it the same colour (the order of
``methods``), draws scores on the D4RL-normalised 0-100 scale, notes under itself each cell
with fewer than :data:`~torchrl_o3f.analysis.MIN_SEEDS` seeds, and is written as PNG, PDF and
SVG beside each other (:data:`FORMATS`). Each ``plot_*`` returns its (closed) figure.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from torchrl_o3f.analysis.measures import EARLY_EPISODES
from torchrl_o3f.analysis.runs import RunRecord, eval_step, last_score
from torchrl_o3f.analysis.stats import MIN_SEEDS, seeded_bootstrap

FORMATS = (".png", ".pdf", ".svg")
"""The files each figure is written to: a PNG for the docs, PDF and SVG for papers."""

SCORE_LABEL = "D4RL-normalised score"
"""The axis label of every score (0 random, 100 expert)."""


def method_colors(methods: list[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per method, in the order of ``methods`` (seaborn's colour-blind palette).

    Example:
        >>> colors = method_colors(["o3f_iql", "iql"])
        >>> list(colors), colors["o3f_iql"] != colors["iql"]
        (['o3f_iql', 'iql'], True)
    """
    import seaborn as sns

    palette = sns.color_palette("colorblind", max(10, len(methods)))
    return {m: tuple(palette[i % len(palette)]) for i, m in enumerate(methods)}


def few_seeds_note(seeds: dict[str, int], *, unit: str = "seeds") -> str | None:
    """The note on the cells of ``{cell: seeds}`` with fewer than :data:`MIN_SEEDS` seeds.

    ``unit`` names what was counted (e.g. "seeds on every task" for an aggregate).

    Returns:
        ``None`` when every cell has enough seeds.

    Example:
        >>> few_seeds_note({"iql on hopper-medium": 2, "cql on hopper-medium": 3})
        'Fewer than 3 seeds (too few for a confidence interval): iql on hopper-medium (2)'
    """
    few = [f"{cell} ({n})" for cell, n in seeds.items() if n < MIN_SEEDS]
    if not few:
        return None
    return f"Fewer than {MIN_SEEDS} {unit} (too few for a confidence interval): " + ", ".join(few)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _handles(colors: dict, methods: list[str]) -> list:
    from matplotlib.lines import Line2D

    return [Line2D([0], [0], color=colors[m], lw=2, marker="o", ms=3, label=m) for m in methods]


def _finish(fig, path, *, handles=(), note: str | None = None) -> None:
    """Lay ``fig`` out, put its legend and the seeds note under it, write :data:`FORMATS`."""
    import textwrap

    plt = _pyplot()
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    bottom = fig.get_tightbbox(renderer).y0 / fig.get_figheight()  # under the x labels
    if handles:
        legend = fig.legend(
            handles=list(handles),
            loc="upper center",
            bbox_to_anchor=(0.5, bottom),
            ncol=min(len(handles), 4),
            fontsize=8,
            frameon=False,
        )
        bottom = legend.get_window_extent(renderer).y0 / fig.bbox.height
    if note:
        width = max(60, int(fig.get_figwidth() * 14))  # characters of 8-point text per line
        fig.text(
            0.5,
            bottom - 0.02,
            textwrap.fill(note, width),
            ha="center",
            va="top",
            fontsize=8,
            color="firebrick",
        )
    path = Path(path)
    with plt.rc_context({"pdf.fonttype": 42, "svg.fonttype": "none"}):  # text stays text
        for suffix in FORMATS:
            fig.savefig(path.with_suffix(suffix), dpi=150, bbox_inches="tight")
    plt.close(fig)


def _online_curve(run: RunRecord) -> dict[int, float]:
    """Score per online frame, starting at frame 0 with the policy the offline phase handed over."""
    online = {eval_step(e): float(e["score"]) for e in run.evaluations if e["phase"] == "online"}
    start = last_score(run, "offline")
    if online and start is not None:
        online.setdefault(0, start)
    return dict(sorted(online.items()))


def plot_curves(runs, methods, tasks, path, *, reps, seed):
    """Score over online frames per task into ``path``, one panel per task.

    Each method's mean over seeds with its 95% bootstrap band (``reps // 10`` repetitions, at
    least 200, seeded from ``seed``), each seed's curve faintly behind it; one legend for all
    panels.

    Returns:
        The figure, closed, once written to ``path`` in each of :data:`FORMATS`.
    """
    plt = _pyplot()
    from rliable import library as rly
    from rliable import metrics

    colors = method_colors(methods)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    plotted, seeds = [], {}
    for ax, task in zip(axes[0], tasks):
        for method in methods:
            curves = [_online_curve(r) for r in runs if r.method == method and r.task == task]
            curves = [c for c in curves if c]
            if not curves:
                continue
            frames = sorted(set.intersection(*(set(c) for c in curves)))
            if not frames:
                continue
            seeds[f"{method} on {task}"] = len(curves)
            plotted.append(method)
            color = colors[method]
            scores = np.array([[c[f] for f in frames] for c in curves])  # [seeds, frames]
            ax.plot(frames, scores.mean(0), marker="o", ms=3, color=color, label=method)
            for curve in curves:  # each seed, faintly behind the mean
                ax.plot(list(curve), list(curve.values()), color=color, lw=0.7, alpha=0.3)
            if len(curves) > 1:
                data = {str(i): scores[:, i : i + 1] for i in range(len(frames))}
                _, ci = seeded_bootstrap(
                    f"curve {task} {method}",
                    seed,
                    rly.get_interval_estimates,
                    data,
                    metrics.aggregate_mean,
                    reps=max(200, reps // 10),
                )
                lo = np.array([ci[str(i)][0] for i in range(len(frames))]).ravel()
                hi = np.array([ci[str(i)][1] for i in range(len(frames))]).ravel()
                ax.fill_between(frames, lo, hi, color=color, alpha=0.15, lw=0)
        ax.set_title(task)
        ax.set_xlabel("online env frames (0: the offline policy)")
        ax.set_ylabel(SCORE_LABEL)
        ax.grid(alpha=0.3)
    fig.suptitle(
        "Online fine-tuning: mean over seeds, 95% bootstrap band\n(thin lines: each seed)",
        fontsize=10,
    )
    shown = [m for m in methods if m in plotted]
    _finish(fig, path, handles=_handles(colors, shown), note=few_seeds_note(seeds))
    return fig


def plot_aggregates(matrix, aggregates, path, *, methods=None):
    """IQM and mean final score across tasks per method, with their 95% intervals, into ``path``.

    ``matrix`` is :func:`~torchrl_o3f.analysis.score_matrix`'s (its rows the seeds every task
    has); ``aggregates`` is :func:`~torchrl_o3f.analysis.analyse`'s: ``{method: {"iqm",
    "mean", "ci"}}`` on the 0-1 scale, drawn on the 0-100 one. ``methods`` (default: the
    matrix's) fixes the colours and the order, top to bottom.

    Returns:
        The figure, closed, once written to ``path`` in each of :data:`FORMATS`.
    """
    plt = _pyplot()

    colors = method_colors(methods or list(matrix))
    shown = [m for m in colors if m in matrix]
    fig, axes = plt.subplots(1, 2, figsize=(8, 0.5 * len(shown) + 1.6))
    for ax, (k, name) in zip(axes, ((0, "IQM"), (1, "Mean"))):
        for i, m in enumerate(shown):
            ci = np.asarray(aggregates[m]["ci"]) * 100
            point = aggregates[m]["iqm" if k == 0 else "mean"] * 100
            ax.plot([ci[0][k], ci[1][k]], [i, i], lw=6, alpha=0.6, color=colors[m])
            ax.plot([point], [i], "k|", ms=12)
        ax.set_yticks(range(len(shown)), shown if k == 0 else [""] * len(shown))
        ax.set_ylim(len(shown) - 0.5, -0.5)  # the first method on top
        ax.set_xlabel(f"{name} {SCORE_LABEL}")
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(
        "Final score across tasks: point estimate and 95% stratified-bootstrap CI", fontsize=10
    )
    note = few_seeds_note({m: len(matrix[m]) for m in shown}, unit="seeds on every task")
    _finish(fig, path, note=note)
    return fig


def plot_profiles(matrix, path, *, reps, seed, methods=None):
    """The performance profiles (rliable) of ``matrix`` (final scores, 0-1 scale) into ``path``.

    Drawn on the 0-100 scale with 95% stratified-bootstrap bands; ``methods`` (default: the
    matrix's) fixes the colours and the legend's order.

    Returns:
        The figure, closed, once written to ``path`` in each of :data:`FORMATS`.
    """
    plt = _pyplot()
    from rliable import library as rly
    from rliable import plot_utils

    colors = method_colors(methods or list(matrix))
    shown = [m for m in colors if m in matrix]
    scores = {m: matrix[m] * 100 for m in shown}
    top = max(100.0, max(float(v.max()) for v in scores.values()))
    taus = np.linspace(0.0, top, 41)
    profiles, cis = seeded_bootstrap(
        "profiles", seed, rly.create_performance_profile, scores, taus, reps=max(200, reps // 10)
    )
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    plot_utils.plot_performance_profiles(
        profiles,
        taus,
        performance_profile_cis=cis,
        ax=ax,
        colors={m: colors[m] for m in shown},
        xlabel=rf"{SCORE_LABEL} $\tau$",
        ylabel=r"fraction of runs with score $> \tau$",
        labelsize="medium",
        ticklabelsize="small",
    )
    fig.suptitle("Performance profiles: final score, 95% stratified-bootstrap band", fontsize=10)
    note = few_seeds_note({m: len(matrix[m]) for m in shown}, unit="seeds on every task")
    _finish(fig, path, handles=_handles(colors, shown), note=note)
    return fig


def plot_overestimation(runs, methods, tasks, path, *, paper: float | None = None):
    """The critic's over-estimation per online episode into ``path``, one panel per task.

    Each method's mean over seeds of the episode's mean Q over its Monte-Carlo return; with
    ``paper`` (the paper's value) that value is drawn and the first :data:`EARLY_EPISODES`
    shaded.

    Returns:
        The figure, closed, once written to ``path`` in each of :data:`FORMATS`.
    """
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    colors = method_colors(methods)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    references, shown, seeds = {}, [], {}
    for ax, task in zip(axes[0], tasks):
        plotted = [1.0]
        for method in methods:
            series, n = defaultdict(list), 0
            for r in runs:
                if r.method != method or r.task != task:
                    continue
                n += any("online/q_overestimation" in row for row in r.episodes)
                for i, row in enumerate(r.episodes):
                    ratio = row.get("online/q_overestimation")
                    if ratio is not None and np.isfinite(ratio):
                        series[i].append(ratio)
            if series:
                idx = sorted(series)
                means = [float(np.mean(series[i])) for i in idx]
                plotted += means
                ax.plot(idx, means, marker="o", ms=3, color=colors[method], label=method)
                shown.append(method)
                seeds[f"{method} on {task}"] = n
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        if paper is not None:  # the claims' reference and the window of their early mean
            references["paper"] = ax.axhline(
                paper, color="r", lw=0.8, ls=":", label=f"the paper: ~{paper:g}x"
            )
            references["window"] = ax.axvspan(
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
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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
    title = "Critic over-estimation per online episode\n(mean over seeds; 1 = exact)"
    fig.suptitle(title, fontsize=10)
    handles = _handles(colors, [m for m in methods if m in shown]) + list(references.values())
    _finish(fig, path, handles=handles, note=few_seeds_note(seeds))
    return fig
