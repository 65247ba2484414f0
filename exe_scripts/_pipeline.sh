# Sourced by every exe_*.sh: how to launch the three stages (build the database, pre-train, fine-tune).
# Each script sets its own defaults first; every one of these can be overridden from the environment:
#   LAUNCHER         mpirun | torchrun | none   (default: mpirun when more than one process, else none)
#   NGPUS, NPERNODE  pre-training processes in all / per node;  FT_NGPUS, FT_NPERNODE for fine-tuning
#   HOSTFILE         mpirun --hostfile for several nodes (the script runs on the first node)
#   MPI_ARGS         extra mpirun flags (e.g. --oversubscribe);  NODE_RANK for torchrun on several nodes
#   MASTER_ADDR, MASTER_PORT   rendezvous (default: this machine's address, a random free-ish port)
#   WORKERS          render processes on this machine (default: all cores)
#   PYTHON           interpreter (default: python, else python3)
#   RENDER_ARGS, PRE_ARGS, FT_ARGS   extra flags appended to a stage; they override the recipe
#   STAGES           stages to run, default "render pretrain finetune" (e.g. STAGES=finetune)
#   DRY_RUN=1        print each command instead of running it
# shellcheck shell=bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT_NAME="$(basename "$0")"
if [ -z "${PYTHON:-}" ]; then
  if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"   # fdsl from this checkout, installed or not
export FDSL="${FDSL:-$PYTHON -m fdsl}"                  # read by renderers/_fdsl.sh
export WORKERS=${WORKERS:-$(nproc 2>/dev/null || echo 4)}
export PYTHONUNBUFFERED=1 WANDB_MODE=${WANDB_MODE:-offline}
STAGES=${STAGES:-render pretrain finetune}
read -r -a RENDER_EXTRA <<< "${RENDER_ARGS:-}"
read -r -a PRE_EXTRA <<< "${PRE_ARGS:-}"
read -r -a FT_EXTRA <<< "${FT_ARGS:-}"

fail() {  # one line naming the problem and the fix, exit status 2
  echo "$SCRIPT_NAME: error: $*" >&2
  exit 2
}

stage() {  # stage NAME: true when NAME is one of $STAGES
  [[ " $STAGES " == *" $1 "* ]]
}

need_dir() {  # need_dir PATH WHAT HOW-TO-FIX
  [ -d "$1" ] || [ -n "${DRY_RUN:-}" ] || fail "$2 not found: $1 ($3)"
}

need_file() {
  [ -f "$1" ] || [ -n "${DRY_RUN:-}" ] || fail "$2 not found: $1 ($3)"
}

