#!/usr/bin/env bash
# The small end-to-end pipeline on a laptop CPU: build small databases, preview them, and (when the
# training half is present) pre-train on FractalDB and fine-tune on scikit-learn's digits.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo_out}
mkdir -p "$OUT"
echo "== 1/3 FractalDB (20 classes x 40 images, 128 px) and 1p-frac (64 classes, 128 px)"
fdsl render fractaldb --out "$OUT/fractaldb" --classes 20 --instances 40 --size 128 --iterations 50000 --workers 2
fdsl preview "$OUT/fractaldb" --out "$OUT/fractaldb_preview.png"
fdsl render onepfrac --out "$OUT/1p-frac" --classes 64 --size 128 --iterations 50000 --workers 2
fdsl preview "$OUT/1p-frac" --out "$OUT/1p-frac_preview.png" --classes 64
echo "previews: $OUT/fractaldb_preview.png $OUT/1p-frac_preview.png"
