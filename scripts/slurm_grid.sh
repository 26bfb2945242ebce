#!/bin/bash
# One recipe of the MoG40 experiments on a SLURM cluster: one array task per method, each training its seeds
# vectorised on one GPU. Submit from the repository root (the array size is the recipe's number of methods:
# paper 8, matched 10, published 2; `python run_grid.py --list` shows them):
#   sbatch --array=0-7 scripts/slurm_grid.sh                          # recipe paper
#   RECIPE=matched sbatch --array=0-9 scripts/slurm_grid.sh
# Extra training flags: GRID_FLAGS="--power_interval 100" sbatch scripts/slurm_grid.sh
#
# Preemption and time limits: --signal=B:TERM@300 makes SLURM send SIGTERM to this script 5 minutes before the
# job's end; it is passed on to run_grid.py and the training process, which saves checkpoints/last.pt at the
# current iteration and exits with 143. The task then requeues itself (--requeue), and the requeued task continues
# from the checkpoints (run_grid.py --resume). A preempting cluster that sends SIGTERM gets the same treatment.
#SBATCH --job-name=vardiu-grid
#SBATCH --array=0-7
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --time=24:00:00
#SBATCH --signal=B:TERM@300
#SBATCH --requeue
#SBATCH --output=runs/grid/logs/slurm-%A_%a.out
set -uo pipefail
mkdir -p runs/grid/logs
PYTHON=${VARDIU_PYTHON:-.venv/bin/python}
# shellcheck disable=SC2086
"$PYTHON" run_grid.py --recipe "${RECIPE:-paper}" --method_index "$SLURM_ARRAY_TASK_ID" --seeds "${SEEDS:-0-9}" \
    --max_iter "${MAX_ITER:-1000000}" --out_dir runs/grid --gpus 0 --resume -- ${GRID_FLAGS:-} &
child=$!
trap 'signalled=1; kill -TERM "$child" 2>/dev/null' TERM
wait "$child"; code=$?
if [ -n "${signalled:-}" ]; then wait "$child"; code=$?; fi  # the trap interrupted wait: wait for the save
if [ "$code" -eq 143 ] && command -v scontrol >/dev/null; then
  echo "stopped by SIGTERM after saving; requeueing ${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}_${SLURM_ARRAY_TASK_ID:-}"
  scontrol requeue "${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}${SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID}"
fi
exit "$code"
