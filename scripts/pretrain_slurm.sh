#!/usr/bin/env bash
# SLURM example: 32 nodes x 4 GPUs, one task per GPU. fdsl reads SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID.
#   sbatch scripts/pretrain_slurm.sh /PATH/TO/VisualAtom21000
#SBATCH --job-name=fdsl-pretrain
#SBATCH --nodes=32
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --time=72:00:00
set -euo pipefail
DATA=${1:?usage: sbatch pretrain_slurm.sh DATA_DIR [extra flags]}; shift
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR
export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
export PYTHONUNBUFFERED=1
srun python pretrain.py "$DATA" --config configs/pretrain_visualatom_21k.yaml --output ./output/pretrain \
  --resume auto "$@"
