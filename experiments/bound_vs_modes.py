"""How much of the divergence's pull towards all 40 modes the prior-proposal bound keeps, noise level by noise level.

    python experiments/bound_vs_modes.py --dim 8 --out results/highdim/bound_vs_modes/d8.json

For generators that sample m of MoG40's modes exactly (equal weights, the target's std s; m of --modes, the
modes a seeded permutation lists first), at each noise level sigma this estimates

  kl      KL(p_m,sigma || p_d,sigma) = E log p_m,sigma(x_t) - log p_d,sigma(x_t), both blurred mixtures in closed
          form (``GaussianMixture.log_prob``); at small sigma it is log(40 / m), at large sigma 0.
  bound   what the generator descends above --prior_proposals_sigma: E[prior_log_average - log p_d,sigma(x_t)]
          on batches of n = --draws rows x_t = x0_i + sigma eps_i, each row's own draw among the n
          (``losses.vardiu.prior_log_average``, the loss's own function). bound >= kl; bound - kl is the gap.

A generator on fewer modes has more draws per mode, so its estimate is tighter and its gap smaller: the bound's
drop from m = 40 to m modes, bound_m - bound_40, is then less than the divergence's, kl_m - kl_40 = about
log(40 / m) once the modes are apart. Their ratio ``kept`` is the share of the pull towards the balanced mixture
that the bound keeps at that sigma: 1, all of it (the gap does not depend on m); 0, none (the bound is flat in m
and the generator feels no force to spread); below 0, the bound prefers the collapsed generator. Each value is a
mean over --batches batches of n rows, with its standard error over batches (``kept_share``).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

import torch

from losses.vardiu import prior_log_average
from utils.cli import UsageError, exit_on_usage_error
from utils.registry import make_target
from utils.run_io import write_result
from utils.targets import GaussianMixture


def float64_mixture(means: torch.Tensor, std: float) -> GaussianMixture:
    """An equal-weight mixture of N(means_k, std^2 I) whose means stay float64 (the constructor keeps float32)."""
    mixture = GaussianMixture(means, std)
    mixture.means = means.double()
    return mixture


def mode_subsets(dim: int, seed: int) -> tuple[GaussianMixture, Callable[[int], GaussianMixture], torch.Generator]:
    """(float64 MoG40 in ``dim``; m -> the equal-weight float64 mixture, the target's std, on the m modes that a
    permutation seeded ``seed`` lists first; that seeded random generator, for the batches' draws)."""
    mog40 = make_target("mog40", dim)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(40, generator=gen)
    return (float64_mixture(mog40.means, mog40.std),
            lambda m: float64_mixture(mog40.means[order[:m]], mog40.std), gen)


def kl_and_bound(generator: GaussianMixture, target: GaussianMixture, sigma: float, draws: int, batches: int,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per batch: the mean over its ``draws`` rows of log p_m,sigma(x_t) - log p_d,sigma(x_t) (the divergence's
    integrand) and of prior_log_average(x0, x_t, sigma, n) - log p_d,sigma(x_t) (the bound's): two tensors
    [batches], float64."""
    kl, bound = [], []
    for _ in range(batches):
        x0 = generator.sample(draws, generator=gen).double()
        x_t = x0 + sigma * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        s = torch.full((draws,), sigma, dtype=torch.float64)
        log_p_d = target.log_prob(x_t, sigma)
        kl.append((generator.log_prob(x_t, sigma) - log_p_d).mean())
        bound.append((prior_log_average(x0, x_t, s, draws) - log_p_d).mean())
    return torch.stack(kl), torch.stack(bound)


def kept_share(kl_m: torch.Tensor, bound_m: torch.Tensor, kl_all: torch.Tensor, bound_all: torch.Tensor
               ) -> tuple[float, float]:
    """(bound_m - bound_all) / (kl_m - kl_all) from per-batch values [batches], and its standard error by the
    delta method for a ratio of means: the standard error of the per-batch residual
    (bound_m - bound_all) - ratio * (kl_m - kl_all), divided by |kl_m - kl_all| (one m's kl and bound share their
    draws, so the residual carries their covariance; batch b of m and of all 40 are independent)."""
    num, den = bound_m - bound_all, kl_m - kl_all
    ratio = num.mean() / den.mean()
    residual = num - ratio * den
    return float(ratio), float(residual.std() / math.sqrt(residual.numel()) / den.mean().abs())


@exit_on_usage_error
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=8, help="MoG40's dimension")
    parser.add_argument("--draws", type=int, default=512, help="n: the batch's distinct draws (B/2 with pairs)")
    parser.add_argument("--batches", type=int, default=16, help="independent batches per noise level and m")
    parser.add_argument("--modes", default="1,10,20,40", help="comma-separated numbers of modes m (40 is added)")
    parser.add_argument("--sigmas", default="0.5,2,5,10,20,30,50,80,150,250", help="comma-separated noise levels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON file to write (never overwritten)")
    a = parser.parse_args(argv)
    try:
        sigmas = [float(s) for s in a.sigmas.split(",")]
        modes = sorted({int(m) for m in a.modes.split(",")} | {40})
    except ValueError:
        raise UsageError(f"--sigmas {a.sigmas!r} / --modes {a.modes!r}: expected comma-separated numbers") from None
    if a.dim < 1 or a.draws < 2 or a.batches < 2 or min(sigmas) <= 0 or not 1 <= min(modes) <= max(modes) <= 40:
        raise UsageError("--dim must be positive, --draws and --batches at least 2, every sigma positive, every m "
                         "in 1..40")
    if Path(a.out).exists():
        raise UsageError(f"--out {a.out} exists; pick a new path (results are never overwritten)")
    target, on_modes, gen = mode_subsets(a.dim, a.seed)
    generators = {m: on_modes(m) for m in modes}
    rows = []
    for sigma in sigmas:
        series = {m: kl_and_bound(generators[m], target, sigma, a.draws, a.batches, gen) for m in modes}
        kl_all, bound_all = series[40]
        row = {"sigma": sigma, "by_m": {}}
        for m in modes:
            kl, bound = series[m]
            entry = {"kl": float(kl.mean()), "bound": float(bound.mean()),
                     "kl_se": float(kl.std() / math.sqrt(a.batches)),
                     "bound_se": float(bound.std() / math.sqrt(a.batches))}
            if m != 40:
                entry["kept"], entry["kept_se"] = kept_share(kl, bound, kl_all, bound_all)
            row["by_m"][str(m)] = entry
        rows.append(row)
        print(f"sigma {sigma:g}: " + "; ".join(
            f"m {m}: kl {row['by_m'][str(m)]['kl']:.3f}, bound {row['by_m'][str(m)]['bound']:.3f}"
            + (f", kept {row['by_m'][str(m)]['kept']:.2f}" if m != 40 else "") for m in modes))
    return write_result(a.out, "experiments/bound_vs_modes.py", argv,
                        {"dim": a.dim, "draws": a.draws, "batches": a.batches, "seed": a.seed, "modes": modes,
                         "torch": torch.__version__, "device": "cpu", "dtype": "float64", "rows": rows})


if __name__ == "__main__":
    main()
