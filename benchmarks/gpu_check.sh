#!/usr/bin/env bash
# The one-shot GPU check: the CUDA-marked tests, then benchmarks/bench_compile.py on the GPU
# (every algorithm's update eager / compiled / compiled + CUDA graphs, torchrl's IQLLoss as the
# peer, LAPO's UTD-20 step, the default recipe's offline updates/s and online frames/s with
# compile off and on, O3F against exploration.mode=none, and a paper-budget projection), printed
# as one markdown table and written to $OUT/gpu_check.md (or benchmarks/gpu_check.md).
#
#   bash benchmarks/gpu_check.sh --wheels DIR     # a GPU machine without network (see below)
#   bash benchmarks/gpu_check.sh                  # a GPU machine whose python has the packages
#   bash benchmarks/gpu_check.sh --cpu --quick    # the same script end to end on a CPU
#
# --wheels DIR installs the wheels that benchmarks/gpu_wheels.sh downloaded (torchrl,
# tensordict, gymnasium, mujoco, minari, hydra and their dependencies) beside the machine's own
# torch, into .gpu-site/ (pip --target, --no-deps, --no-index): the machine's torch is kept.
# Other flags go to bench_compile.py (e.g. --algos iql,lapo). About 8 minutes on one H100.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
device=cuda quick=() wheels="" extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) device=cpu ;;
    --quick) quick=(--quick) ;;
    --wheels) wheels="$2"; shift ;;
    *) extra+=("$1") ;;
  esac
  shift
done
if [ -n "$wheels" ]; then
  compgen -G "$wheels/*.whl" >/dev/null || { echo "gpu_check: no wheels in $wheels" >&2; exit 2; }
  "$py" -m pip install -q --disable-pip-version-check --no-index --no-deps \
    --target "$root/.gpu-site" "$wheels"/*.whl || { echo "gpu_check: wheel install failed" >&2; exit 2; }
  export PYTHONPATH="$root/.gpu-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$root:${PYTHONPATH:-}"
"$py" -c "import torch, torchrl, tensordict, gymnasium, minari, torchrl_o3f" \
  || { echo "gpu_check: the package does not import (give --wheels DIR)" >&2; exit 2; }
if [ "$device" = cuda ] && ! "$py" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_check: no CUDA device here; use --cpu to run the check on the CPU" >&2
  exit 2
fi
out="${OUT:-$root/benchmarks}"
mkdir -p "$out"
datasets="$(mktemp -d)"
trap 'rm -rf "$datasets"' EXIT
# the CUDA-marked tests (skipped on a CPU): their summary line is the table's first row
tests="$("$py" -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -1)"
echo "[gpu_check] tests: $tests" >&2
"$py" benchmarks/bench_compile.py --device "$device" "${quick[@]}" --dataset-root "$datasets" \
  --tests "$tests" --out "$out/gpu_check.md" "${extra[@]}"
