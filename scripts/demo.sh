#!/usr/bin/env bash
# Set everything up, then train VarDiU (Gaussian posterior, true score) on MoG40 for a few minutes on the CPU.
# A demonstration of the pipeline at small scale (smaller networks, 20k iterations, faster annealing),
# not a reproduction of the paper's numbers. Extra arguments are passed to the training script.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
"$PY" train_upper_diffusion.py -true_score --sigma_min 0.1 --sigma_max 20 --weight sigma --power 2.0 \
  --power_interval 100 --width 256 --depth 3 --batch_size 512 --max_iter 20000 --show_iter 1000 \
  --eval_samples 5000 --plot_every 5 --device cpu --name demo "$@"
echo "demo: see runs/demo*/plots/ and runs/demo*/metrics.csv" >&2
