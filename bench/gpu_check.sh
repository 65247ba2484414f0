#!/usr/bin/env bash
# The first command on a GPU machine: every CUDA path of fdsl once, at most 7 minutes (see bench/gpucheck/).
#   bash bench/gpu_check.sh --wheels .whl   # on the GPU: install the wheels built by bench/gpu_wheels.sh, then run
#   bash bench/gpu_check.sh --dry-run       # on a CPU: the same command lines at toy sizes
#   bash bench/gpu_check.sh --list          # the steps and their caps
# --wheels DIR installs DIR/*.whl (no index, no dependencies) into a folder of its own on PYTHONPATH: the GPU
# machine has no network, and its python3 lacks webdataset and isal (fdsl runs without them, but slower).
set -eo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3 || command -v python)}"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels)
      [ -d "${2:-}" ] || { echo "gpu_check.sh: --wheels needs a folder of .whl files (bench/gpu_wheels.sh makes one)" >&2; exit 2; }
      site="${TMPDIR:-/tmp}/fdsl-gpu-site"
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$2"/*.whl
      export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
      shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m bench.gpucheck "${args[@]}"
