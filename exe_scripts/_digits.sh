# The laptop-scale recipe shared by the demo (demo_train.sh) and the pre-training-effect check (effect.sh):
# formula-driven databases of 100 classes x 40 images rendered at 64 px, a small ViT pre-trained on them at 32 px
# (the loader's crops downsample them) for 48 epochs (the demo: 24), then
# fine-tuned on scikit-learn's digits: 30 training images per digit (300), tested on the 797 held-out images,
# 60 epochs without augmentation. docs/benchmarks.md says why this fine-tuning (scratch has plateaued there;
# with all 1,000 training digits and crops, scratch catches up at this scale). Sourced; knobs: PRE_EPOCHS,
# FT_EPOCHS, FT_EVAL_INTERVAL, DIGITS_PER_CLASS, PYTHON, and SMALL_CLASSES / SMALL_INSTANCES (the databases' size, for quick checks);
# RENDER_SCALE=k renders every database at k x 32 px (default 2; the loader's crop downsamples it to 32 px, as the
# papers render at 362-512 px and train at 224), with k x k as many chaos-game points; docs/benchmarks.md shows how 2
# was chosen. SPLIT=select tests on the 700 training digits that the 30 per class leave out instead of the 797 test
# digits (for choosing a recipe).
# shellcheck shell=bash
PY=${PYTHON:-python}
PRE_EPOCHS=${PRE_EPOCHS:-48}  # chosen on held-out training digits with the render size (docs/benchmarks.md)
DIGITS_PER_CLASS=${DIGITS_PER_CLASS:-30}
SMALL_CLASSES=${SMALL_CLASSES:-100}
SMALL_INSTANCES=${SMALL_INSTANCES:-40}
FT_EPOCHS=${FT_EPOCHS:-60}
FT_EVAL_INTERVAL=${FT_EVAL_INTERVAL:-10}  # test every N epochs and after the last (797 test images cost about half a training epoch)
export WANDB_MODE=${WANDB_MODE:-disabled} PYTHONUNBUFFERED=1
# DeiT-Tiny's layout at 32 px: 8 px patches (16 tokens; one token is 2 x 2 pixels of an 8 x 8 digit), width 128,
# depth 4. Smaller patches cost 3-4x more time and, in our runs, scored lower in both arms.
SMALL_MODEL=(--model deit_tiny_patch16_224 --model-kwargs patch_size=8 embed_dim=128 depth=4 num_heads=4
             --img-size 32)
SMALL_OPTIM=(--opt adamw --lr 1e-3 --weight-decay 0.05 --sched cosine_iter --warmup-epochs 1 --min-lr 1e-5
             --smoothing 0.1 --color-jitter 0 -j 0 --log-interval 20)
# pre-training: batch 64, crops of 75-100% of the image, flips; fine-tuning: batch 16 (18 steps per epoch on
# 300 images), whole images, no flips; tested in batches of 128 (-vb 8). Images this small load faster in the
# training process than through a DataLoader worker (-j 0).
PRE_AUG=(-b 64 --scale 0.75 1.0 --ratio 0.9 1.1 --hflip 0.5 --drop-path 0.1)
FT_AUG=(-b 16 -vb 8 --scale 1.0 1.0 --ratio 1.0 1.0 --hflip 0)
RENDER_SCALE=${RENDER_SCALE:-2}
SPLIT=${SPLIT:-test}

