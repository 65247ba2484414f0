#!/usr/bin/env bash
# The wheels the GPU machine lacks, for its Python 3.12 on x86-64 Linux, into one folder that travels with the
# checkout (at most 64 MiB with everything else): `bash bench/gpu_wheels.sh [DIR]` (default .whl), then on the
# GPU machine `bash bench/gpu_check.sh --wheels DIR`. faiss-gpu (135 MB) cannot travel: the check times fdsl's
# torch k-means instead and reports faiss-gpu as n/a. wandb stays behind too: runs default to offline logging
# and the check disables it.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-.whl}"
LIMIT_MIB="${LIMIT_MIB:-64}"
# name==version: what fdsl imports where it is there (webdataset for remote shards, isal for the fast deflate)
WHEELS=(webdataset==1.0.2 braceexpand==0.1.7 isal==1.9.1)
PY="${PYTHON:-$(command -v python3 || command -v python)}"
mkdir -p "$DIR"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --platform any -d "$DIR" "${WHEELS[@]}"
size_kib=$(du -sk "$DIR" | cut -f1)
printf '%s: %s wheels, %s KiB\n' "$DIR" "$(ls "$DIR"/*.whl | wc -l)" "$size_kib"
if [ "$size_kib" -gt $((LIMIT_MIB * 1024)) ]; then
  echo "gpu_wheels.sh: $DIR is over ${LIMIT_MIB} MiB; it cannot travel to the GPU machine" >&2
  exit 1
fi
