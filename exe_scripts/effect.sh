#!/usr/bin/env bash
# The pre-training effect at laptop scale: fine-tune the demo's small ViT on scikit-learn's digits from scratch
# and from checkpoints pre-trained on FractalDB, 2D-OFDB, RCDB, VisualAtom, ExFractalDB and 1p-frac (delta 0.1 and
# 0.01), every database 100 classes x 40 images rendered at 64 px and trained at 32 px, with the same recipe for
# every row and seed. The study is studies/digits_effect.yaml, run by `fdsl study` (docs/study.md); this script
# maps its environment variables to `--set` and adds the self-supervised rows. ROWS=all: 42.5 minutes on 2 CPU
# cores (docs/benchmarks.md).
#   bash exe_scripts/effect.sh [WORK_DIR]          (default effect_out; SEEDS="0 1 2", ROWS="fractaldb ...")
#   ROWS=all bash exe_scripts/effect.sh           (the supervised rows, then ROWS hpt and deepercluster below)
# Each database is pre-trained once (the first seed) and fine-tuned with every seed; PRETRAIN_PER_SEED=1 pre-trains
# afresh for each seed too, as a new user would. The demo's claim over 5 seeds with the plateau check:
#   SEEDS="0 1 2 3 4" ROWS=fractaldb PRETRAIN_PER_SEED=1 PLATEAU=1 bash exe_scripts/effect.sh effect5
# Writes WORK_DIR/report.md, report.csv and report.png. A re-run runs only the unfinished runs; a changed knob
# makes new runs beside the old ones (fdsl study keys each run by its command line).
# Knobs (unset: the study file's value): SEEDS, ROWS, SPLIT, JOBS, PRETRAIN_PER_SEED, SCRATCH=0 (no scratch
# row), PLATEAU=1 (also scratch at twice the fine-tuning epochs: has scratch plateaued?), PRE_EPOCHS, FT_EPOCHS,
# FT_EVAL_INTERVAL, DIGITS_PER_CLASS, SMALL_CLASSES, SMALL_INSTANCES, RENDER_SCALE, PYTHON.
# Ablations: a row may carry variants (rcdb@k4, rcdb@e48, rcdb@lines; the study file's `variants`), and
# SPLIT=select tests on held-out training digits, so that a recipe is chosen without the test digits:
#   SPLIT=select ROWS="rcdb rcdb@k2 rcdb@k4 rcdb@lines rcdb@e48 fractaldb fractaldb@k2 ..." bash exe_scripts/effect.sh ablation
set -euo pipefail
WORK_DIR=${1:-effect_out}
SEEDS=${SEEDS:-0 1 2}
SUPERVISED_ROWS="fractaldb ofdb2d rcdb visualatom exfractaldb onepfrac0.1 onepfrac0.01"
ROWS=${ROWS:-$SUPERVISED_ROWS}
[ "$ROWS" = all ] && ROWS="$SUPERVISED_ROWS hpt deepercluster"  # the whole check, as docs/benchmarks.md times it
SPLIT=${SPLIT:-test}
JOBS=${JOBS:-$(nproc)}  # runs at a time, one thread each
PY=${PYTHON:-python}
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=${WANDB_MODE:-disabled} PYTHONUNBUFFERED=1
# Self-supervised rows, named in ROWS beside the databases: hpt (exe_scripts/hpt_effect.py: MoCo v2 and BYOL on the
# digits from random init and from a FractalDB base, and the k-NN steps a base saves) and deepercluster
# (exe_scripts/ssl_effect.py: DeepCluster, RotNet and DeeperCluster on the digits, DeeperCluster on FractalDB,
# probed against a random-init trunk). Each runs with SEEDS into WORK_DIR/hpt or WORK_DIR/ssl (resumable;
# HPT_ARGS / SSL_ARGS add flags, e.g. --quick). Beside supervised rows, each is one more chain on one thread
# (log: WORK_DIR/<row>.log) and the study gets the other JOBS; its tables print after the supervised table;
# alone, they run one after the other on JOBS threads.
SSL_ROWS=$(for row in $ROWS; do case "$row" in hpt | deepercluster) echo "$row" ;; esac; done)
ROWS=$(for row in $ROWS; do case "$row" in hpt | deepercluster) ;; *) echo "$row" ;; esac; done)
if [ -n "$SSL_ROWS" ] && [ "$SPLIT" != test ]; then
  echo "error: the self-supervised rows ($(echo $SSL_ROWS)) test on the test digits; run them without SPLIT=$SPLIT" >&2
  exit 2
fi
ssl_row() {  # ssl_row ROW JOBS: one self-supervised row, JOBS runs at a time
  case "$1" in
    hpt) "$PY" "$HERE/hpt_effect.py" "$WORK_DIR/hpt" --seeds $SEEDS --jobs "$2" ${HPT_ARGS:-} ;;
    deepercluster) "$PY" "$HERE/ssl_effect.py" "$WORK_DIR/ssl" --seeds $SEEDS --jobs "$2" ${SSL_ARGS:-} ;;
  esac
}
if [ -z "$ROWS" ] && [ -n "$SSL_ROWS" ]; then
  for row in $SSL_ROWS; do echo; ssl_row "$row" "$JOBS"; done
  exit 0
fi

rows=$(echo $ROWS)
[ "${SCRATCH:-1}" = 1 ] && rows="scratch $rows"
[ "${PLATEAU:-0}" = 1 ] && rows="$rows scratch2x"
per_seed=false
[ "${PRETRAIN_PER_SEED:-0}" = 1 ] && per_seed=true
sets=(--set "out=$WORK_DIR" --set "seeds=$SEEDS" --set "rows=$rows" --set "vars.split=$SPLIT"
      --set "pretrain_per_seed=$per_seed")
for knob in PRE_EPOCHS FT_EPOCHS FT_EVAL_INTERVAL DIGITS_PER_CLASS SMALL_CLASSES SMALL_INSTANCES RENDER_SCALE; do
  [ -n "${!knob:-}" ] && sets+=(--set "vars.${knob,,}=${!knob}")
done

# The self-supervised chains start first (the longest), one thread each; the study runs on the other JOBS.
mkdir -p "$WORK_DIR"
pids=()
for row in $SSL_ROWS; do
  echo "== $row (log: $WORK_DIR/$row.log)"
  ssl_row "$row" 1 > "$WORK_DIR/$row.log" 2>&1 &
  pids+=($!)
done
study_jobs=$(( JOBS - ${#pids[@]} ))
[ "$study_jobs" -ge 1 ] || study_jobs=1
failed=0
"$PY" -m fdsl study "$REPO/studies/digits_effect.yaml" "${sets[@]}" --jobs "$study_jobs" || failed=1
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
for row in $SSL_ROWS; do
  echo
  case "$row" in hpt) table=$WORK_DIR/hpt/hpt_effect.md ;; deepercluster) table=$WORK_DIR/ssl/ssl_effect.md ;; esac
  if [ -f "$table" ]; then cat "$table"; else echo "$row: no table ($table); see $WORK_DIR/$row.log"; fi
done
if [ "$failed" = 1 ]; then
  echo "error: a run failed; see the messages above and $WORK_DIR/logs/ (a re-run keeps the finished runs)" >&2
  exit 1
fi
