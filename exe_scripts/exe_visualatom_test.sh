#!/usr/bin/env bash
# The VisualAtom pipeline (exe_visualatom_1k.sh) at toy scale: 10 classes, DeiT-Tiny / ViT-Tiny, one epoch each
# stage, to check a set-up end to end before a long run. One process by default; FT_DATA defaults to
# scikit-learn's digits (exported once, no download); CIFAR-10 as in the paper with FT_DATA.
#   FT_DATA=/PATH/TO/CIFAR10 bash exe_scripts/exe_visualatom_test.sh
set -euo pipefail
export NGPUS=${NGPUS:-1} NPERNODE=${NPERNODE:-1} FT_NGPUS=${FT_NGPUS:-${NGPUS:-1}} FT_NPERNODE=${FT_NPERNODE:-${NPERNODE:-1}}
export CLASSES=${CLASSES:-10} INSTANCES=${INSTANCES:-1000} MODEL=${MODEL:-tiny} BATCH=${BATCH:-16} FT_BATCH=${FT_BATCH:-16}
export PRE_EPOCHS=${PRE_EPOCHS:-1} FT_EPOCHS=${FT_EPOCHS:-1}
source "$(dirname "$0")/_toy_data.sh"  # FT_DATA unset: scikit-learn's digits
export DB_DIR=${DB_DIR:-./data/VisualAtom-test}
exec bash "$(dirname "$0")/exe_visualatom_1k.sh" "$@"
