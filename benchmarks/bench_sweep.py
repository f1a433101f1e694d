"""Two runs on this machine's cores: one after the other (torch's default threads) against two
in parallel through the sweep's joblib launcher (one thread each, passive OpenMP waiting).

    python benchmarks/bench_sweep.py --offline-steps 600 --online-frames 300

Both arms run the same two-seed `smoke` experiment with the given budget in fresh study folders
(datasets prebuilt, so neither arm pays for them); wall time of the whole sweep command.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep(root: Path, dataset_root: str, args, *extra: str) -> float:
    cmd = [
        sys.executable,
        str(ROOT / "recipes" / "sweep.py"),
        "experiment=smoke",
        "hydra.sweeper.params.method=o3f_iql",
        f"study_root={root}",
        f"dataset_root={dataset_root}",
        f"budget.offline_steps={args.offline_steps}",
        f"budget.online_frames={args.online_frames}",
        "budget.eval_every=100000",
        *extra,
    ]
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",)}
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=root)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(res.stderr[-3000:])
    return wall


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--offline-steps", type=int, default=600)
    p.add_argument("--online-frames", type=int, default=300)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()
    cores = os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "datasets")
        sweep(Path(tmp) / "warm", data, args, "hydra/launcher=basic", "budget.offline_steps=1")
        rows = []
        for r in range(args.rounds):
            seq = Path(tmp) / f"seq{r}"
            par = Path(tmp) / f"par{r}"
            seq.mkdir()
            par.mkdir()
            t_seq = sweep(seq, data, args, "hydra/launcher=basic", f"threads={cores}")
            t_par = sweep(par, data, args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
            rows.append((t_seq, t_par))
    load = os.getloadavg()[0]
    print(f"cores {cores}, load average {load:.2f}, budget {args.offline_steps} offline steps + "
          f"{args.online_frames} online frames per run, 2 runs")
    print("| arm | wall time (s) | ratio |")
    print("|---|---|---|")
    for t_seq, t_par in rows:
        print(f"| one after the other, {cores} threads each | {t_seq:.1f} | 1.00 |")
        print(f"| in parallel (joblib, n_jobs=2, 1 thread each) | {t_par:.1f} | "
              f"{t_seq / t_par:.2f}x faster |")


if __name__ == "__main__":
    main()
