#!/usr/bin/env bash
# A 21k database built by many ranks with OpenMPI: each rank takes a contiguous block of classes and
# runs WORKERS processes on it; rank 0 checks the whole database at the end. Re-run the same command
# after a crash or a kill: complete classes / shards are skipped, the output is byte-identical.
#   DB=rcdb OUT=data/RCDB-21k NODES=4 RANKS_PER_NODE=8 WORKERS=8 HOSTFILE=hosts.txt bash scripts/render_mpi.sh
#   DB=visualatom OUT=data/VisualAtom-21k ... bash scripts/render_mpi.sh --layout trainer
#   DB=exfractaldb OUT=data/ExFractalDB-21k ... bash scripts/render_mpi.sh
# Extra arguments go to `fdsl render`; MPIRUN_ARGS to mpirun. Estimate first (nothing written):
#   DB=rcdb OUT=data/RCDB-21k bash scripts/render_mpi.sh --estimate
set -euo pipefail
DB=${DB:-rcdb}
OUT=${OUT:-data/${DB}-21k}
NODES=${NODES:-1}
RANKS_PER_NODE=${RANKS_PER_NODE:-1}
WORKERS=${WORKERS:-$(( $(nproc) / RANKS_PER_NODE ))}
FORMAT=${FORMAT:-wds}  # wds: 21,000 shards of 1,000 images; png: 21 million files
HOSTS=()
[ -n "${HOSTFILE:-}" ] && HOSTS=(--hostfile "$HOSTFILE")
export PYTHONUNBUFFERED=1
# -x forwards to remote ranks the variables OpenMPI does not pass by itself.
FORWARD=()
for name in PYTHONUNBUFFERED PATH LD_LIBRARY_PATH PYTHONPATH; do [ -n "${!name:-}" ] && FORWARD+=(-x "$name"); done
# shellcheck disable=SC2086
mpirun "${HOSTS[@]}" ${MPIRUN_ARGS:-} -npernode "$RANKS_PER_NODE" -np $(( NODES * RANKS_PER_NODE )) "${FORWARD[@]}" \
  python -m fdsl render "$DB" --out "$OUT" --classes 21000 --instances 1000 --format "$FORMAT" \
  --workers "$WORKERS" --no-progress "$@"
