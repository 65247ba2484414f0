#!/usr/bin/env bash
# ExFractalDB-1k as published: 1,000 3D IFS categories searched at per-axis variance 0.05 over
# 10,000 points; per class 145 point clouds (identity + 12 parameters x 12 scalings 0.4..1.6),
# each seen from random viewpoints (perspective, 45 degree FOV, distance 4) as white 1-px points
# on black at 224 px; 1,000 images per class. Software renderer: no GPU or display needed.
#   OUT=data/ExFractalDB-1k WORKERS=16 renderers/exfractaldb.sh [extra fdsl render options]
# ExFractalDB-21k: add --classes 21000. Point clouds as PLY: add --save-ply.
set -euo pipefail
source "$(dirname "$0")/_fdsl.sh"
$FDSL render exfractaldb --out "${OUT:-data/ExFractalDB-1k}" --classes 1000 --instances 1000 --size 224 \
  --variance 0.05 --points 10000 --point-instances 145 --views 7 --workers "$WORKERS" "$@"
