#!/usr/bin/env bash
# The pre-training effect at laptop scale: fine-tune the demo's small ViT on scikit-learn's digits from scratch
# and from checkpoints pre-trained on FractalDB, 2D-OFDB, RCDB, VisualAtom, ExFractalDB and 1p-frac (delta 0.1 and
# 0.01), every database 100 classes x 40 images rendered at 64 px and trained at 32 px, with the same recipe
# (exe_scripts/_digits.sh) for every row and seed; then print mean +- std per row and the gain over scratch paired by seed, and draw a bar chart.
# Each database is pre-trained once (seed 0) and fine-tuned with every seed; PRETRAIN_PER_SEED=1 pre-trains
# afresh for each seed too, as a new user would (5x the pre-training time). ROWS=all: 42.5 minutes on 2 CPU
# cores (docs/benchmarks.md).
#   bash exe_scripts/effect.sh [WORK_DIR]          (default effect_out; SEEDS="0 1 2", ROWS="fractaldb ...")
#   ROWS=all bash exe_scripts/effect.sh           (the supervised rows, then ROWS hpt and deepercluster below)
# The demo's claim over 5 seeds, pre-trained afresh per seed as 5 users would, with the plateau check:
#   SEEDS="0 1 2 3 4" ROWS=fractaldb PRETRAIN_PER_SEED=1 PLATEAU=1 bash exe_scripts/effect.sh effect5
# Writes WORK_DIR/effect.md, effect.csv and effect.png. A re-run keeps finished runs (delete WORK_DIR to redo).
# Ablations: a row may carry variants (rcdb@k4, rcdb@e48, rcdb@lines; see with_variant in _digits.sh), and
# SPLIT=select tests on held-out training digits, so that a recipe is chosen without the test digits:
#   SPLIT=select ROWS="rcdb rcdb@k2 rcdb@k4 rcdb@lines rcdb@e48 fractaldb fractaldb@k2 ..." bash exe_scripts/effect.sh ablation
set -euo pipefail
WORK_DIR=${1:-effect_out}
SEEDS=${SEEDS:-0 1 2}
SUPERVISED_ROWS="fractaldb ofdb2d rcdb visualatom exfractaldb onepfrac0.1 onepfrac0.01"
ROWS=${ROWS:-$SUPERVISED_ROWS}
[ "$ROWS" = all ] && ROWS="$SUPERVISED_ROWS hpt deepercluster"  # the whole check, as docs/benchmarks.md times it
PRETRAIN_PER_SEED=${PRETRAIN_PER_SEED:-0}
SCRATCH=${SCRATCH:-1}  # 0: no scratch runs (a second effect.sh on the same WORK_DIR, other ROWS, in parallel)
PLATEAU=${PLATEAU:-0}  # 1: also fine-tune scratch for twice the epochs (the row "scratch2x": has scratch plateaued?)
JOBS=${JOBS:-$(nproc)}  # runs at a time, one thread each
HERE="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH="$(dirname "$HERE")${PYTHONPATH:+:$PYTHONPATH}"
source "$HERE/_digits.sh"
RUNS=$WORK_DIR/runs
started=$SECONDS
# Self-supervised rows, named in ROWS beside the databases: hpt (exe_scripts/hpt_effect.py: MoCo v2 and BYOL on the
# digits from random init and from a FractalDB base, and the k-NN steps a base saves) and deepercluster
# (exe_scripts/ssl_effect.py: DeepCluster, RotNet and DeeperCluster on the digits, DeeperCluster on FractalDB,
# probed against a random-init trunk). Each runs with SEEDS into WORK_DIR/hpt or WORK_DIR/ssl (resumable;
# HPT_ARGS / SSL_ARGS add flags, e.g. --quick). Beside supervised rows, each is one more chain on one thread
# (log: WORK_DIR/<row>.log), and its tables print after the supervised table; alone, they run one after the
# other on JOBS threads.
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

done_run() {  # a run is finished when its last checkpoint exists; an unfinished one is started afresh
  [ -f "$RUNS/$1/last.pth.tar" ] && [ -f "$RUNS/$1/.complete" ] && return 0
  rm -rf "${RUNS:?}/$1"
  return 1
}

mkdir -p "$WORK_DIR"
digits_kind="split $SPLIT, $DIGITS_PER_CLASS per class"
if [ -f "$WORK_DIR/digits/.complete" ] && [ "$(cat "$WORK_DIR/digits/.complete")" != "$digits_kind" ]; then
  echo "error: $WORK_DIR holds runs on digits of $(cat "$WORK_DIR/digits/.complete"), not $digits_kind; give another WORK_DIR" >&2
  exit 2
fi
if [ ! -f "$WORK_DIR/digits/.complete" ]; then  # exported once: a second effect.sh on WORK_DIR may be reading them
  export_small_digits "$WORK_DIR/digits"
  echo "$digits_kind" > "$WORK_DIR/digits/.complete"
