"""Can the one-step generator represent MoG40 in d dimensions at all? A check of the network alone, apart from any
distillation loss (docs/high-dimensional.md).

    python experiments/generator_capacity.py --dim 8 --out results/highdim/capacity/d8.json

A map T carries z ~ N(0, I_d) exactly onto MoG40 with equal weights. The signs of z_1, z_2, z_3 and the quintile of
z_4 pick one of 8 x 5 = 40 cells of equal mass, cell c -> component c. Within its cell each of those four
coordinates is turned back into a standard normal, w_i = Phi^-1(2 Phi(|z_i|) - 1) for i <= 3 and
w_4 = Phi^-1(5 Phi(z_4) - q) for quintile q (both arguments are uniform on (0, 1) within the cell); z_5..z_d pass
unchanged, and T(z) = m_c + s w. The generator (the training scripts' network: ``Generator(dim, width, depth)``)
is regressed onto T by mean squared error with Adam, the learning rate cosine-annealed to zero.

T jumps at the cell faces, so a smooth network can only approximate it: its samples near a face land between
modes. The sample metrics of the training runs (``SampleEvaluator``: modes covered, mode-weight error, energy
distance, log density beside the true samples') say how close the network gets. Where it covers the modes with a
small mode-weight error, the network's size is not what bounds a distilled generator.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from models.networks import Generator
from utils.cli import UsageError, exit_on_usage_error
from utils.metrics import SampleEvaluator
from utils.registry import make_target
from utils.run_io import write_result

SIGN_COORDINATES = 3  # z_1..z_3: their signs give 2^3 cells
QUANTILES = 5  # z_4: its quintile gives 5 cells; 8 x 5 = 40 components
CLAMP = 1e-6  # keeps Phi^-1 finite at the cell faces


def cell_map(z: torch.Tensor, means: torch.Tensor, std: float) -> torch.Tensor:
    """T(z) of the module docstring: z [N, d] (d >= 4) -> x [N, d], exactly MoG40-distributed for z ~ N(0, I).
    ``means`` [40, d] are the components' means, ``std`` their per-coordinate std."""
    normal = torch.distributions.Normal(0.0, 1.0)
    signs = z[:, :SIGN_COORDINATES] > 0
    u4 = QUANTILES * normal.cdf(z[:, SIGN_COORDINATES])
    quintile = u4.floor().clamp(0, QUANTILES - 1)
    bits = sum(signs[:, i].long() << i for i in range(SIGN_COORDINATES))
    component = bits * QUANTILES + quintile.long()
    u = torch.cat([2 * normal.cdf(z[:, :SIGN_COORDINATES].abs()) - 1, (u4 - quintile).unsqueeze(-1)], dim=-1)
    w = torch.cat([normal.icdf(u.clamp(CLAMP, 1 - CLAMP)), z[:, SIGN_COORDINATES + 1:]], dim=-1)
    return means[component] + std * w


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=8, help="the target's dimension (4 or more)")
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--iters", type=int, default=5000)
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate at the start of the cosine")
    parser.add_argument("--evals", type=int, default=5, help="evaluations, evenly spaced, the last at --iters")
    parser.add_argument("--eval_samples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True, help="JSON file to write (never overwritten)")
    a = parser.parse_args(argv)
    if a.dim < SIGN_COORDINATES + 1:
        raise UsageError(f"--dim {a.dim}: the cell map needs at least {SIGN_COORDINATES + 1} dimensions")
    if min(a.iters, a.batch_size, a.evals, a.eval_samples, a.width, a.depth) < 1 or a.lr <= 0:
        raise UsageError("--iters, --batch_size, --evals, --eval_samples, --width, --depth and --lr must be positive")
    if Path(a.out).exists():
        raise UsageError(f"--out {a.out} exists; pick a new path (results are never overwritten)")
    device = torch.device(a.device)
    torch.manual_seed(a.seed)
    target = make_target("mog40", a.dim).to(device)
    evaluate = SampleEvaluator(target, a.eval_samples)
    generator = Generator(a.dim, a.width, a.depth).to(device)
    optimizer = torch.optim.Adam(generator.parameters(), lr=a.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, a.iters)
    due = {round(a.iters * (k + 1) / a.evals) for k in range(a.evals)}
    eval_z = torch.randn(a.eval_samples, a.dim, generator=torch.Generator().manual_seed(a.seed + 1)).to(device)
    eval_x = cell_map(eval_z, target.means, target.std)  # T's samples, the regression's evaluation target
    rows = [{"iteration": 0, "mse": math.nan, **evaluate(generator(eval_z).detach())},
            {"iteration": 0, "mse": 0.0, "map": True, **evaluate(eval_x)}]
    for it in range(1, a.iters + 1):
        z = torch.randn(a.batch_size, a.dim, device=device)
        loss = (generator(z) - cell_map(z, target.means, target.std)).pow(2).sum(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if it in due:
            with torch.no_grad():
                samples = generator(eval_z)
                rows.append({"iteration": it, "mse": float((samples - eval_x).pow(2).sum(-1).mean()),
                             **evaluate(samples)})
            r = rows[-1]
            print(f"iteration {it}: mse {r['mse']:.3g}  modes {r['modes']}/40  mode_tv {r['mode_tv']:.3f}  "
                  f"energy {r['energy']:.3g}  logpd {r['logpd']:.2f} (true {r['logpd_true']:.2f})")
    return write_result(a.out, "experiments/generator_capacity.py", argv,
                        {"dim": a.dim, "width": a.width, "depth": a.depth, "batch_size": a.batch_size,
                         "lr": a.lr, "seed": a.seed, "device": str(device), "torch": torch.__version__,
                         "rows": rows})


if __name__ == "__main__":
    exit_on_usage_error(main)()
