"""Exploration study: O3F vs Gaussian noise (same sigma) vs the policy alone, fairly compared.

One offline phase, then one online phase per exploration mode, each started from the SAME
phase-boundary checkpoint (``offline_checkpoint=``), per seed. Writes a markdown table and an
overlaid learning-curve PNG.

    python benchmarks/study_exploration.py --task halfcheetah-medium --budget cpu \
        --offline-checkpoint outputs/<run>/checkpoints/offline.pt --out docs/study

Without ``--offline-checkpoint`` the offline phase runs first (once per seed).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from torchrl_o3f.trainers import BUDGETS, OfflineOnlineTrainer, TrainerConfig, plot_learning_curve

MODES = ("o3f", "gaussian", "none")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--task", default="halfcheetah-medium")
    p.add_argument("--algo", default="iql")
    p.add_argument("--budget", default="cpu", choices=sorted(BUDGETS))
    p.add_argument("--online-frames", type=int, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--offline-checkpoint", default=None, help="phase-boundary checkpoint (seed 0)")
    p.add_argument("--out", default="outputs/study")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = dataclasses.replace(BUDGETS[args.budget])
    if args.online_frames is not None:
        budget.online_frames = args.online_frames
    results: dict[str, list[dict]] = {m: [] for m in args.modes}
    curves: dict[str, list[dict]] = {}
    for seed in args.seeds:
        ckpt = args.offline_checkpoint if seed == args.seeds[0] else None
        for mode in args.modes:
            run_dir = out / f"{args.algo}-{args.task}-{mode}-seed{seed}"
            cfg = TrainerConfig(
                task=args.task,
                budget=dataclasses.replace(budget),
                seed=seed,
                output_dir=str(run_dir),
                progress=not args.no_progress,
            )
            cfg.algo.name = args.algo
            cfg.exploration.mode = mode
            # the first mode of a seed without a checkpoint runs the offline phase; every other
            # run starts its online phase from that phase-boundary checkpoint
            cfg.offline_checkpoint = ckpt
            summary = OfflineOnlineTrainer(cfg).train()
            if ckpt is None:
                ckpt = str(run_dir / "checkpoints" / "offline.pt")
            results[mode].append(summary)
            with open(run_dir / "evaluations.csv") as f:
                evals = [
                    {
                        k: (float(v) if k != "phase" else v)
                        for k, v in r.items()
                        if v not in ("", None)
                    }
                    for r in csv.DictReader(f)
                ]
            curves[f"{mode} (seed {seed})"] = evals
            print(
                f"{mode:9s} seed {seed}: {summary['score_after_offline']:.1f} -> "
                f"{summary['score_after_online']:.1f}",
                flush=True,
            )

    lines = [
        "| exploration | seeds | score after offline | score after online | change |",
        "|---|---|---|---|---|",
    ]
    for mode, runs in results.items():
        a = np.array([r["score_after_offline"] for r in runs])
        b = np.array([r["score_after_online"] for r in runs])
        lines.append(
            f"| {mode} | {len(runs)} | {a.mean():.1f} | {b.mean():.1f} "
            f"| {b.mean() - a.mean():+.1f} |"
        )
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot_learning_curve(
        [],
        out / "curves.png",
        title=f"{args.algo.upper()} on {args.task}: online exploration modes",
        runs=list(curves.values()),
        labels=list(curves),
    )
    print(table)


if __name__ == "__main__":
    main()
