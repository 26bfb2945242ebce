"""The VarDiU bound's gap, and how much of the generator's gradient it makes, noise band by noise band
(docs/high-dimensional.md).

    python experiments/bound_gap.py --load RUN_FOLDER --out results/highdim/gap/NAME.json

For a generator x0 = g(z), z ~ N(0, I), and x_t = x0 + sigma eps, the bound replaces log p_theta(x_t | sigma) by
E_{p(z | x_t)} log [p(z) N(x_t; g(z), sigma^2) / q(z | x_t)], too large by the gap

    G(sigma) = E_{x_t} KL(p_theta(z | x_t) || q_phi(z | x_t)) >= 0,

and the generator minimises the gap with the KL. This estimates, at each noise level sigma of --sigmas, with
--samples draws x_t of the generator's joint and --proposals latents z_k ~ q(. | x_t) each, importance weights
w_k = p(z_k) N(x_t; g(z_k), sigma^2) / q(z_k | x_t):

  gap           E[log p(z) N(x_t; g(z)) / q(z | x_t)] (z, x_t from the joint) - E[log mean_k w_k].
                log mean_k w_k is below log p_theta(x_t) on average, so this overstates the gap; `ess` says how far
                to trust it (the effective sample size of the weights over K, 1 when q is the posterior).
  reverse_gap   E[log mean_k w_k - mean_k log w_k] ~ KL(q || p_theta(z | x_t)), the other direction.
  kl_grad       E|grad log p_theta(x_t) - s_d(x_t)|: the x-space gradient of the exact KL(p_theta || p_d) at
                sigma; grad log p_theta(x_t) = sum_k w_k (g(z_k) - x_t) / sigma^2 / sum_k w_k (self-normalised).
  gap_grad      E|b(x_t)|, b(x_t) = -E_{p(z | x_t)} grad_{x_t} log q(z | x_t), self-normalised over z_k: what the
                gap adds to the generator's x-space gradient. VarDiU's per-sample generator score is
                -grad_{x_t} log q(z | x_t) - eps / sigma, whose mean given x_t is grad log p_theta(x_t) + b(x_t).
  ratio         gap_grad / kl_grad: above 1, the gap steers the generator more than the divergence does.
  target_score, model_score  E|s_d(x_t)| and E|grad log p_theta(x_t)|, for scale.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn as nn

from experiments.adam_bands import VARDIU_SCRIPTS, trained_method
from models.networks import LOG_2PI, diagonal_normal_log_prob
from utils.cli import UsageError, exit_on_usage_error
from utils.registry import make_target
from utils.run_io import load_checkpoint, write_result


def log_joint(generator: nn.Module, z: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log p(z) + log N(x_t; g(z), sigma^2 I) for z, x_t [N, d], sigma [N] -> [N]."""
    d = z.shape[-1]
    residual = (x_t - generator(z)) / sigma.unsqueeze(-1)
    return (diagonal_normal_log_prob(z) - 0.5 * residual.pow(2).sum(-1) - d * torch.log(sigma)
            - 0.5 * d * LOG_2PI)


