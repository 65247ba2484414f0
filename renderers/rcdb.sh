#!/usr/bin/env bash
# RCDB-1k as published: 1,000 classes x 1,000 images, 512 px, gray contours on white; per class
# V ~ Exp(mean 100) with 2 < V <= 200, L ~ U{1..200}, P ~ U(0, 4), w ~ U(0, 0.1); per instance
# radius ~ U{0..100}, oval rates ~ U(1, 2) and centre (512 + U{-400..400}) / 2 redrawn.
#   OUT=data/RCDB-1k WORKERS=16 renderers/rcdb.sh [extra fdsl render options]
# RCDB-21k: add --classes 21000 (and --format wds for shards).
set -euo pipefail
source "$(dirname "$0")/_fdsl.sh"
$FDSL render rcdb --out "${OUT:-data/RCDB-1k}" --classes 1000 --instances 1000 --size 512 \
  --vertex-num 200 --perlin-min 0 --perlin-max 4 --line-width 0.1 --radius-min 0 --radius-max 100 \
  --line-num-min 1 --line-num-max 200 --oval-rate 2 --start-pos 400 --workers "$WORKERS" "$@"
