#!/usr/bin/env bash
# FractalDB-1k as published: 1,000 categories searched at filling rate 0.2; per class 25 weight rows
# (interval 0.1) x 10 patch draws x 4 flips = 1,000 images; 362 px, 200k points, patch_gray.
#   OUT=data/FractalDB-1k WORKERS=16 renderers/fractaldb.sh [extra fdsl render options]
# FractalDB-10k: add --classes 10000.  Official categories: add --csv-dir DIR_OF_CSVS.
set -euo pipefail
source "$(dirname "$0")/_fdsl.sh"
$FDSL render fractaldb --out "${OUT:-data/FractalDB-1k}" --classes 1000 --instances 1000 --weight-interval 0.1 \
  --size 362 --iterations 200000 --draw-type patch_gray --fill-rate 0.2 --workers "$WORKERS" "$@"
