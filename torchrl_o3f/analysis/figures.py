"""The figures of an experiment: curves, aggregates, profiles, over-estimation."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from torchrl_o3f.analysis.measures import EARLY_EPISODES
from torchrl_o3f.analysis.runs import RunRecord, eval_step, last_score
from torchrl_o3f.analysis.stats import seeded_bootstrap


def _online_curve(run: RunRecord) -> dict[int, float]:
    """Score per online frame, starting at frame 0 with the policy the offline phase handed over."""
    online = {eval_step(e): float(e["score"]) for e in run.evaluations if e["phase"] == "online"}
    start = last_score(run, "offline")
    if online and start is not None:
        online.setdefault(0, start)
    return dict(sorted(online.items()))


def plot_curves(runs, methods, tasks, path, *, reps, seed) -> None:
    """Score over online frames per task into ``path``, one panel per task.

    Each method's mean over seeds with its 95% bootstrap band (``reps // 10`` repetitions, at
    least 200, seeded from ``seed``), each seed's curve faintly behind it.
    """
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


def plot_aggregates(matrix, aggregates, path) -> None:
    """IQM and mean final score across tasks per method, with their 95% intervals, into ``path``.

    ``aggregates`` is :func:`~torchrl_o3f.analysis.analyse`'s: ``{method: {"iqm", "mean",
    "ci"}}`` on the 0-1 scale.
    """
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


def plot_profiles(matrix, path, *, reps, seed) -> None:
    """The performance profiles (rliable) of ``matrix`` (final scores, 0-1 scale) into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library as rly
    from rliable import plot_utils

    top = max(1.0, max(float(v.max()) for v in matrix.values()))
    taus = np.linspace(0.0, top, 41)
    profiles, cis = seeded_bootstrap(
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


def plot_overestimation(runs, methods, tasks, path, *, paper: float | None = None) -> None:
    """The critic's over-estimation per online episode into ``path``, one panel per task.

    Each method's mean over seeds of the episode's mean Q over its Monte-Carlo return; with
    ``paper`` (the paper's value) that value is drawn and the first :data:`EARLY_EPISODES`
    shaded.
    """
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
