#!/usr/bin/env bash
# torchrun example: one node with 8 GPUs (or NNODES nodes; run this on each with NODE_RANK set).
#   bash scripts/pretrain_torchrun.sh /PATH/TO/rcdb
#   NNODES=4 NODE_RANK=0 MASTER_ADDR=node0 bash scripts/pretrain_torchrun.sh /PATH/TO/rcdb   # on node0, etc.
set -euo pipefail
DATA=${1:?usage: pretrain_torchrun.sh DATA_DIR [extra flags]}; shift
NPROC=${NPROC:-8}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-29500}
export PYTHONUNBUFFERED=1
torchrun --nproc_per_node "$NPROC" --nnodes "$NNODES" --node_rank "$NODE_RANK" \
  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
  pretrain.py "$DATA" --config configs/pretrain_rcdb_1k.yaml --output ./output/pretrain --resume auto "$@"
