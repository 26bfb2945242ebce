"""Sample quality of a teacher checkpoint: EDM Heun samples vs MoG40 (log density, log MMD, modes).

    python benchmarks/teacher_quality.py --teacher_ckpt teachers/mog40_edm.pt --seeds 0 1 2 --sampler_sigma_max 80 40
"""
from __future__ import annotations

import argparse

import torch

from models.denoiser import heun_sample
from utils.metrics import SampleEvaluator
from utils.registry import make_target
from utils.teachers import load_teacher
from utils.loop import REFERENCE_SET_SEED


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher_ckpt", default=None)
    p.add_argument("--target", default="mog40")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sampler_sigma_max", type=float, nargs="+", default=[80.0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    device = torch.device(a.device)
    target = make_target(a.target).to(device)
    teacher = load_teacher(a.teacher_ckpt, target, device)
    evaluator = SampleEvaluator(target, a.samples, seed=REFERENCE_SET_SEED)
    print("| sampler sigma_max | seed | log density | log MMD | modes | near a mode |\n|---|---|---|---|---|---|")
    for s_max in a.sampler_sigma_max:
        for seed in a.seeds:
            g = torch.Generator(device=device).manual_seed(seed)
            m = evaluator(heun_sample(teacher, a.samples, a.steps, 0.1, s_max, 7.0, generator=g))
            print(f"| {s_max:g} | {seed} | {m['logpd']:.3f} | {m['log_mmd']:.2f} | {m['modes']} | {m['near_mode']:.3f} |")
    true = evaluator(target.sample(a.samples, generator=torch.Generator().manual_seed(1)))
    print(f"| true samples | 1 | {true['logpd']:.3f} | {true['log_mmd']:.2f} | {true['modes']} | {true['near_mode']:.3f} |")


if __name__ == "__main__":
    main()
