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

seed_committed() {  # the committed finished runs, so that the sweeps skip them
  copy_records "$committed/$budget" "$study_root/$budget" keep
  copy_records "$committed/obs_norm/$budget" "$study_root/obs_norm/$budget" keep
}

copy_records() {  # copy_records <from> <to> [keep]: every finished run's record
  [ -d "$1" ] || return 0
  (cd "$1" && find . -path ./offline -prune -o -name summary.json -printf '%h\n') \
    | while read -r run; do
      if [ -n "${3:-}" ] && [ -f "$2/$run/summary.json" ]; then continue; fi  # keep: not over
      mkdir -p "$2/$run"
      for f in "${records[@]}"; do cp -p "$1/$run/$f" "$2/$run/"; done
    done
}

collect() {  # the finished runs' records into the committed study, then every analysis
  copy_records "$study_root/$budget" "$committed/$budget"
  copy_records "$study_root/obs_norm/$budget" "$committed/obs_norm/$budget"
  python -m torchrl_o3f.analysis "$committed/$budget" --all --out docs/results
  # the package's own question, not a claim of the paper: normalised observations for O3F-IQL
  if [ -d "$committed/obs_norm/$budget" ]; then
    python -m torchrl_o3f.analysis "$committed/obs_norm/$budget" --experiment obs_norm \
      --out docs/results/obs_norm
  fi
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
# O3F-IQL with and without normalised observations, in a study root of its own: both methods
# run afresh, so the comparison is of runs from one machine and one version of the code
echo "[study] $(date -u +%FT%TZ) obs_norm" >&2
python recipes/sweep.py experiment=obs_norm study_root="$study_root/obs_norm" threads=1 \
  hydra.launcher.n_jobs="$n_jobs"
collect
echo "[study] $(date -u +%FT%TZ) done" >&2
