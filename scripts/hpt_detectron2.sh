#!/usr/bin/env bash
# Detection transfer of an HPT backbone with detectron2 (install it yourself: it is not on PyPI).
#   NGPUS=8 bash scripts/hpt_detectron2.sh configs/detectron2/voc07_R_50_C4_24k.yaml \
#       hpt/resisc/work/pretrain/moco_v2_800ep_basetrain/5000-iters/final_backbone.pth [detectron2 KEY VALUE ...]
# The backbone is converted first (`fdsl hpt detectron2`) to <backbone>_detectron2.pkl beside it and passed
# as MODEL.WEIGHTS. MEAN / STD in 0-1, as `fdsl mean-std` prints them (MEAN="0.368 0.381 0.343"; one value
# for greyscale data), replace the config's ImageNet PIXEL_MEAN / PIXEL_STD in detectron2's 0-255 scale.
# DRY_RUN=1 converts the backbone and prints the training command instead of running it.
set -euo pipefail
CONFIG=${1:?usage: hpt_detectron2.sh CONFIG.yaml BACKBONE.pth [detectron2 options]}
BACKBONE=${2:?usage: hpt_detectron2.sh CONFIG.yaml BACKBONE.pth [detectron2 options]}
shift 2
PYTHON=${PYTHON:-python}
NGPUS=${NGPUS:-8}
OUTPUT=${OUTPUT:-output/detectron2/$(basename "${CONFIG%.yaml}")}
WEIGHTS="${BACKBONE%.pth}_detectron2.pkl"
"$PYTHON" -m fdsl hpt detectron2 "$BACKBONE" "$WEIGHTS"

to_255() {  # "0.5 0.4 0.3" -> "[127.5000, 102.0000, 76.5000]"; one value is used for the three channels
  "$PYTHON" -c 'import sys; v = [255 * float(x) for x in sys.argv[1:]]; v = v * 3 if len(v) == 1 else v
print("[" + ", ".join(f"{x:.4f}" for x in v) + "]")' $1
}
OPTS=(MODEL.WEIGHTS "$WEIGHTS" OUTPUT_DIR "$OUTPUT")
if [ -n "${MEAN:-}" ]; then OPTS+=(MODEL.PIXEL_MEAN "$(to_255 "$MEAN")"); fi
if [ -n "${STD:-}" ]; then OPTS+=(MODEL.PIXEL_STD "$(to_255 "$STD")"); fi
CMD=("$PYTHON" "$(dirname "$0")/hpt_detectron2_train.py" --config-file "$CONFIG" --num-gpus "$NGPUS"
     "${OPTS[@]}" "$@")
if [ -n "${DRY_RUN:-}" ]; then
  printf '%q ' "${CMD[@]}"
  echo
  exit 0
fi
exec "${CMD[@]}"
