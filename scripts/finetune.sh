#!/usr/bin/env bash
# Multi-node fine-tuning with OpenMPI (CVPR 2022 scripts/finetune.sh: ImageNet-1k, DeiT-Base, 16 GPUs, 300 epochs).
#   NGPUS=16 NPERNODE=4 HOSTFILE=hosts.txt bash scripts/finetune.sh /PATH/TO/IMAGENET \
#       output/pretrain/pretrain_deit_base_ExFractalDB21000_1.0e-3/model_best.pth.tar
set -euo pipefail
DATA=${1:?usage: finetune.sh DATA_DIR CHECKPOINT [extra flags]}
CKPT=${2:?usage: finetune.sh DATA_DIR CHECKPOINT [extra flags]}; shift 2
NGPUS=${NGPUS:-16}
NPERNODE=${NPERNODE:-4}
CONFIG=${CONFIG:-configs/finetune_imagenet.yaml}
OUTPUT=${OUTPUT:-./output/finetune}
EXPERIMENT=${EXPERIMENT:-finetune_$(basename "$(dirname "$CKPT")")}
export MASTER_ADDR=${MASTER_ADDR:-$(hostname -I 2>/dev/null | awk '{print $1}')}
export MASTER_PORT=${MASTER_PORT:-$((20000 + RANDOM % 20000))}
export PYTHONUNBUFFERED=1
HOSTS=()
[ -n "${HOSTFILE:-}" ] && HOSTS=(--hostfile "$HOSTFILE")
mpirun "${HOSTS[@]}" -npernode "$NPERNODE" -np "$NGPUS" \
  -x MASTER_ADDR -x MASTER_PORT -x PYTHONUNBUFFERED -x PATH -x LD_LIBRARY_PATH -x WANDB_MODE \
  python finetune.py "$DATA" --config "$CONFIG" --pretrained-path "$CKPT" --output "$OUTPUT" \
  --experiment "$EXPERIMENT" --resume auto "$@"
