"""How far the prior-proposal bound's pull on each generator sample is from the divergence's, noise level by noise level.

    python experiments/prior_force.py --dim 8 --out results/highdim/prior_force/d8.json

For a generator that samples m of MoG40's modes exactly (equal weights, the target's std s; the m modes a seeded
permutation lists first, as in ``experiments/bound_vs_modes.py``) and a batch of n distinct draws x0_j in
antithetic pairs of rows x_t = x0_j +- sigma eps_j (the training batch's layout, B = 2n), this compares three
forces on each x0_j [n, d], all on the same draws at one noise level sigma:

  exact     sum over x0_j's two rows of s_m,sigma(x_t) - s_d,sigma(x_t): the divergence's pull, what a generator
            following KL(p_m,sigma || p_d,sigma) with the exact scores of both blurred mixtures gets (Diff-Instruct
            with a perfect score network).
  bound     -d/dx0_j of the loss the generator descends above --prior_proposals_sigma,
            sum_r [prior_log_average_r - s_d(x_t^r) . x0_r] (``losses.vardiu.prior_log_average``, the loss's own
            function; s_d without gradient): through x_t^r and through every row's pool of n draws.
  pathwise  the same with the pool held fixed: sum over x0_j's rows of grad_x log phat(x_t) - s_d(x_t), phat the
            pool's kernel average; it drops the term whose mean is zero for the exact density
            (E_x grad_theta log p_theta(x) = 0), the "sticking the landing" estimator of Roeder et al. (2017).

Per sigma: ``signal``, the root mean square of |exact|; ``bound_error`` and ``pathwise_error``, the root mean
square of |estimate - exact| over the n draws and --batches batches (bias and variance together, the draws' own
noise excluded: every force sees the same x_t); and ``*_cos``, the cosine between the batch's estimate and exact
forces stacked over its draws (1: the same direction; none where ``signal`` is below 1e-6, as when the noise
leaves the modes apart and the two blurred mixtures agree around the generator's draws).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from experiments.bound_vs_modes import mode_subsets
from losses.vardiu import prior_log_average
from utils.cli import UsageError, exit_on_usage_error
from utils.run_io import write_result
from utils.targets import GaussianMixture


NO_SIGNAL = 1e-6  # a root-mean-square exact force below this is round-off (the pulls measured are 3e-4 or more)


def forces(generator: GaussianMixture, target: GaussianMixture, sigma: float, n: int, gen: torch.Generator
           ) -> dict[str, torch.Tensor]:
    """One batch of n draws in antithetic pairs: the exact, bound and pathwise forces on each draw, [n, d] each
    (float64)."""
    x0 = generator.sample(n, generator=gen).double().requires_grad_(True)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    pool = torch.cat([x0, x0])  # rows i and i + n share x0_i (``prior_log_average`` reads the first n)
    x_t = pool + sigma * torch.cat([eps, -eps])
    s = torch.full((2 * n,), sigma, dtype=torch.float64)
    with torch.no_grad():
        target_score = target.score(x_t, sigma)
        exact = generator.score(x_t, sigma) - target_score
    per_draw = lambda rows: rows[:n] + rows[n:]  # noqa: E731 (sum over a draw's two rows)
    # the bound: the generator's surrogate on prior rows, differentiated through x_t and through the pool
    surrogate = prior_log_average(pool, x_t, s, n).sum() - (target_score * pool).sum()
    (bound,) = torch.autograd.grad(surrogate, x0)
    # pathwise: the pool's draws fixed, so only x_t carries the gradient
    x_free = x_t.detach().requires_grad_(True)
    (score_hat,) = torch.autograd.grad(prior_log_average(pool.detach(), x_free, s, n).sum(), x_free)
    return {"exact": per_draw(exact), "bound": bound, "pathwise": per_draw(score_hat - target_score)}


def summarise(batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Root mean squares of |exact| and of each estimate's error, and each estimate's mean cosine with exact."""
    exact = torch.stack([b["exact"] for b in batches])  # [batches, n, d]
    out = {"signal": float(exact.pow(2).sum(-1).mean().sqrt())}
    for name in ("bound", "pathwise"):
        est = torch.stack([b[name] for b in batches])
        out[f"{name}_error"] = float((est - exact).pow(2).sum(-1).mean().sqrt())
        cos = (est * exact).sum((1, 2)) / (est.flatten(1).norm(dim=1) * exact.flatten(1).norm(dim=1))
        out[f"{name}_cos"] = float(cos.mean()) if out["signal"] > NO_SIGNAL else None  # None: no pull to compare
    return out


@exit_on_usage_error
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=8, help="MoG40's dimension")
    parser.add_argument("--modes", type=int, default=20, help="m: the generator's modes, of 40")
    parser.add_argument("--draws", default="512,2048",
                        help="comma-separated n: distinct draws per batch (B / 2; 512 is batch 1024)")
    parser.add_argument("--batches", type=int, default=8, help="independent batches per noise level and n")
    parser.add_argument("--sigmas", default="2,5,10,20,50,100,150,250", help="comma-separated noise levels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON file to write (never overwritten)")
    a = parser.parse_args(argv)
    try:
        sigmas = [float(s) for s in a.sigmas.split(",")]
        draws = [int(n) for n in a.draws.split(",")]
    except ValueError:
        raise UsageError(f"--sigmas {a.sigmas!r} / --draws {a.draws!r}: expected comma-separated numbers") from None
    if a.dim < 1 or min(draws) < 2 or a.batches < 1 or min(sigmas) <= 0 or not 1 <= a.modes <= 40:
        raise UsageError("--dim must be positive, every --draws at least 2, --batches at least 1, every sigma "
                         "positive, --modes in 1..40")
    if Path(a.out).exists():
        raise UsageError(f"--out {a.out} exists; pick a new path (results are never overwritten)")
    target, on_modes, gen = mode_subsets(a.dim, a.seed)
    generator = on_modes(a.modes)
    rows = []
    for sigma in sigmas:
        for n in draws:
            row = {"sigma": sigma, "draws": n,
                   **summarise([forces(generator, target, sigma, n, gen) for _ in range(a.batches)])}
            rows.append(row)
            print(f"sigma {sigma:g}, n {n}: signal {row['signal']:.3g}, bound error {row['bound_error']:.3g}, "
                  f"pathwise error {row['pathwise_error']:.3g} (cosines {row['bound_cos']}, {row['pathwise_cos']})")
    return write_result(a.out, "experiments/prior_force.py", argv,
                        {"dim": a.dim, "modes": a.modes, "batches": a.batches, "seed": a.seed, "torch": torch.__version__,
                         "device": "cpu", "dtype": "float64", "rows": rows})


if __name__ == "__main__":
    main()
