#!/usr/bin/env bash
# CVPR 2022 exe_exfractaldb_test.sh: the ExFractalDB-1k pipeline at toy scale (10 classes, DeiT-Tiny, two epochs each stage),
# to check a set-up end to end before a long run. One process by default (NGPUS=1); FT_DATA defaults to
# scikit-learn's digits (exported once, no download); CIFAR-10 as in the paper with FT_DATA.
#   FT_DATA=/PATH/TO/CIFAR10 bash exe_scripts/exe_exfractaldb_test.sh
set -euo pipefail
export NGPUS=${NGPUS:-1} NPERNODE=${NPERNODE:-1} FT_NGPUS=${FT_NGPUS:-${NGPUS:-1}} FT_NPERNODE=${FT_NPERNODE:-${NPERNODE:-1}}
export CLASSES=${CLASSES:-10} INSTANCES=${INSTANCES:-1000} MODEL=${MODEL:-tiny} BATCH=${BATCH:-64}
export PRE_EPOCHS=${PRE_EPOCHS:-2} FT_EPOCHS=${FT_EPOCHS:-2}
source "$(dirname "$0")/_toy_data.sh"  # FT_DATA unset: scikit-learn's digits
export FT_NAME=${FT_NAME:-CIFAR10} FT_CLASSES=${FT_CLASSES:-10}
export DB_DIR=${DB_DIR:-./data/ExFractalDB-test}
exec bash "$(dirname "$0")/exe_exfractaldb_1k.sh" "$@"
