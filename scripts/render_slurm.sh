#!/usr/bin/env bash
# A 21k database built by SLURM tasks: srun starts one task per node, each runs --cpus-per-task
# workers on its block of classes; task 0 checks the whole database at the end. Resubmit the same
# job after a failure or a time-out: complete classes / shards are skipped.
#   DB=rcdb OUT=data/RCDB-21k sbatch scripts/render_slurm.sh
#   DB=visualatom OUT=data/VisualAtom-21k sbatch --nodes=8 scripts/render_slurm.sh --layout trainer
#SBATCH --job-name=fdsl-render
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=64
#SBATCH --time=04:00:00
set -euo pipefail
DB=${DB:-rcdb}
OUT=${OUT:-data/${DB}-21k}
FORMAT=${FORMAT:-wds}
export PYTHONUNBUFFERED=1
# fdsl reads SLURM_PROCID / SLURM_NTASKS (or mpi4py under srun --mpi=pmix); no MASTER_ADDR is needed to render.
srun python -m fdsl render "$DB" --out "$OUT" --classes 21000 --instances 1000 --format "$FORMAT" \
  --workers "${SLURM_CPUS_PER_TASK:-1}" --no-progress "$@"