def band_statistics(generator: nn.Module, posterior: nn.Module, score, sigma: float, samples: int,
                    proposals: int, chunk: int, device: torch.device) -> dict:
    """The module docstring's statistics at one noise level, averaged over ``samples`` draws of x_t."""
    dim = generator.dim
    sums = dict.fromkeys(("bound_term", "log_mean_w", "mean_log_w", "ess", "kl_grad", "gap_grad", "target_score",
                          "model_score"), 0.0)
    for start in range(0, samples, chunk):
        n = min(chunk, samples - start)
        s = torch.full((n,), sigma, device=device)
        with torch.no_grad():
            z = torch.randn(n, dim, device=device)
            x_t = generator(z) + sigma * torch.randn(n, dim, device=device)
            bound_term = log_joint(generator, z, x_t, s) - posterior.log_prob(z, x_t, s)
            x_rep = x_t.repeat_interleave(proposals, 0)
            s_rep = s.repeat_interleave(proposals, 0)
            z_k = posterior.sample(x_rep, s_rep)
        # grad_{x_t} log q(z_k | x_t) for every proposal: rows are independent, so one backward gives all of them
        x_in = x_rep.clone().requires_grad_(True)
        log_q = posterior.log_prob(z_k, x_in, s_rep)
        grad_log_q, = torch.autograd.grad(log_q.sum(), x_in)
        with torch.no_grad():
            x0_k = generator(z_k)
            log_w = (log_joint(generator, z_k, x_rep, s_rep) - log_q.detach()).reshape(n, proposals)
            weights = torch.softmax(log_w, dim=1)  # self-normalised [n, K]
            log_mean_w = torch.logsumexp(log_w, dim=1) - math.log(proposals)
            model_score = torch.einsum("nk,nkd->nd", weights, (x0_k - x_rep).reshape(n, proposals, dim)) / sigma ** 2
            gap_grad = -torch.einsum("nk,nkd->nd", weights, grad_log_q.reshape(n, proposals, dim))
            target = score(x_t, s)
            sums["bound_term"] += float(bound_term.sum())
            sums["log_mean_w"] += float(log_mean_w.sum())
            sums["mean_log_w"] += float(log_w.mean(1).sum())
            sums["ess"] += float((1.0 / weights.pow(2).sum(1)).sum()) / proposals
            sums["kl_grad"] += float((model_score - target).norm(dim=1).sum())
            sums["gap_grad"] += float(gap_grad.norm(dim=1).sum())
            sums["target_score"] += float(target.norm(dim=1).sum())
            sums["model_score"] += float(model_score.norm(dim=1).sum())
    m = {k: v / samples for k, v in sums.items()}
    return {"sigma": sigma, "gap": m["bound_term"] - m["log_mean_w"], "reverse_gap": m["log_mean_w"] - m["mean_log_w"],
            "ess": m["ess"], "kl_grad": m["kl_grad"], "gap_grad": m["gap_grad"],
            "ratio": m["gap_grad"] / max(m["kl_grad"], 1e-30), "target_score": m["target_score"],
            "model_score": m["model_score"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", required=True, help="a VarDiU run folder (Gaussian or flow posterior) or its .pt")
    parser.add_argument("--sigmas", type=float, nargs="+", default=None,
                        help="noise levels (default: 8 log-spaced from the run's --sigma_min to --sigma_max)")
    parser.add_argument("--samples", type=int, default=2000, help="draws of x_t per noise level")
    parser.add_argument("--proposals", type=int, default=256, help="latents z_k ~ q(. | x_t) per draw")
    parser.add_argument("--chunk", type=int, default=64, help="draws of x_t per batch (memory: chunk * proposals)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON file to write (never overwritten)")
    a = parser.parse_args(argv)
    if min(a.samples, a.proposals, a.chunk) < 1:
        raise UsageError("--samples, --proposals and --chunk must be at least 1")
    if Path(a.out).exists():
        raise UsageError(f"--out {a.out} exists; pick a new path (results are never overwritten)")
    _, state = load_checkpoint(a.load)
    config = state["config"]
    if config.get("script") not in VARDIU_SCRIPTS:
        raise UsageError(f"--load {a.load}: not a VarDiU run (of {' or '.join(VARDIU_SCRIPTS)}); pick one that is")
    sigmas = a.sigmas or [float(s) for s in torch.logspace(math.log10(config["sigma_min"]),
                                                            math.log10(config["sigma_max"]), 8)]
    if min(sigmas) <= 0:
        raise UsageError("--sigmas must be positive")
    device = torch.device(a.device)
    torch.manual_seed(a.seed)
    method = trained_method(argparse.Namespace(**config), state)
    generator, posterior = (method.networks[k].to(device).eval() for k in ("generator", "posterior"))
    target = make_target(config["target"], config.get("dim", 2)).to(device)
    rows = [band_statistics(generator, posterior, target.score, s, a.samples, a.proposals, a.chunk, device)
            for s in sigmas]
    print(f"{a.load}: iteration {state['iteration']}, d = {generator.dim}, {a.samples} x {a.proposals} per sigma")
    for r in rows:
        print(f"  sigma {r['sigma']:8.3f}: gap {r['gap']:9.3f} (reverse {r['reverse_gap']:8.3f}, ess {r['ess']:.3f}) "
              f"| KL grad {r['kl_grad']:9.3g}  gap grad {r['gap_grad']:9.3g}  ratio {r['ratio']:.3g}")
    return write_result(a.out, "experiments/bound_gap.py", argv,
                        {"iteration": state["iteration"], "dim": generator.dim, "samples": a.samples,
                         "proposals": a.proposals, "seed": a.seed, "rows": rows})


if __name__ == "__main__":
    exit_on_usage_error(main)()