with_variant() {  # with_variant ROW COMMAND...: run COMMAND in a subshell with ROW's variant settings
  # A row is a database name with optional @-suffixes, for ablations beside the plain rows:
  #   @k2, @k4: rendered at k x 32 px;  @e48: pre-trained 48 epochs;  @lines: RCDB/VisualAtom contour lines capped
  #   at 200 x size / 512 (as many lines per pixel as at 512 px; at 32 px 200 one-pixel lines fill the shape).
  local row=$1; shift
  (
    local rest=${row#"${row%%@*}"} part
    while [ -n "$rest" ]; do
      rest=${rest#@}; part=${rest%%@*}; rest=${rest#"$part"}
      case "$part" in
        k[0-9]*) RENDER_SCALE=${part#k} ;;
        e[0-9]*) PRE_EPOCHS=${part#e} ;;
        lines) CAP_LINES=1 ;;
        *) echo "unknown row variant '@$part' in '$row' (@k<scale>, @e<epochs>, @lines)" >&2; exit 2 ;;
      esac
    done
    "$@"
  )
}

small_db() {  # small_db ROW OUT: render one of the effect check's databases (100 classes x 40 images, k x 32 px)
  local row=${1%%@*} out=$2 size=(--classes "$SMALL_CLASSES" --instances "$SMALL_INSTANCES" --workers 2 --no-progress)
  local px=$((32 * RENDER_SCALE)) contour=()
  # Every IFS database drawn the same way: 4,000 chaos-game points per 32 x 32 pixels as single pixels, 1 px
  # padding per 32 px.
  local ifs=(--size "$px" --pad "$RENDER_SCALE" --iterations $((4000 * RENDER_SCALE * RENDER_SCALE)) --draw-type point_gray)
  [ "${CAP_LINES:-0}" = 1 ] && contour=(--line-num-max $(( (200 * px + 511) / 512 )))
  case "$row" in
    fractaldb) "$PY" -m fdsl render fractaldb --out "$out" "${size[@]}" "${ifs[@]}" ;;
    ofdb2d) "$PY" -m fdsl render ofdb2d --out "$out" "${size[@]}" "${ifs[@]}" ;;
    rcdb) "$PY" -m fdsl render rcdb --out "$out" "${size[@]}" --size "$px" "${contour[@]}" ;;
    visualatom) "$PY" -m fdsl render visualatom --out "$out" "${size[@]}" --size "$px" "${contour[@]}" ;;
    exfractaldb) "$PY" -m fdsl render exfractaldb --out "$out" "${size[@]}" --size "$px" ;;
    onepfrac*) "$PY" -m fdsl render onepfrac --out "$out" "${size[@]}" "${ifs[@]}" --delta "${row#onepfrac}" ;;
    *) echo "unknown database row '$row' (fractaldb, ofdb2d, rcdb, visualatom, exfractaldb, onepfrac<delta>)" >&2
       return 2 ;;
  esac
}

small_pretrain() {  # small_pretrain DB_DIR RUNS EXPERIMENT SEED: pre-train the small ViT on an image folder
  "$PY" -m fdsl pretrain "$1" "${SMALL_MODEL[@]}" "${SMALL_OPTIM[@]}" "${PRE_AUG[@]}" --seed "$4" \
    --epochs "$PRE_EPOCHS" --eval-metric loss --output "$2" --experiment "$3"
}

digits_finetune() {  # digits_finetune DIGITS RUNS EXPERIMENT SEED [CHECKPOINT]: fine-tune on digits and test it
  local from=()
  [ -n "${5:-}" ] && from=(--pretrained-path "$5")
  "$PY" -m fdsl finetune "$1" "${SMALL_MODEL[@]}" --crop-pct 1.0 "${SMALL_OPTIM[@]}" "${FT_AUG[@]}" --seed "$4" \
    --num-classes 10 --epochs "$FT_EPOCHS" --eval-interval "$FT_EVAL_INTERVAL" "${from[@]}" --output "$2" --experiment "$3"
}

export_small_digits() {  # export_small_digits OUT: scikit-learn's digits, DIGITS_PER_CLASS training images per digit
  local select=()
  [ "$SPLIT" = select ] && select=(--select)
  "$PY" "$(dirname "${BASH_SOURCE[0]}")/export_digits.py" "$1" --size 32 --train-per-class "$DIGITS_PER_CLASS" "${select[@]}"
}
