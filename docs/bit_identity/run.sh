#!/bin/bash
# Train the bit-identity runs of every entry script into OUT: 2,000 iterations each, one seed and three vectorised
# seeds (the teacher script trains one seed), small networks, on the CPU (about 4 minutes on 2 cores). Compare two such folders with
#   python experiments/compare_runs.py BEFORE/gauss_seed0 AFTER/gauss_seed0   (and so on)
# Usage: docs/bit_identity/run.sh REPO OUT   (REPO: a checkout of the code to test; PY: its interpreter)
set -euo pipefail
cd "$1"
PY=${PY:-python}
COMMON="--width 64 --depth 2 --batch_size 256 --show_iter 250 --eval_samples 2000 --device cpu --no_progress --plot_every 0 --max_iter 2000 --out_dir $2"
for seeds in "--seed 0 --name" "--seeds 0-2 --name"; do
  tag=$([ "${seeds%% *}" = "--seed" ] && echo 1 || echo 3)
  $PY train_upper_diffusion.py --true_score $COMMON --ema_decay 0.99 --power_uncapped --power_interval 100 $seeds gauss$tag
  $PY train_upper_flow.py --true_score $COMMON --power_interval 100 --flow_type NSF $seeds nsf$tag
  $PY train_diff_instruct.py --true_score $COMMON --score_step 2 --anneal_power --power_interval 100 $seeds di$tag
done
$PY train_teacher.py $COMMON --heun_steps 10 --ema_decay 0.99 --seed 0 --name teacher   # one seed: no --seeds
