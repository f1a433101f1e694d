"""Learning-curve plots and evaluation tables written at the end of a run."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

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
) -> Path:
    """Plot normalised score against training progress (offline steps, then online frames).

    The x axis is offline gradient steps followed by online env frames, with the phase
    boundary marked; the shaded band is +-1 std over evaluation episodes. Give ``runs`` (a
    list of evaluation-row lists) and ``labels`` to overlay several runs.

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

    runs = list(runs) if runs is not None else [rows]
    labels = list(labels) if labels is not None else [None] * len(runs)
    fig, ax = plt.subplots(figsize=(7, 4))
    boundary = None
    for run, label in zip(runs, labels):
        if not run:
            continue
        x = [r["step"] + (r["frames"] if r["phase"] == "online" else 0) for r in run]
        y = [r["score"] for r in run]
        s = [r.get("score_std", 0.0) for r in run]
        line = ax.plot(x, y, marker="o", ms=3, label=label)[0]
        ax.fill_between(
            x,
            [a - b for a, b in zip(y, s)],
            [a + b for a, b in zip(y, s)],
            color=line.get_color(),
            alpha=0.2,
        )
        online = [r for r in run if r["phase"] == "online"]
        if online:
            boundary = online[0]["step"]
    if boundary is not None:
        ax.axvline(boundary, color="grey", ls="--", lw=1)
        ax.text(boundary, ax.get_ylim()[1], " online", va="top", color="grey")
    ax.set_xlabel("offline gradient steps, then online env frames")
    ax.set_ylabel("normalised score")
    ax.set_title(title)
    if any(labels):
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
