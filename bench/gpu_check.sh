#!/usr/bin/env bash
# The first command on a GPU machine: every CUDA path of fdsl once, at most 8 minutes (see fdsl/gpucheck.py).
#   bench/gpu_check.sh              # on the GPU; prints a table and writes gpu_check.json
#   bench/gpu_check.sh --dry-run    # on a CPU, toy sizes
cd "$(dirname "$0")/.." && PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python}" -m fdsl.gpucheck "$@"
