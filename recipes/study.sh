#!/usr/bin/env bash
# The committed CPU-scale study (docs/results.md), resumable: runs the paper's experiments as
# sweeps in order of what they show, then copies each finished run's record (config.yaml,
# evaluations.csv, metrics.jsonl, summary.json; no checkpoints) into docs/results/sweep/study and
# re-runs the analysis of every experiment (docs/results/<experiment>/, docs/results/claims.md).
# Stop it at any time; run it again to go on.
#
#   bash recipes/study.sh                 # all of it, 2 parallel runs (about 7 hours on 2 cores)
#   N_JOBS=1 bash recipes/study.sh        # leave a core free
#   bash recipes/study.sh collect         # only copy the finished records and analyse
#
# Runs (with their shared offline phases and checkpoints) live in $STUDY_ROOT (default: studies/);
# the records already committed are copied there first, so their runs are not redone. Every run
# uses 1 thread whatever N_JOBS is: the thread count changes the order of float reductions, so
# runs at another count would train other offline phases and no longer be paired by seed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
study_root="${STUDY_ROOT:-studies}"
n_jobs="${N_JOBS:-2}"
committed=docs/results/sweep
budget=study
records=(config.yaml evaluations.csv metrics.jsonl summary.json)

seed_committed() {  # the committed finished runs, so that the sweep skips them
  mkdir -p "$study_root/$budget"
  (cd "$committed/$budget" && find . -name summary.json -printf '%h\n') | while read -r run; do
    if [ ! -f "$study_root/$budget/$run/summary.json" ]; then
      mkdir -p "$study_root/$budget/$run"
      for f in "${records[@]}"; do cp -p "$committed/$budget/$run/$f" "$study_root/$budget/$run/"; done
    fi
  done
}

collect() {  # the finished runs' records into the committed study, then every experiment's analysis
  (cd "$study_root/$budget" && find . -path ./offline -prune -o -name summary.json -printf '%h\n') \
    | while read -r run; do
      mkdir -p "$committed/$budget/$run"
      for f in "${records[@]}"; do cp -p "$study_root/$budget/$run/$f" "$committed/$budget/$run/"; done
    done
  python -m torchrl_o3f.analysis "$committed/$budget" --all --out docs/results
}

sweep() {  # sweep <experiment> <tasks> [<methods>]
  echo "[study] $(date -u +%FT%TZ) $1 on $2 ${3:-}" >&2
  local methods=()
  # quoted: a bare a,b,c on the command line would be a sweep over the hydra key itself
  if [ -n "${3:-}" ]; then methods=("hydra.sweeper.params.method='$3'"); fi
  python recipes/sweep.py experiment="$1" study_root="$study_root" threads=1 \
    hydra.launcher.n_jobs="$n_jobs" "hydra.sweeper.params.task='$2'" "${methods[@]}"
  collect
}

if [ "${1:-}" = collect ]; then collect; exit 0; fi
seed_committed
hc=halfcheetah-medium
# The cheap IQL-family comparisons first (a few core-minutes a run), then AWAC and LAPO, then
# CQL (its conservative term makes a run about 20 core-minutes at this budget).
sweep fig6_omega $hc
sweep fig5_exploration $hc
sweep fig5_exploration hopper-medium
sweep fig5_exploration pointmaze-umaze
sweep fig3_loosening $hc iql,iql_abrupt,iql_linear,awac,awac_abrupt,awac_linear
sweep fig4_baselines $hc,hopper-medium,pointmaze-umaze o3f_iql,iql,awac
sweep fig5_lapo $hc
sweep fig2_switch $hc
sweep fig3_loosening $hc
sweep fig4_baselines $hc,hopper-medium,pointmaze-umaze
sweep obs_norm $hc,hopper-medium
echo "[study] $(date -u +%FT%TZ) done" >&2
