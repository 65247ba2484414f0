#!/usr/bin/env bash
# The small end-to-end pipeline on a laptop CPU (about five minutes on 2 cores, no network): build a small
# FractalDB at 64 px, pre-train a small ViT on it at 32 px, export scikit-learn's digits to an image folder, fine-tune from
# the pre-trained checkpoint and from scratch, print both accuracies. The recipe is exe_scripts/_digits.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo_out}
source exe_scripts/_digits.sh
mkdir -p "$OUT"
echo "== building FractalDB: 100 categories x 40 images, 64 px, trained at 32 px (and a 1p-frac preview)"
small_db fractaldb "$OUT/fractaldb"   # a re-run skips the finished classes
fdsl preview "$OUT/fractaldb" --out "$OUT/fractaldb_preview.png" --tile 64
fdsl render onepfrac --out "$OUT/1p-frac" --classes 64 --size 128 --iterations 50000 --workers 2 --no-progress
fdsl preview "$OUT/1p-frac" --out "$OUT/1p-frac_preview.png" --classes 64
echo "previews: $OUT/fractaldb_preview.png $OUT/1p-frac_preview.png"
bash exe_scripts/demo_train.sh "$OUT/fractaldb" "$OUT"
