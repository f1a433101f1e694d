"""The command line of ``python -m torchrl_o3f.analysis``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchrl_o3f.analysis.report import analyse, analyse_all, report_run


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
