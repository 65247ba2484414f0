#!/usr/bin/env bash
# ECCV 2024 1p-frac: build 1p-frac (one fractal, 1,000 delta-perturbations = 1,000 classes of one image), pre-train
# ViT-Tiny on it with the published pre-train.sh recipe (8 GPUs x 32, 80,000 epochs, strong augmentation,
# lr 1e-3 scaled by batch / 512), then fine-tune on CIFAR-100 with finetuning.sh (8 GPUs x 96, 1,000 epochs).
#   FT_DATA=/PATH/TO/CIFAR100 bash exe_scripts/exe_1pfrac.sh        (DELTA=0.01 for the paper's ablation)
#   LAUNCHER=torchrun ... | LAUNCHER=none NGPUS=1 ... | STAGES="pretrain finetune" ... | DRY_RUN=1 ...
# Every variable below can be set from the environment; launcher settings are listed in _pipeline.sh.
set -euo pipefail
NGPUS=${NGPUS:-8}                 # pre-training processes (one per GPU), and per node
NPERNODE=${NPERNODE:-4}
FT_NGPUS=${FT_NGPUS:-8}           # fine-tuning processes, and per node
FT_NPERNODE=${FT_NPERNODE:-4}
CLASSES=${CLASSES:-1000}          # S: perturbations of the one fractal, one image each
INSTANCES=${INSTANCES:-1}
DELTA=${DELTA:-0.1}               # each map parameter times U(1 - delta, 1 + delta)
FORMAT=${FORMAT:-png}             # png | wds | onthefly (on the fly renders the default delta 0.1)
SHARD_SIZE=${SHARD_SIZE:-1000}
DB_DIR=${DB_DIR:-./data/1p-frac/sigma4.0_N2_delta${DELTA}_sample${CLASSES}}
FT_DATA=${FT_DATA:-/PATH/TO/CIFAR100}   # train/<class>/ and val/<class>/
FT_NAME=${FT_NAME:-CIFAR100}
FT_CLASSES=${FT_CLASSES:-100}
MODEL=${MODEL:-vit_tiny_patch16_224}
PRE_EPOCHS=${PRE_EPOCHS:-80000}
FT_EPOCHS=${FT_EPOCHS:-1000}
BATCH=${BATCH:-32}                # per process, pre-training
FT_BATCH=${FT_BATCH:-96}          # per process, fine-tuning
PRE_CONFIG=${PRE_CONFIG:-configs/pretrain_1pfrac.yaml}
FT_CONFIG=${FT_CONFIG:-configs/finetune_1pfrac_cifar100.yaml}
OUTPUT=${OUTPUT:-./output}
source "$(dirname "$0")/_pipeline.sh"

NAME=$(basename "$DB_DIR")
PRE_EXP=pretrain_${MODEL}_${NAME}
FT_EXP=finetune_${MODEL}_${FT_NAME}_from_${NAME}
PRETRAINED=${PRETRAINED:-$OUTPUT/pretrain/$PRE_EXP/last.pth.tar}
need_finetune_data "$FT_DATA"
need_checkpoint "$PRETRAINED"

render_db onepfrac "$DB_DIR" --delta "$DELTA"
pretrain_data onepfrac "$DB_DIR" "$DB_DIR"
pretrain "${PRE_DATA[@]}" --config "$(in_repo "$PRE_CONFIG")" --model "$MODEL" --num-classes "$CLASSES" \
  --epochs "$PRE_EPOCHS" --batch-size "$BATCH" --output "$OUTPUT/pretrain" --experiment "$PRE_EXP" --resume auto
finetune "$FT_DATA" --config "$(in_repo "$FT_CONFIG")" --model "$MODEL" --num-classes "$FT_CLASSES" \
  --epochs "$FT_EPOCHS" --batch-size "$FT_BATCH" --pretrained-path "$PRETRAINED" \
  --output "$OUTPUT/finetune" --experiment "$FT_EXP" --resume auto
