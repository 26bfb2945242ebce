#!/bin/bash
# One recipe of the MoG40 experiments on a SLURM cluster: one array task per method, each training its seeds
# vectorised on one GPU. Submit from the repository root (the array size is the recipe's number of methods:
# paper 8, matched 10, published 2; `python run_grid.py --list` shows them):
#   sbatch --array=0-7 scripts/slurm_grid.sh                          # recipe paper
#   RECIPE=matched sbatch --array=0-9 scripts/slurm_grid.sh
# Extra training flags: GRID_FLAGS="--power_interval 100" sbatch scripts/slurm_grid.sh
#SBATCH --job-name=vardiu-grid
#SBATCH --array=0-7
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --time=24:00:00
#SBATCH --output=runs/grid/logs/slurm-%A_%a.out
set -euo pipefail
mkdir -p runs/grid/logs
PYTHON=${VARDIU_PYTHON:-.venv/bin/python}
# shellcheck disable=SC2086
exec "$PYTHON" run_grid.py --recipe "${RECIPE:-paper}" --method_index "$SLURM_ARRAY_TASK_ID" --seeds "${SEEDS:-0-9}" \
    --max_iter "${MAX_ITER:-1000000}" --out_dir runs/grid --gpus 0 -- ${GRID_FLAGS:-}
