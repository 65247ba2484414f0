#!/usr/bin/env bash
# CVPR 2023 VisualAtom scripts/pretrain.sh: VisualAtom-21k written as webdataset shards, DeiT-Base pre-trained
# on 128 GPUs x 64 (32 nodes x 4, 90 epochs), then the CIFAR-10 fine-tuning of exe_visualatom_1k.sh, whose
# pipeline this runs with these settings. FORMAT=onthefly renders during pre-training instead (no files),
# FORMAT=png writes the published folders. Split the build over machines with
# STAGES=render RENDER_ARGS="--class-range A:B" on each, then run STAGES="pretrain finetune" on the first node.
#   HOSTFILE=hosts.txt FT_DATA=/PATH/TO/CIFAR10 bash exe_scripts/exe_visualatom_21k.sh
set -euo pipefail
export NGPUS=${NGPUS:-128} NPERNODE=${NPERNODE:-4}
export CLASSES=${CLASSES:-21000} INSTANCES=${INSTANCES:-1000}
export FORMAT=${FORMAT:-wds} SHARD_SIZE=${SHARD_SIZE:-1000}
export DB_DIR=${DB_DIR:-./data/VisualAtom-21000}
export PRE_EPOCHS=${PRE_EPOCHS:-90} PRE_CONFIG=${PRE_CONFIG:-configs/pretrain_visualatom_21k.yaml}
exec bash "$(dirname "$0")/exe_visualatom_1k.sh" "$@"
