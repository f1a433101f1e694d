"""Learning-curve plots and evaluation tables written at the end of a run."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from torchrl_o3f.data.scores import SCORE_LABELS

__all__ = ["plot_learning_curve", "write_evaluations"]


def write_evaluations(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """Write evaluation rows (dicts with the same keys) as a CSV file."""
    path = Path(path)
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return path


def plot_learning_curve(
    rows: Sequence[dict],
    path: str | os.PathLike,
    *,
    title: str = "",
    labels: Sequence[str] | None = None,
    runs: Sequence[Sequence[dict]] | None = None,
    score_label: str = SCORE_LABELS["return"],
) -> Path:
    """Plot the normalised score of a run: offline against gradient steps, online against frames.

    One panel per phase, each with its own x unit (offline: gradient steps; online: env
    frames, the first point being the offline policy), sharing the y axis. The line is the
    mean score over the evaluation episodes of each evaluation and the band +-1 std over those
    episodes (the legend gives their number): the spread of one policy's episodes, not a
    confidence interval over seeds. Give ``runs`` (a list of evaluation-row lists) and
    ``labels`` to overlay several runs.

    Example:
        >>> import tempfile, os
        >>> rows = [{"phase": "offline", "step": 0, "frames": 0, "score": 1.0, "score_std": 0.5},
        ...         {"phase": "online", "step": 10, "frames": 5, "score": 2.0, "score_std": 0.1}]
        >>> p = plot_learning_curve(rows, os.path.join(tempfile.mkdtemp(), "c.png"))
        >>> p.exists()
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [list(r) for r in (runs if runs is not None else [rows])]
    labels = list(labels) if labels is not None else [None] * len(runs)
    has_online = any(r["phase"] == "online" for run in runs for r in run)
    fig, axes = plt.subplots(
        1, 2 if has_online else 1, figsize=(10 if has_online else 6, 4), sharey=True, squeeze=False
    )
    axes = axes[0]
    for i, (run, label) in enumerate(zip(runs, labels)):
        if not run:
            continue
        color = f"C{i}"
        episodes = run[-1].get("eval_episodes")
        name = label or "policy"
        band = f" (band: +-1 std over {episodes} episodes)" if episodes else " (band: +-1 std)"
        offline = [r for r in run if r["phase"] == "offline"]
        online = [r for r in run if r["phase"] == "online"]
        if online and offline:
            online = [offline[-1] | {"frames": 0}] + online  # the online phase starts from it
        for ax, part, key in ((axes[0], offline, "step"), (axes[-1], online, "frames")):
            if not part or (key == "frames" and not has_online):
                continue
            x = [r[key] for r in part]
            y = [r["score"] for r in part]
            sd = [r.get("score_std", 0.0) for r in part]
            ax.plot(x, y, marker="o", ms=3, color=color, label=name + band)
            ax.fill_between(
                x,
                [a - b for a, b in zip(y, sd)],
                [a + b for a, b in zip(y, sd)],
                color=color,
                alpha=0.2,
            )
    axes[0].set_xlabel("offline gradient steps")
    axes[0].set_title("offline phase")
    axes[0].set_ylabel(score_label)
    if has_online:
        axes[-1].set_xlabel("online env frames")
        axes[-1].set_title("online phase")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
