#!/usr/bin/env bash
# The FractalDB pipeline (exe_fractaldb_1k.sh) at toy scale: 10 categories x 100 images, ResNet-18, one epoch
# each stage, to check a set-up end to end before a long run. One process by default; FT_DATA defaults to
# scikit-learn's digits (exported once, no download); CIFAR-10 as in the paper with FT_DATA.
#   FT_DATA=/PATH/TO/CIFAR10 bash exe_scripts/exe_fractaldb_test.sh
set -euo pipefail
export NGPUS=${NGPUS:-1} NPERNODE=${NPERNODE:-1} FT_NGPUS=${FT_NGPUS:-${NGPUS:-1}} FT_NPERNODE=${FT_NPERNODE:-${NPERNODE:-1}}
export CLASSES=${CLASSES:-10} INSTANCES=${INSTANCES:-100} ARCH=${ARCH:-resnet18} BATCH=${BATCH:-32}
export PRE_EPOCHS=${PRE_EPOCHS:-1} FT_EPOCHS=${FT_EPOCHS:-1}
source "$(dirname "$0")/_toy_data.sh"  # FT_DATA unset: scikit-learn's digits
export DB_DIR=${DB_DIR:-./data/FractalDB-test}
exec bash "$(dirname "$0")/exe_fractaldb_1k.sh" "$@"
