#!/usr/bin/env bash
# Downloads, on a machine with network, the wheels that benchmarks/gpu_check.sh --wheels DIR
# installs on a GPU machine without one: every runtime dependency of the package that such a
# machine's python lacks (it has torch, numpy, h5py, scipy, matplotlib, pandas, pyyaml, tqdm),
# at the versions of this project's virtual environment, for the GPU machine's python
# (about 30 MB: carried with the repository, which the GPU machine's copy limits to 64 MB).
#
#   bash .ci/in-venv bash benchmarks/gpu_wheels.sh [DIR] [PYTHON_VERSION]   # .gpu-wheels, 3.12
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$root/.gpu-wheels}"
pyver="${2:-3.12}"
mkdir -p "$dir"
reqs="$(python - <<'PY'
import importlib.metadata as md
import re

# what the GPU machine's python already has (and torch's own dependencies)
HAVE = {
    "torch", "numpy", "h5py", "scipy", "matplotlib", "pandas", "pyyaml", "tqdm", "onnx",
    "onnxruntime", "triton", "sympy", "networkx", "jinja2", "filelock", "fsspec", "mpmath",
    "markupsafe", "setuptools", "pillow", "python-dateutil", "six", "packaging", "pytz",
    "tzdata", "contourpy", "cycler", "fonttools", "kiwisolver", "pyparsing", "protobuf",
    "typing-extensions", "torchrl-o3f",
}
# the check runs MuJoCo locomotion only: the robotics envs (antmaze, kitchen; 26 MB) stay out
SKIP = {"gymnasium-robotics"}


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


seen, todo = {}, ["torchrl-o3f"]
while todo:
    m = re.match(r"([A-Za-z0-9_.\-]+)\s*(\[([^\]]*)\])?", todo.pop())
    name, extras = norm(m.group(1)), (m.group(3) or "").split(",")
    if name.startswith("nvidia-") or name in seen or name in SKIP:
        continue
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        continue  # an optional dependency of another platform or python
    if name not in HAVE:
        seen[name] = dist.version
    for req in dist.requires or []:
        spec, _, marker = req.partition(";")
        if "extra" in marker and not any(f'"{e.strip()}"' in marker for e in extras if e):
            continue
        todo.append(spec.strip())
print("\n".join(f"{k}=={v}" for k, v in sorted(seen.items())))
PY
)"
echo "[gpu_wheels] $(echo "$reqs" | wc -l) packages for python $pyver into $dir" >&2
for req in $reqs; do
  python -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version "$pyver" --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 -d "$dir" "$req" 2>/dev/null \
    || python -m pip wheel -q --disable-pip-version-check --no-deps -w "$dir" "$req" \
    || { echo "[gpu_wheels] no wheel for $req" >&2; exit 1; }  # e.g. a pure-python sdist: built
done
du -sh "$dir" >&2
