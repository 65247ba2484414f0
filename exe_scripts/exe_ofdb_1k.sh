#!/usr/bin/env bash
# ICCV 2023 OFDB: build 2D-OFDB-1k (one image for each of 1,000 FractalDB categories), pre-train ViT-Tiny on it
# with the published pre-train.sh recipe (the 1p-frac recipe: 8 GPUs x 32, 80,000 epochs, strong augmentation),
# then fine-tune on CIFAR-10 with finetuning.sh (8 GPUs x 96, 1,000 epochs, SGD 0.01 scaled by batch / 512).
# OFDB=3d builds 3D-OFDB-1k (one view of each 3D fractal category) instead.
#   FT_DATA=/PATH/TO/CIFAR10 bash exe_scripts/exe_ofdb_1k.sh
#   LAUNCHER=torchrun ... | LAUNCHER=none NGPUS=1 ... | STAGES="pretrain finetune" ... | DRY_RUN=1 ...
# Every variable below can be set from the environment; launcher settings are listed in _pipeline.sh.
set -euo pipefail
NGPUS=${NGPUS:-8}                 # pre-training processes (one per GPU), and per node
NPERNODE=${NPERNODE:-4}
FT_NGPUS=${FT_NGPUS:-8}           # fine-tuning processes, and per node
FT_NPERNODE=${FT_NPERNODE:-4}
OFDB=${OFDB:-2d}                  # 2d | 3d
CLASSES=${CLASSES:-1000}          # categories, one image each
INSTANCES=${INSTANCES:-1}
FORMAT=${FORMAT:-png}             # png | wds | onthefly
SHARD_SIZE=${SHARD_SIZE:-1000}
DB_DIR=${DB_DIR:-./data/${OFDB^^}-OFDB-$CLASSES}
FT_DATA=${FT_DATA:-/PATH/TO/CIFAR10}    # train/<class>/ and val/<class>/
FT_NAME=${FT_NAME:-CIFAR10}
FT_CLASSES=${FT_CLASSES:-10}
MODEL=${MODEL:-vit_tiny_patch16_224}
PRE_EPOCHS=${PRE_EPOCHS:-80000}
FT_EPOCHS=${FT_EPOCHS:-1000}
BATCH=${BATCH:-32}                # per process, pre-training
FT_BATCH=${FT_BATCH:-96}          # per process, fine-tuning
PRE_CONFIG=${PRE_CONFIG:-configs/pretrain_1pfrac.yaml}
FT_CONFIG=${FT_CONFIG:-configs/finetune_cifar10.yaml}
OUTPUT=${OUTPUT:-./output}
source "$(dirname "$0")/_pipeline.sh"

case "$OFDB" in
  2d) DATABASE=ofdb2d; IMAGES=$DB_DIR ;;
  3d) DATABASE=ofdb3d; IMAGES=$DB_DIR/image ;;
  *) fail "unknown OFDB=$OFDB (use 2d or 3d)" ;;
esac
PRE_EXP=pretrain_${MODEL}_${OFDB}-ofdb-${CLASSES}
FT_EXP=finetune_${MODEL}_${FT_NAME}_from_${OFDB}-ofdb-${CLASSES}
PRETRAINED=${PRETRAINED:-$OUTPUT/pretrain/$PRE_EXP/last.pth.tar}
need_finetune_data "$FT_DATA"
need_checkpoint "$PRETRAINED"

if [ "$DATABASE" = ofdb2d ]; then
  render_db ofdb2d "$DB_DIR"
elif stage render && [ "$FORMAT" != onthefly ]; then   # no published 3D-OFDB build script: the fdsl defaults
  wds=()
  [ "$FORMAT" = wds ] && wds=(--format wds --shard-size "$SHARD_SIZE")
  run ${FDSL} render ofdb3d --out "$DB_DIR" --classes "$CLASSES" --instances "$INSTANCES" --workers "$WORKERS" \
    "${wds[@]}" "${RENDER_EXTRA[@]}"
fi
pretrain_data "$DATABASE" "$IMAGES" "$DB_DIR"
pretrain "${PRE_DATA[@]}" --config "$(in_repo "$PRE_CONFIG")" --model "$MODEL" --num-classes "$CLASSES" \
  --epochs "$PRE_EPOCHS" --batch-size "$BATCH" --output "$OUTPUT/pretrain" --experiment "$PRE_EXP" --resume auto
finetune "$FT_DATA" --config "$(in_repo "$FT_CONFIG")" --model "$MODEL" --num-classes "$FT_CLASSES" \
  --epochs "$FT_EPOCHS" --batch-size "$FT_BATCH" --pretrained-path "$PRETRAINED" \
  --output "$OUTPUT/finetune" --experiment "$FT_EXP" --resume auto
