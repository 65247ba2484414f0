#!/usr/bin/env bash
# VisualAtom-1k as published: 1,000 classes x 1,000 images, 512 px, gray contours on black; per class
# V ~ U{200..1000}, L ~ U{1..200}, P ~ U(0, 4), w ~ U(0, 0.1), r ~ U{10..60}, wave frequencies
# n1, n2 ~ U{0..20} (n1 != n2 unless n1 = 0), oval rates ~ U(1, 2); per instance the centre
# (512 + U{-512..512}) / 2 is redrawn. Images go to <OUT>/<class>/; add --layout trainer for the
# <OUT>/image/<class>/ layout the pre-training scripts read.
#   OUT=data/VisualAtom-1k WORKERS=16 renderers/visualatom.sh [extra fdsl render options]
# VisualAtom-21k: add --classes 21000 (and --format wds for shards).
set -euo pipefail
source "$(dirname "$0")/_fdsl.sh"
$FDSL render visualatom --out "${OUT:-data/VisualAtom-1k}" --classes 1000 --instances 1000 --size 512 \
  --vertex-num-min 200 --vertex-num 1000 --perlin-min 0 --perlin-max 4 --line-width 0.1 --radius-min 10 \
  --radius-max 60 --line-num-min 1 --line-num-max 200 --oval-rate 2 --start-pos 512 \
  --nami-1-min 0 --nami-1-max 20 --nami-2-min 0 --nami-2-max 20 --workers "$WORKERS" "$@"
