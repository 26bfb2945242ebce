#!/usr/bin/env bash
# Set everything up, then train VarDiU (Gaussian posterior, true score) on MoG40 for about 10 minutes on 2 CPU cores.
# Small scale: networks of width 256 and depth 3, batch 512, 20k iterations (the paper: 400 x 4, 1024, 1M), with a
# 6.7x faster power annealing, a 10x larger learning rate and an EMA of the generator, so that the picture is
# recognisable within minutes. Not a reproduction of the paper's numbers. Extra arguments go to the training script.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
"$PY" train_upper_diffusion.py -true_score --sigma_min 0.1 --sigma_max 20 --weight uniform --power_uncapped \
  --power_interval 150 --lr 1e-3 --ema_decay 0.999 --width 256 --depth 3 --batch_size 512 --max_iter 20000 \
  --show_iter 1000 --eval_samples 5000 --plot_every 5 --device cpu --name demo "$@"
echo "demo: see runs/demo*/plots/ and runs/demo*/metrics.csv" >&2
