#!/usr/bin/env bash
# CVPR 2022 exe_exfractaldb_1k.sh: build ExFractalDB-1k (3D fractal point clouds seen from random viewpoints,
# 224 px), pre-train DeiT-Base on it (4 GPUs x 64, 300 epochs), fine-tune on ImageNet-1k (4 GPUs x 64, 300
# epochs) from the pre-training's model_best.pth.tar.
#   FT_DATA=/PATH/TO/IMAGENET bash exe_scripts/exe_exfractaldb_1k.sh
#   LAUNCHER=torchrun ... | LAUNCHER=none NGPUS=1 ... | STAGES="pretrain finetune" ... | DRY_RUN=1 ...
# Every variable below can be set from the environment; launcher settings are listed in _pipeline.sh.
set -euo pipefail
NGPUS=${NGPUS:-4}                 # pre-training processes (one per GPU), and per node
NPERNODE=${NPERNODE:-4}
FT_NGPUS=${FT_NGPUS:-4}           # fine-tuning processes, and per node
FT_NPERNODE=${FT_NPERNODE:-4}
CLASSES=${CLASSES:-1000}          # ExFractalDB classes x images per class
INSTANCES=${INSTANCES:-1000}
FORMAT=${FORMAT:-png}             # png | wds (shards) | onthefly (no files)
SHARD_SIZE=${SHARD_SIZE:-1000}
DB_DIR=${DB_DIR:-./data/ExFractalDB-$CLASSES}
FT_DATA=${FT_DATA:-/PATH/TO/IMAGENET}   # train/<class>/ and val/<class>/
FT_NAME=${FT_NAME:-ImageNet}
FT_CLASSES=${FT_CLASSES:-1000}
MODEL=${MODEL:-base}              # deit_${MODEL}_patch16_224
PRE_EPOCHS=${PRE_EPOCHS:-300}
FT_EPOCHS=${FT_EPOCHS:-300}
BATCH=${BATCH:-64}                # per process
PRE_CONFIG=${PRE_CONFIG:-configs/pretrain_exfractaldb_1k.yaml}
FT_CONFIG=${FT_CONFIG:-configs/finetune_imagenet.yaml}
OUTPUT=${OUTPUT:-./output/${MODEL}/${CLASSES}}
source "$(dirname "$0")/_pipeline.sh"

PRE_EXP=pretrain_deit_${MODEL}_ExFractalDB${CLASSES}_1.0e-3
FT_EXP=finetune_deit_${MODEL}_${FT_NAME}_from_ExFractalDB${CLASSES}_1.0e-3
PRETRAINED=${PRETRAINED:-$OUTPUT/pretrain/$PRE_EXP/model_best.pth.tar}
need_finetune_data "$FT_DATA"
need_checkpoint "$PRETRAINED"

render_db exfractaldb "$DB_DIR"
pretrain_data exfractaldb "$DB_DIR/image" "$DB_DIR"
pretrain "${PRE_DATA[@]}" --config "$(in_repo "$PRE_CONFIG")" --model "deit_${MODEL}_patch16_224" \
  --num-classes "$CLASSES" --epochs "$PRE_EPOCHS" --batch-size "$BATCH" \
  --output "$OUTPUT/pretrain" --experiment "$PRE_EXP" --resume auto
# the published exe_scripts fine-tune without --drop-path and --reprob (scripts/finetune.sh adds them)
finetune "$FT_DATA" --config "$(in_repo "$FT_CONFIG")" --model "deit_${MODEL}_patch16_224" --num-classes "$FT_CLASSES" \
  --epochs "$FT_EPOCHS" --batch-size "$BATCH" --drop-path 0 --reprob 0 \
  --pretrained-path "$PRETRAINED" \
  --output "$OUTPUT/finetune" --experiment "$FT_EXP" --resume auto