fi
for row in $ROWS; do
  [ -f "$WORK_DIR/db/$row/manifest.json" ] && [ -f "$WORK_DIR/db/$row/.complete" ] && continue
  echo "== building $row"
  with_variant "$row" small_db "$row" "$WORK_DIR/db/$row"
  touch "$WORK_DIR/db/$row/.complete"
done
first_seed=$(set -- $SEEDS; echo "$1")

scratch_runs() {  # every seed of scratch (and of scratch at 2x epochs with PLATEAU=1)
  local seed
  for seed in $SEEDS; do
    if ! done_run "ft_scratch_s$seed"; then
      echo "== seed $seed: fine-tuning from scratch"
      digits_finetune "$WORK_DIR/digits" "$RUNS" "ft_scratch_s$seed" "$seed" > "$WORK_DIR/ft_scratch_s$seed.log"
      touch "$RUNS/ft_scratch_s$seed/.complete"
    fi
    if [ "$PLATEAU" = 1 ] && ! done_run "ft_scratch2x_s$seed"; then
      echo "== seed $seed: fine-tuning from scratch for $((2 * FT_EPOCHS)) epochs"
      FT_EPOCHS=$((2 * FT_EPOCHS)) digits_finetune "$WORK_DIR/digits" "$RUNS" "ft_scratch2x_s$seed" "$seed" \
        > "$WORK_DIR/ft_scratch2x_s$seed.log"
      touch "$RUNS/ft_scratch2x_s$seed/.complete"
    fi
  done
}

row_runs() {  # row_runs ROW SEED...: pre-train ROW (once, or per seed) and fine-tune from it with each SEED
  local row=$1 seed pre_seed; shift
  for seed in "$@"; do
    pre_seed=$seed
    [ "$PRETRAIN_PER_SEED" = 1 ] || pre_seed=$first_seed
    if ! done_run "pre_${row}_s$pre_seed"; then
      echo "== pre-training on $row (seed $pre_seed)"
      with_variant "$row" small_pretrain "$WORK_DIR/db/$row" "$RUNS" "pre_${row}_s$pre_seed" "$pre_seed" \
        > "$WORK_DIR/pre_${row}_s$pre_seed.log"
      touch "$RUNS/pre_${row}_s$pre_seed/.complete"
    fi
    if ! done_run "ft_${row}_s$seed"; then
      echo "== seed $seed: fine-tuning from $row"
      digits_finetune "$WORK_DIR/digits" "$RUNS" "ft_${row}_s$seed" "$seed" "$RUNS/pre_${row}_s$pre_seed/last.pth.tar" \
        > "$WORK_DIR/ft_${row}_s$seed.log"
      touch "$RUNS/ft_${row}_s$seed/.complete"
    fi
  done
}

# Independent chains run JOBS at a time, each on one thread: this model is too small for two threads to pay
# (a run's figures do not depend on JOBS, only on its seed). A chain is scratch, or one row with its seeds (one
# chain per seed with PRETRAIN_PER_SEED=1).
# The longest chains start first (the self-supervised rows, then the databases, scratch last), so that no core
# idles at the end while one long chain finishes.
chains=()
for row in $SSL_ROWS; do chains+=("ssl $row"); done
for row in $ROWS; do
  if [ "$PRETRAIN_PER_SEED" = 1 ]; then
    for seed in $SEEDS; do chains+=("$row $seed"); done
  else
    chains+=("$row $SEEDS")
  fi
done
[ "$SCRATCH" = 1 ] && chains+=("scratch")
[ "$JOBS" -gt 1 ] && export OMP_NUM_THREADS=1
pids=()
for chain in "${chains[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  case "$chain" in
    scratch) scratch_runs & ;;
    ssl\ *) row=${chain#ssl }
            echo "== $row (log: $WORK_DIR/$row.log)"
            ssl_row "$row" 1 > "$WORK_DIR/$row.log" 2>&1 & ;;
    *) row_runs $chain & ;;
  esac
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
if [ "$failed" = 1 ]; then
  echo "error: a run failed; its log is in $WORK_DIR/*.log (a re-run keeps the finished runs)" >&2
  exit 1
fi
echo
"$PY" "$HERE/effect_report.py" "$RUNS" --out "$WORK_DIR/effect"
per_seed=$([ "$PRETRAIN_PER_SEED" = 1 ] && echo "for each seed" || echo "once")
echo "(pre-training $PRE_EPOCHS epochs unless a row says otherwise, $per_seed; fine-tuning $FT_EPOCHS epochs on $DIGITS_PER_CLASS digits per class;" \
     "seeds: $SEEDS; $(( (SECONDS - started) / 60 )) min)"
for row in $SSL_ROWS; do
  echo
  case "$row" in hpt) table=$WORK_DIR/hpt/hpt_effect.md ;; deepercluster) table=$WORK_DIR/ssl/ssl_effect.md ;; esac
  if [ -f "$table" ]; then cat "$table"; else echo "$row: no table ($table); see $WORK_DIR/$row.log"; fi
done
