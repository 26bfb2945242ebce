"""Where a trained VarDiU run's Gaussian posterior degenerates: the latent tails (docs/results.md).

    python experiments/posterior_tails.py --load RUN_FOLDER --out experiments/figures/posterior_tails.json

The loss of one sample holds -log q_phi(z | x_t, sigma) = sum_k (z_k - mu_k)^2 / (2 std_k^2) + log std_k + const,
with std = softplus(rho(x_t, sigma)) * sigma. Training draws z ~ N(0, I); in 2-D a latent of norm r or more comes
with probability exp(-r^2 / 2) (1 in 3,000 for r = 4, 1 in 66 million for r = 6), so the posterior is fitted where
|z| < 4 and extrapolates beyond. If its std collapses there, a rare draw costs -log q of any size.

For latents z = r (cos a, sin a) at --directions angles a per radius r, x_t = g(z) + sigma eps at noise level
--sigma, this reports per r: the largest |x0|, the smallest std / sigma over the latents and both coordinates
(softplus(rho)), the largest -log q, and exp(-r^2 / 2).
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn as nn

import train_upper_diffusion
from experiments.adam_bands import trained_method
from utils.cli import UsageError, exit_on_usage_error
from utils.run_io import load_checkpoint, write_result


@torch.no_grad()
def tail_probe(generator: nn.Module, posterior: nn.Module, radii: list[float], directions: int, sigma: float,
               seed: int = 0) -> list[dict]:
    """One row per radius r: latents z = r (cos a, sin a) [directions, 2], x_t = g(z) + sigma eps;
    max_x0_norm = max |g(z)|, min_std_ratio = min std / sigma, max_neg_log_q = max -log q(z | x_t, sigma),
    tail_probability = P(|z| >= r) = exp(-r^2 / 2) for z ~ N(0, I_2)."""
    rng = torch.Generator().manual_seed(seed)
    angles = torch.arange(directions) * (2 * math.pi / directions)
    sigmas = torch.full((directions,), sigma)
    rows = []
    for r in radii:
        z = r * torch.stack([angles.cos(), angles.sin()], dim=1)
        x0 = generator(z)
        x_t = x0 + sigma * torch.randn(x0.shape, generator=rng)
        _, std = posterior.mean_std(x_t, sigmas)
        rows.append({"radius": r, "max_x0_norm": float(x0.norm(dim=1).max()),
                     "min_std_ratio": float((std / sigma).min()),
                     "max_neg_log_q": float(-posterior.log_prob(z, x_t, sigmas).min()),
                     "tail_probability": math.exp(-r * r / 2)})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", required=True, help="a VarDiU Gaussian-posterior run folder (or its .pt file)")
    parser.add_argument("--radii", type=float, nargs="+", default=[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    parser.add_argument("--directions", type=int, default=256, help="latents per radius, at equal angles")
    parser.add_argument("--sigma", type=float, default=0.1, help="noise level of x_t (the paper's sigma_min)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="experiments/figures/posterior_tails.json")
    a = parser.parse_args(argv)
    if a.directions < 1 or a.sigma <= 0:
        raise UsageError("--directions must be at least 1 and --sigma positive")
    _, state = load_checkpoint(a.load)
    if state["config"].get("script") != train_upper_diffusion.SCRIPT:
        raise UsageError(f"--load {a.load}: not a run of {train_upper_diffusion.SCRIPT}; this probe reads the "
                         "Gaussian posterior's std, which a flow posterior does not have")
    method = trained_method(argparse.Namespace(**state["config"]), state)
    rows = tail_probe(method.networks["generator"], method.networks["posterior"], a.radii, a.directions, a.sigma,
                      a.seed)
    print(f"{a.load}: iteration {state['iteration']}, sigma {a.sigma}, {a.directions} latents per radius")
    for row in rows:
        print(f"  |z| = {row['radius']:4.1f} (P {row['tail_probability']:.1e}): max |x0| {row['max_x0_norm']:6.1f}, "
              f"min std / sigma {row['min_std_ratio']:.2e}, max -log q {row['max_neg_log_q']:.2e}")
    return write_result(a.out, "experiments/posterior_tails.py", argv,
                        {"iteration": state["iteration"], "true_score": state["config"].get("true_score"),
                         "sigma": a.sigma, "directions": a.directions, "rows": rows})


if __name__ == "__main__":
    exit_on_usage_error(main)()
