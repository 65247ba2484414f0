# Sourced by the exe_*_test.sh twins. With FT_DATA unset, a set-up check needs no data set at hand: the twin
# fine-tunes on scikit-learn's digits (shipped with scikit-learn, no download), exported once at 32 px to
# DIGITS_DIR (default ./data/digits), and says so.
# shellcheck shell=bash
toy_finetune_data() {
  [ -z "${FT_DATA:-}" ] || return 0
  local out=${DIGITS_DIR:-./data/digits} py=${PYTHON:-python}
  command -v "$py" >/dev/null 2>&1 || py=python3
  echo "FT_DATA is unset: fine-tuning on scikit-learn's digits (10 classes, 32 px) in $out; set FT_DATA for your own data"
  if [ -z "${DRY_RUN:-}" ] && { [ ! -d "$out/train" ] || [ ! -d "$out/val" ]; }; then
    "$py" "$(dirname "${BASH_SOURCE[0]}")/export_digits.py" "$out" --size 32 >/dev/null
  fi
  export FT_DATA=$out FT_NAME=digits FT_CLASSES=10
}
toy_finetune_data