in_repo() {  # in_repo PATH: PATH itself when absolute, else relative to the checkout (configs/...)
  case "$1" in /*) printf '%s' "$1" ;; *) printf '%s' "$ROOT/$1" ;; esac
}

need_checkpoint() {  # the pre-trained weights: made by the pretrain stage, so required now only without it
  stage finetune && ! stage pretrain || return 0
  need_file "$1" "pre-trained checkpoint" "run the pretrain stage first, or set PRETRAINED to a checkpoint"
}

need_finetune_data() {  # the fine-tuning set must hold train/ and val/ (or validation/) image folders
  stage finetune || return 0
  need_dir "$1" "fine-tuning data set" "set FT_DATA to a folder holding train/<class>/ and val/<class>/ images"
  need_dir "$1/train" "fine-tuning training split" "FT_DATA must hold train/<class>/*.png|jpg"
  [ -d "$1/val" ] || [ -d "$1/validation" ] || [ -n "${DRY_RUN:-}" ] \
    || fail "fine-tuning validation split not found: $1/val (FT_DATA must hold val/<class>/ or validation/<class>/)"
}

run() {  # run CMD...: echo it, then run it (or only echo it with DRY_RUN=1)
  printf '+'; printf ' %q' "$@"; printf '\n'
  [ -n "${DRY_RUN:-}" ] || "$@"
}

render() {  # render RENDERER OUT [flags...]: build a database with renderers/RENDERER.sh (published settings)
  local renderer=$1 out=$2; shift 2
  stage render || return 0
  run env OUT="$out" bash "$ROOT/renderers/$renderer.sh" "$@" "${RENDER_EXTRA[@]}"
}

launch() {  # launch NPROCS NPERNODE SCRIPT.py [flags...]: one process, or NPROCS under mpirun / torchrun
  local nprocs=$1 npernode=$2 script=$ROOT/$3; shift 3
  local launcher=${LAUNCHER:-}
  if [ -z "$launcher" ]; then
    if [ "$nprocs" -gt 1 ]; then launcher=mpirun; else launcher=none; fi
  fi
  export MASTER_ADDR=${MASTER_ADDR:-$(hostname -I 2>/dev/null | awk '{print $1}')}
  export MASTER_ADDR=${MASTER_ADDR:-localhost}
  export MASTER_PORT=${MASTER_PORT:-$((20000 + RANDOM % 20000))}
  case "$launcher" in
    none)
      run "$PYTHON" "$script" "$@" ;;
    mpirun)
      command -v mpirun >/dev/null 2>&1 || [ -n "${DRY_RUN:-}" ] \
        || fail "mpirun not found (install OpenMPI, or run with LAUNCHER=torchrun or LAUNCHER=none)"
      local hosts=() mpi_extra=()
      [ -n "${HOSTFILE:-}" ] && hosts=(--hostfile "$HOSTFILE")
      read -r -a mpi_extra <<< "${MPI_ARGS:-}"
      # -x forwards these variables to every rank; OpenMPI does not do it by itself on remote nodes
      run mpirun "${hosts[@]}" "${mpi_extra[@]}" -npernode "$npernode" -np "$nprocs" \
        -x MASTER_ADDR -x MASTER_PORT -x PYTHONPATH -x PYTHONUNBUFFERED -x PATH -x LD_LIBRARY_PATH -x WANDB_MODE \
        "$PYTHON" "$script" "$@" ;;
    torchrun)
      # one node: torchrun starts all NPERNODE processes; several nodes: run this script on each with NODE_RANK
      local nnodes=$(( (nprocs + npernode - 1) / npernode ))
      run "$PYTHON" -m torch.distributed.run --nproc_per_node "$npernode" --nnodes "$nnodes" \
        --node_rank "${NODE_RANK:-0}" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" "$script" "$@" ;;
    *)
      fail "unknown LAUNCHER=$launcher (use mpirun, torchrun or none)" ;;
  esac
}

pretrain() {  # pretrain [flags...]
  stage pretrain || return 0
  launch "$NGPUS" "$NPERNODE" pretrain.py "$@" "${PRE_EXTRA[@]}"
}

finetune() {  # finetune [flags...]
  stage finetune || return 0
  launch "${FT_NGPUS:-$NGPUS}" "${FT_NPERNODE:-$NPERNODE}" finetune.py "$@" "${FT_EXTRA[@]}"
}

shard_pattern() {  # shard_pattern DIR SAMPLES SHARD_SIZE: the brace pattern of the shards fdsl render wrote
  printf '%s/SHARDS-{000000..%06d}.tar' "$1" $(( ($2 + $3 - 1) / $3 - 1 ))
}

# The pre-training images, by FORMAT: png (image folders, the published way), wds (webdataset shards written by
# fdsl render, best for 21k classes), onthefly (rendered inside the DataLoader workers: nothing on disk).
render_db() {  # render_db RENDERER DB_DIR [flags...]: build the database in the chosen FORMAT (none on the fly)
  local renderer=$1 dir=$2; shift 2
  case "$FORMAT" in
    png) render "$renderer" "$dir" --classes "$CLASSES" --instances "$INSTANCES" "$@" ;;
    wds) render "$renderer" "$dir" --classes "$CLASSES" --instances "$INSTANCES" --format wds \
           --shard-size "$SHARD_SIZE" "$@" ;;
    onthefly) ;;
    *) fail "unknown FORMAT=$FORMAT (use png, wds or onthefly)" ;;
  esac
}

pretrain_data() {  # pretrain_data DATABASE IMAGE_DIR SHARD_DIR: the pretrain.py arguments that name the images
  local db=$1 images=$2 shards=$3
  case "$FORMAT" in
    png)
      if stage pretrain; then
        need_dir "$images" "pre-training database" "build it first: run with STAGES=render, or point DB_DIR at it"
      fi
      PRE_DATA=("$images") ;;
    wds)
      PRE_DATA=(/NOT/WORKING -w --trainshards "$(shard_pattern "$shards" $((CLASSES * INSTANCES)) "$SHARD_SIZE")"
                --dataset_size $((CLASSES * INSTANCES))) ;;
    onthefly)
      PRE_DATA=(--synthetic "$db" --synthetic-instances "$INSTANCES") ;;
  esac
}

# settings are checked when the script starts, before any work
case "${LAUNCHER:-}" in ""|mpirun|torchrun|none) ;; *) fail "unknown LAUNCHER=$LAUNCHER (use mpirun, torchrun or none)" ;; esac
case "${FORMAT:-png}" in png|wds|onthefly) ;; *) fail "unknown FORMAT=$FORMAT (use png, wds or onthefly)" ;; esac
for s in $STAGES; do
  case "$s" in render|pretrain|finetune) ;; *) fail "unknown stage '$s' in STAGES (use render, pretrain, finetune)" ;; esac
done
