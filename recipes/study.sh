#!/usr/bin/env bash
# The committed CPU-scale study (docs/results.md), resumable: runs the paper's experiments as
# sweeps in order of what they show, then copies each finished run's record (config.yaml,
# evaluations.csv, metrics.jsonl, summary.json; no checkpoints) into docs/results/sweep/study and
# re-runs the analysis of every experiment. Stop it at any time; run it again to go on.
#
#   bash recipes/study.sh                 # all of it, 2 parallel runs (about 8 hours on 2 cores)
#   N_JOBS=1 bash recipes/study.sh        # leave a core free
#   bash recipes/study.sh collect         # only copy the finished records and analyse
#
# Runs (with their shared offline phases and checkpoints) live in $STUDY_ROOT (default: studies/);
# the records already committed are copied there first, so their runs are not redone.
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
  for exp in fig5_exploration fig4_baselines fig5_lapo fig6_omega fig2_switch fig3_loosening; do
    python -m torchrl_o3f.analysis "$committed/$budget" --experiment "$exp" \
      --out "docs/results/$exp" || echo "[study] $exp: nothing to analyse yet" >&2
  done
}

sweep() {  # sweep <experiment> <tasks>
  echo "[study] $(date -u +%FT%TZ) $1 on $2" >&2
  python recipes/sweep.py experiment="$1" study_root="$study_root" \
    hydra.launcher.n_jobs="$n_jobs" "hydra.sweeper.params.task=$2"
  collect
}

if [ "${1:-}" = collect ]; then collect; exit 0; fi
seed_committed
# Figures 2, 3, 4 (CQL, AWAC), 6 and 5 (LAPO) on halfcheetah-medium first, then the other tasks.
sweep fig4_baselines halfcheetah-medium
sweep fig2_switch halfcheetah-medium
sweep fig6_omega halfcheetah-medium
sweep fig5_exploration halfcheetah-medium
sweep fig3_loosening halfcheetah-medium
sweep fig5_lapo halfcheetah-medium
sweep fig5_exploration hopper-medium
sweep fig4_baselines hopper-medium
sweep fig5_exploration pointmaze-umaze
sweep fig4_baselines pointmaze-umaze
echo "[study] $(date -u +%FT%TZ) done" >&2
