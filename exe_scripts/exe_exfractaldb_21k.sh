#!/usr/bin/env bash
# CVPR 2022 exe_exfractaldb_21k.sh: ExFractalDB-21k written as webdataset shards, DeiT-Base pre-trained on 128 GPUs x 64
# (32 nodes x 4, 90 epochs), fine-tuned on ImageNet-1k with 16 GPUs (300 epochs). Runs the 1k pipeline
# (exe_exfractaldb_1k.sh) with these settings; FORMAT=onthefly renders during pre-training instead (no files),
# FORMAT=png writes the published folders. Split the build over machines with
# STAGES=render RENDER_ARGS="--class-range A:B" on each, then run STAGES="pretrain finetune" on the first node.
#   HOSTFILE=hosts.txt FT_DATA=/PATH/TO/IMAGENET bash exe_scripts/exe_exfractaldb_21k.sh
set -euo pipefail
export NGPUS=${NGPUS:-128} NPERNODE=${NPERNODE:-4}
export FT_NGPUS=${FT_NGPUS:-16} FT_NPERNODE=${FT_NPERNODE:-4}
export CLASSES=${CLASSES:-21000} INSTANCES=${INSTANCES:-1000}
export FORMAT=${FORMAT:-wds} SHARD_SIZE=${SHARD_SIZE:-1000}
export DB_DIR=${DB_DIR:-./data/ExFractalDB-21000}
export PRE_EPOCHS=${PRE_EPOCHS:-90} PRE_CONFIG=${PRE_CONFIG:-configs/pretrain_exfractaldb_21k.yaml}
exec bash "$(dirname "$0")/exe_exfractaldb_1k.sh" "$@"
