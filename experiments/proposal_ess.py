"""How usable are the batch's prior draws as importance proposals (--prior_proposals_sigma) at each noise level?

    python experiments/proposal_ess.py --dim 8 --out results/highdim/proposal_ess/d8.json

For a generator that samples MoG40 exactly (the target's own samples stand in for g(z_1..z_n), n = B/2 = 512 as
in a training batch of 1,024 antithetic rows), each row x_t = x0_i + sigma eps weighs the n draws by
N(x_t; x0_j, sigma^2 I), its own among them (``losses.vardiu.pairwise_log_likelihood``, as the loss weighs them). The effective sample size of
those weights, (sum w)^2 / sum w^2, between 1 (one draw carries all the weight: no better than the row's own z)
and n, is reported per sigma as the median and the 10th percentile over rows; compare K + 1 for --iw_samples K.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from losses.vardiu import pairwise_log_likelihood
from utils.cli import UsageError, exit_on_usage_error
from utils.registry import make_target
from utils.run_io import write_result


def proposal_ess(x0: torch.Tensor, x_t: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per row of x_t [B, d]: the effective sample size of the weights N(x_t; x0_j, sigma^2 I) over x0 [n, d]: [B]."""
    w = torch.softmax(pairwise_log_likelihood(x0, x_t, torch.full((x_t.shape[0],), float(sigma))), -1)
    return 1.0 / w.pow(2).sum(-1)


@exit_on_usage_error
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=8, help="MoG40's dimension")
    parser.add_argument("--draws", type=int, default=512, help="n: the batch's distinct draws (B/2 with pairs)")
    parser.add_argument("--batches", type=int, default=8, help="independent batches to pool")
    parser.add_argument("--sigmas", default="2,5,10,20,30,50,80,150,250", help="comma-separated noise levels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON file to write (never overwritten)")
    a = parser.parse_args(argv)
    try:
        sigmas = [float(s) for s in a.sigmas.split(",")]
    except ValueError:
        raise UsageError(f"--sigmas {a.sigmas!r}: expected comma-separated numbers") from None
    if a.dim < 1 or a.draws < 2 or a.batches < 1 or min(sigmas) <= 0:
        raise UsageError("--dim and --batches must be positive, --draws at least 2, every sigma positive")
    if Path(a.out).exists():
        raise UsageError(f"--out {a.out} exists; pick a new path (results are never overwritten)")
    target = make_target("mog40", a.dim)
    gen = torch.Generator().manual_seed(a.seed)
    rows = []
    for sigma in sigmas:
        ess = []
        for _ in range(a.batches):
            x0 = target.sample(a.draws, generator=gen)
            x_t = x0 + sigma * torch.randn(x0.shape, generator=gen)
            ess.append(proposal_ess(x0, x_t, sigma))
        ess = torch.cat(ess)
        rows.append({"sigma": sigma, "ess_median": float(ess.median()), "ess_p10": float(ess.quantile(0.1))})
        print(f"sigma {sigma:g}: effective sample size median {rows[-1]['ess_median']:.1f}, "
              f"10th percentile {rows[-1]['ess_p10']:.1f} of {a.draws}")
    return write_result(a.out, "experiments/proposal_ess.py", argv,
                        {"dim": a.dim, "draws": a.draws, "batches": a.batches, "seed": a.seed,
                         "torch": torch.__version__, "device": "cpu", "rows": rows})


if __name__ == "__main__":
    main()
