#!/usr/bin/env bash
# The high-dimensional pilot (docs/high-dimensional.md), every run side by side on one GPU: VarDiU (true score,
# uniform weights, uncapped power annealed 10x faster than the paper's, 5 vectorised seeds) on MoG40 in d = 8, 32,
# 128, with --precondition and without it, and an EDM teacher for each d (for Diff-Instruct's student and teacher
# mode). Usage: [TIME_LIMIT=minutes] scripts/highdim_pilot.sh OUT [ITERATIONS] [TEACHER_ITERATIONS]
set -euo pipefail
OUT=$1; IT=${2:-50000}; TIT=${3:-40000}; PY=${PY:-python}
LIMIT=${TIME_LIMIT:+--time_limit $TIME_LIMIT}
C="--true_score --seeds 0-4 --max_iter $IT --weight uniform --power_uncapped --power_interval 100 --out_dir $OUT
   --no_progress --plot_every 0 --save_every 0 $LIMIT"
$PY train_upper_diffusion.py $C --dim 8 --sigma_max 150 --precondition --name gauss_d8_s150 &
$PY train_upper_diffusion.py $C --dim 8 --sigma_max 150 --name gauss_d8_s150_raw &
$PY train_upper_diffusion.py $C --dim 8 --sigma_max 20 --precondition --name gauss_d8_s20 &
$PY train_upper_flow.py $C --dim 8 --sigma_max 150 --precondition --name nsf_d8_s150 &
$PY train_upper_diffusion.py $C --dim 32 --sigma_max 250 --precondition --name gauss_d32_s250 &
$PY train_upper_diffusion.py $C --dim 128 --sigma_max 420 --precondition --name gauss_d128_s420 &
for d_s in 8:150 32:250 128:420; do
  d=${d_s%%:*}; s=${d_s##*:}
  $PY train_teacher.py --dim "$d" --sigma_max "$s" --sampler_sigma_max $((2 * s)) --max_iter "$TIT" --show_iter 10000 \
    --eval_samples 5000 --out_dir "$OUT" --name "teacher_d$d" --no_progress --plot_every 0 $LIMIT &
done
wait
