#!/usr/bin/env bash
# The OFDB pipeline (exe_ofdb_1k.sh) at toy scale: 10 categories of one image, ViT-Tiny, 10 pre-training epochs
# and one fine-tuning epoch. One process by default; FT_DATA defaults to
# scikit-learn's digits (exported once, no download); CIFAR-10 as in the paper with FT_DATA.
#   FT_DATA=/PATH/TO/CIFAR10 bash exe_scripts/exe_ofdb_test.sh            (OFDB=3d for 3D-OFDB)
set -euo pipefail
export NGPUS=${NGPUS:-1} NPERNODE=${NPERNODE:-1} FT_NGPUS=${FT_NGPUS:-${NGPUS:-1}} FT_NPERNODE=${FT_NPERNODE:-${NPERNODE:-1}}
export CLASSES=${CLASSES:-10} BATCH=${BATCH:-10} FT_BATCH=${FT_BATCH:-16}
export PRE_EPOCHS=${PRE_EPOCHS:-10} FT_EPOCHS=${FT_EPOCHS:-1}
source "$(dirname "$0")/_toy_data.sh"  # FT_DATA unset: scikit-learn's digits
export DB_DIR=${DB_DIR:-./data/OFDB-test}
exec bash "$(dirname "$0")/exe_ofdb_1k.sh" "$@"
