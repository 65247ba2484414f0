#!/usr/bin/env bash
# ACCV 2020 FractalDB exe_parallel.sh: search 1,000 fractal categories and render FractalDB-1k (362 px, 1,000
# images per class), pre-train ResNet-50 on it (90 epochs, SGD 0.1, global batch 256), fine-tune on CIFAR-10
# (90 epochs, SGD 0.01). Published: one process with DataParallel; here 4 processes x 64 (the same global batch).
#   FT_DATA=/PATH/TO/CIFAR10 bash exe_scripts/exe_fractaldb_1k.sh
#   LAUNCHER=torchrun ... | LAUNCHER=none NGPUS=1 BATCH=256 ... | STAGES="pretrain finetune" ... | DRY_RUN=1 ...
# Every variable below can be set from the environment; launcher settings are listed in _pipeline.sh.
set -euo pipefail
NGPUS=${NGPUS:-4}                 # pre-training processes (one per GPU), and per node
NPERNODE=${NPERNODE:-4}
FT_NGPUS=${FT_NGPUS:-4}           # fine-tuning processes, and per node
FT_NPERNODE=${FT_NPERNODE:-4}
CLASSES=${CLASSES:-1000}          # FractalDB categories x images per category
INSTANCES=${INSTANCES:-1000}
FORMAT=${FORMAT:-png}             # png | wds (shards) | onthefly (no files)
SHARD_SIZE=${SHARD_SIZE:-1000}
DB_DIR=${DB_DIR:-./data/FractalDB-$CLASSES}
CSV_DIR=${CSV_DIR:-}              # the official category CSVs, if you have them (else they are searched)
WEIGHT_INTERVAL=${WEIGHT_INTERVAL:-0.4}   # exe.sh renders with weights_0.4.csv (factors 0.2, 0.6, 1.4, 1.8)
FT_DATA=${FT_DATA:-/PATH/TO/CIFAR10}    # train/<class>/ and val/<class>/
FT_NAME=${FT_NAME:-CIFAR10}
FT_CLASSES=${FT_CLASSES:-10}
ARCH=${ARCH:-resnet50}
PRE_EPOCHS=${PRE_EPOCHS:-90}
FT_EPOCHS=${FT_EPOCHS:-90}
BATCH=${BATCH:-64}                # per process
PRE_CONFIG=${PRE_CONFIG:-configs/pretrain_fractaldb_1k.yaml}
FT_CONFIG=${FT_CONFIG:-configs/finetune_fractaldb_cifar10.yaml}
OUTPUT=${OUTPUT:-./output}
source "$(dirname "$0")/_pipeline.sh"

PRE_EXP=FractalDB-${CLASSES}_${ARCH}
FT_EXP=pt_FractalDB-${CLASSES}_ft_${FT_NAME}_${ARCH}
PRETRAINED=${PRETRAINED:-$OUTPUT/pretrain/$PRE_EXP/last.pth.tar}
need_finetune_data "$FT_DATA"
need_checkpoint "$PRETRAINED"
CSV=()
if [ -n "$CSV_DIR" ]; then
  need_dir "$CSV_DIR" "category CSV folder" "set CSV_DIR to the folder of a,b,c,d,e,f,p CSVs, or leave it empty"
  CSV=(--csv-dir "$CSV_DIR")
fi

render_db fractaldb "$DB_DIR" --weight-interval "$WEIGHT_INTERVAL" "${CSV[@]}"
pretrain_data fractaldb "$DB_DIR" "$DB_DIR"
pretrain "${PRE_DATA[@]}" --config "$(in_repo "$PRE_CONFIG")" --model "$ARCH" --num-classes "$CLASSES" \
  --epochs "$PRE_EPOCHS" --batch-size "$BATCH" --output "$OUTPUT/pretrain" --experiment "$PRE_EXP" --resume auto
finetune "$FT_DATA" --config "$(in_repo "$FT_CONFIG")" --model "$ARCH" --num-classes "$FT_CLASSES" \
  --epochs "$FT_EPOCHS" --batch-size "$BATCH" --pretrained-path "$PRETRAINED" \
  --output "$OUTPUT/finetune" --experiment "$FT_EXP" --resume auto
