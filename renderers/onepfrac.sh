#!/usr/bin/env bash
# 1p-frac as published: one sigma-factor fractal (2 maps, sigma 4.0), 1,000 perturbations
# (delta 0.1) = 1,000 classes of one image; 512 px, 100k points, patch_gray, pixel threshold 0.05.
#   OUT=data/1p-frac renderers/onepfrac.sh [--delta 0.01 | --base-csv FILE | ...]
set -euo pipefail
source "$(dirname "$0")/_fdsl.sh"
$FDSL render onepfrac --out "${OUT:-data/1p-frac}" --classes 1000 --num-maps 2 --sigma 4.0 --delta 0.1 \
  --size 512 --iterations 100000 --pixel-threshold 0.05 --workers "$WORKERS" "$@"
