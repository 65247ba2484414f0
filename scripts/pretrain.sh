#!/usr/bin/env bash
# Multi-node pre-training with OpenMPI (CVPR 2022 scripts/pretrain.sh: ExFractalDB-21k, DeiT-Base, 128 GPUs).
# Run it on the first node of the allocation, with a hostfile listing the nodes:
#   NGPUS=128 NPERNODE=4 HOSTFILE=hosts.txt bash scripts/pretrain.sh /PATH/TO/MVFractalDB-21000
# Batch size is per process (64 x 128 = 8192); the LR is not scaled (published behaviour).
set -euo pipefail
DATA=${1:?usage: pretrain.sh DATA_DIR [extra flags]}; shift
NGPUS=${NGPUS:-128}
NPERNODE=${NPERNODE:-4}
CONFIG=${CONFIG:-configs/pretrain_exfractaldb_21k.yaml}
OUTPUT=${OUTPUT:-./output/pretrain}
export MASTER_ADDR=${MASTER_ADDR:-$(hostname -I 2>/dev/null | awk '{print $1}')}
export MASTER_PORT=${MASTER_PORT:-$((20000 + RANDOM % 20000))}
export PYTHONUNBUFFERED=1
HOSTS=()
[ -n "${HOSTFILE:-}" ] && HOSTS=(--hostfile "$HOSTFILE")
# -x forwards the variables to remote ranks; OpenMPI does not do it by itself.
mpirun "${HOSTS[@]}" -npernode "$NPERNODE" -np "$NGPUS" \
  -x MASTER_ADDR -x MASTER_PORT -x PYTHONUNBUFFERED -x PATH -x LD_LIBRARY_PATH -x WANDB_MODE \
  python pretrain.py "$DATA" --config "$CONFIG" --output "$OUTPUT" --resume auto "$@"
