#!/usr/bin/env bash
# The 1p-frac pipeline (exe_1pfrac.sh) at toy scale: 10 perturbation classes, ViT-Tiny, 10 pre-training epochs
# (10 images make tiny epochs) and one fine-tuning epoch. One process by default; FT_DATA defaults to
# scikit-learn's digits (exported once, no download); CIFAR-100 as in the paper with FT_DATA.
#   FT_DATA=/PATH/TO/CIFAR100 bash exe_scripts/exe_1pfrac_test.sh
set -euo pipefail
export NGPUS=${NGPUS:-1} NPERNODE=${NPERNODE:-1} FT_NGPUS=${FT_NGPUS:-${NGPUS:-1}} FT_NPERNODE=${FT_NPERNODE:-${NPERNODE:-1}}
export CLASSES=${CLASSES:-10} BATCH=${BATCH:-10} FT_BATCH=${FT_BATCH:-16}
export PRE_EPOCHS=${PRE_EPOCHS:-10} FT_EPOCHS=${FT_EPOCHS:-1}
source "$(dirname "$0")/_toy_data.sh"  # FT_DATA unset: scikit-learn's digits
export DB_DIR=${DB_DIR:-./data/1p-frac-test}
exec bash "$(dirname "$0")/exe_1pfrac.sh" "$@"
