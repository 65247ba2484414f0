#!/usr/bin/env bash
# The demo's training half: pre-train a small ViT on an already-built FractalDB image folder, then fine-tune
# it on scikit-learn's digits, from the pre-trained checkpoint and from scratch, and print both accuracies.
#   usage: bash exe_scripts/demo_train.sh DB_DIR WORK_DIR      (DB_DIR/<class>/*.png, e.g. 32 px gray images)
# About 4-5 minutes on 2 CPU cores. Knobs: PRE_EPOCHS, FT_EPOCHS, SEED.
set -euo pipefail
DB_DIR=${1:?usage: demo_train.sh DB_DIR WORK_DIR}
WORK_DIR=${2:?usage: demo_train.sh DB_DIR WORK_DIR}
PRE_EPOCHS=${PRE_EPOCHS:-8}
FT_EPOCHS=${FT_EPOCHS:-15}
SEED=${SEED:-0}
HERE="$(cd "$(dirname "$0")" && pwd)"
PY=${PYTHON:-python}
export WANDB_MODE=${WANDB_MODE:-disabled} PYTHONUNBUFFERED=1
# DeiT-Tiny's 16 px patches leave 4 tokens at 32 px; 4 px patches and a narrower, shallower ViT leave 64.
MODEL=(--model deit_tiny_patch16_224 --model-kwargs patch_size=4 embed_dim=128 depth=4 num_heads=4 --img-size 32)
OPTIM=(-b 64 --opt adamw --lr 1e-3 --weight-decay 0.05 --sched cosine_iter --warmup-epochs 1 --min-lr 1e-5
       --smoothing 0.1 --scale 0.75 1.0 --ratio 0.9 1.1 --color-jitter 0 -j 1 --log-interval 20 --seed "$SEED")

# the demo owns these three run folders: start them afresh (the engine refuses to overwrite a run otherwise)
rm -rf "$WORK_DIR/runs/pretrain" "$WORK_DIR/runs/finetune_fdsl" "$WORK_DIR/runs/finetune_scratch"

echo "== pre-training on $DB_DIR ($PRE_EPOCHS epochs)"
"$PY" -m fdsl pretrain "$DB_DIR" "${MODEL[@]}" "${OPTIM[@]}" --drop-path 0.1 --hflip 0.5 \
    --epochs "$PRE_EPOCHS" --eval-metric loss --output "$WORK_DIR/runs" --experiment pretrain

echo "== exporting scikit-learn digits"
"$PY" "$HERE/export_digits.py" "$WORK_DIR/digits" --size 32

for START in fdsl scratch; do
  echo "== fine-tuning on digits from $START ($FT_EPOCHS epochs)"
  FROM=()
  [ "$START" = fdsl ] && FROM=(--pretrained-path "$WORK_DIR/runs/pretrain/last.pth.tar")
  "$PY" -m fdsl finetune "$WORK_DIR/digits" "${MODEL[@]}" --crop-pct 1.0 "${OPTIM[@]}" --hflip 0 --num-classes 10 \
      --epochs "$FT_EPOCHS" "${FROM[@]}" --output "$WORK_DIR/runs" --experiment "finetune_$START"
done

echo
"$PY" "$HERE/demo_report.py" "from FDSL pre-training=$WORK_DIR/runs/finetune_fdsl" \
    "from scratch=$WORK_DIR/runs/finetune_scratch"
echo "(pre-training: $(find "$DB_DIR" -mindepth 1 -maxdepth 1 -type d ! -name param | wc -l) classes, $PRE_EPOCHS epochs; fine-tuning: $FT_EPOCHS epochs, seed $SEED)"
