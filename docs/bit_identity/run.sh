#!/bin/bash
# $1 = repo dir, $2 = out dir
cd "$1"
PY=/work/main/.venv/bin/python
COMMON="--width 64 --depth 2 --batch_size 256 --show_iter 1000 --eval_samples 2000 --device cpu --no_progress --plot_every 0 --out_dir $2"
$PY train_upper_diffusion.py --true_score $COMMON --max_iter 20000 --ema_decay 0.99 --power_uncapped --name gauss &
$PY train_diff_instruct.py --true_score $COMMON --max_iter 4000 --score_step 2 --anneal_power --power_interval 200 --name di
wait
$PY train_upper_flow.py --true_score $COMMON --max_iter 3000 --power_interval 200 --flow_type NSF --name nsf
$PY train_teacher.py $COMMON --max_iter 2000 --heun_steps 10 --name teacher --batch_size 256 
