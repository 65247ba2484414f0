#!/usr/bin/env bash
# CVPR 2023 VisualAtom: build VisualAtom-1k, pre-train DeiT-Base on it with the published scripts/pretrain.sh
# recipe (4 GPUs x 64, 300 epochs, 5,000 warmup iterations, AMP), then fine-tune ViT-Base on CIFAR-10 with
# the published scripts/finetune.sh recipe (8 GPUs x 96, 1,000 epochs, SGD 0.01 scaled by batch / 512).
#   FT_DATA=/PATH/TO/CIFAR10 bash exe_scripts/exe_visualatom_1k.sh
#   LAUNCHER=torchrun ... | LAUNCHER=none NGPUS=1 ... | STAGES="pretrain finetune" ... | DRY_RUN=1 ...
# Every variable below can be set from the environment; launcher settings are listed in _pipeline.sh.
set -euo pipefail
NGPUS=${NGPUS:-4}                 # pre-training processes (one per GPU), and per node
NPERNODE=${NPERNODE:-4}
FT_NGPUS=${FT_NGPUS:-8}           # fine-tuning processes, and per node
FT_NPERNODE=${FT_NPERNODE:-4}
CLASSES=${CLASSES:-1000}          # VisualAtom classes x images per class
INSTANCES=${INSTANCES:-1000}
FORMAT=${FORMAT:-png}             # png | wds (shards) | onthefly (no files)
SHARD_SIZE=${SHARD_SIZE:-1000}
DB_DIR=${DB_DIR:-./data/VisualAtom-$CLASSES}
FT_DATA=${FT_DATA:-/PATH/TO/CIFAR10}    # train/<class>/ and val/<class>/
FT_NAME=${FT_NAME:-CIFAR10}
FT_CLASSES=${FT_CLASSES:-10}
MODEL=${MODEL:-base}              # deit_${MODEL}_patch16_224 pre-trained, vit_${MODEL}_patch16_224 fine-tuned
PRE_EPOCHS=${PRE_EPOCHS:-300}
FT_EPOCHS=${FT_EPOCHS:-1000}
BATCH=${BATCH:-64}                # per process, pre-training
FT_BATCH=${FT_BATCH:-96}          # per process, fine-tuning
PRE_CONFIG=${PRE_CONFIG:-configs/pretrain_visualatom_1k.yaml}
FT_CONFIG=${FT_CONFIG:-configs/finetune_cifar10.yaml}
OUTPUT=${OUTPUT:-./output}
source "$(dirname "$0")/_pipeline.sh"

PRE_EXP=pretrain_deit_${MODEL}_VisualAtom${CLASSES}_1.0e-3_$((NGPUS * BATCH))
FT_EXP=finetune_vit_${MODEL}_${FT_NAME}_batch$((FT_NGPUS * FT_BATCH))_from_VisualAtom${CLASSES}_1.0e-3
PRETRAINED=${PRETRAINED:-$OUTPUT/pretrain/$PRE_EXP/last.pth.tar}
need_finetune_data "$FT_DATA"
need_checkpoint "$PRETRAINED"

render_db visualatom "$DB_DIR" --layout trainer     # images in DB_DIR/image/<class>/, as the trainers read them
pretrain_data visualatom "$DB_DIR/image" "$DB_DIR"
pretrain "${PRE_DATA[@]}" --config "$(in_repo "$PRE_CONFIG")" --model "deit_${MODEL}_patch16_224" \
  --num-classes "$CLASSES" --epochs "$PRE_EPOCHS" --batch-size "$BATCH" \
  --output "$OUTPUT/pretrain" --experiment "$PRE_EXP" --resume auto
finetune "$FT_DATA" --config "$(in_repo "$FT_CONFIG")" --model "vit_${MODEL}_patch16_224" \
  --num-classes "$FT_CLASSES" --epochs "$FT_EPOCHS" --batch-size "$FT_BATCH" --pretrained-path "$PRETRAINED" \
  --output "$OUTPUT/finetune" --experiment "$FT_EXP" --resume auto
