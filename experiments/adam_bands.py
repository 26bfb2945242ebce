"""What Adam's normaliser does as the sigma-sampler power rises: measured band by band on a trained VarDiU run
(Gaussian or flow posterior; docs/teacher-study.md).

    python experiments/adam_bands.py --load RUN_FOLDER --out experiments/figures/adam_bands.json

Adam divides each parameter's step by sqrt(v), v the running mean of the squared minibatch gradient. With sigma
drawn at power p, one minibatch gradient of the generator is the sum of its noise bands' parts, g = sum_b g_b (each
sample lies in one band; with the per-sample weighting the part of band b is the gradient with the weight masked
to b), so the normaliser Adam settles to at a fixed power is

    v_j(p) = E[g_j^2] = sum_b E[g_b,j^2] + (products of the parts' means, small next to their spread).

For the generator and posterior of a checkpoint this draws --batches minibatches of a training loss at each power
(the same batch for every band: the random state is reset per batch) and reports, over the generator's parameters j,
  - how much the step that *every* band gets shrinks from the lowest power on: sqrt(v_j(p) / v_j(p0)), median and
    the ratio of the parameters' RMS (sqrt(sum_j v_j(p) / sum_j v_j(p0))),
  - each band's share of sum_j E[g_b,j^2] and of the samples,
for the loss given by --weight (per-sample reduction) and --teacher_ckpt / --true_score (the teacher study's matched
schedule by default). As a check of the method, it also estimates v at the checkpoint's own loss and power and compares it with
the second moment Adam stored in the checkpoint (``exp_avg_sq``).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses

import torch

from losses.noise import WEIGHT_POWERS
from utils.cli import UsageError, exit_on_usage_error
from utils.methods import power_schedule
from utils.run_io import load_checkpoint, write_result
from utils.registry import entry_script, make_target
from utils.step import Method

VARDIU_SCRIPTS = ("train_upper_diffusion.py", "train_upper_flow.py")


def trained_method(flags: argparse.Namespace, state: dict) -> Method:
    """The VarDiU method of ``flags`` (its loss) with the networks of checkpoint ``state``, on the CPU."""
    build = entry_script(state["config"]["script"]).build
    method = build(flags, torch.device("cpu"), make_target(flags.target, getattr(flags, "dim", 2)))
    for name, module in method.networks.items():
        module.load_state_dict(state["modules"][name])
    return method


def generator_gradients(method, power: float, batches: int, bands: list[tuple[float, float]] | None,
                        seed: int) -> torch.Tensor:
    """Flattened generator gradients [batches, n_bands (or 1), n_params] of ``method``'s loss at ``power``: one row
    per band (weight masked to sigma in [lo, hi)) or, with bands None, the whole loss."""
    loss_fn = method.updates[0].loss_fn
    generator = method.networks["generator"]
    params = list(generator.parameters())
    variants = [loss_fn] if bands is None else [
        dataclasses.replace(loss_fn, weight=lambda s, lo=lo, hi=hi, w=loss_fn.weight: w(s) * ((s >= lo) & (s < hi)))
        for lo, hi in bands]
    out = torch.empty(batches, len(variants), sum(p.numel() for p in params))
    p = torch.tensor(power)
    for k in range(batches):
        for b, fn in enumerate(variants):
            torch.manual_seed(seed * 100_003 + k)  # the same batch (z, eps, sigma) for every band
            grads = torch.autograd.grad(fn(method.networks, p)["loss"], params)
            out[k, b] = torch.cat([g.reshape(-1) for g in grads])
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", required=True, help="a VarDiU run folder (its checkpoints/last.pt)")
    parser.add_argument("--powers", type=float, nargs="+", default=[0.1, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0])
    parser.add_argument("--bands", type=float, nargs="+", default=[0.1, 1.0, 2.0, 20.0],
                        help="band edges of sigma (the first and last are --sigma_min and --sigma_max)")
    parser.add_argument("--weight", default="uniform", choices=sorted(WEIGHT_POWERS))
    parser.add_argument("--teacher_ckpt", default=None, help="EDM teacher (default: the shipped one)")
    parser.add_argument("--true_score", action="store_true", help="the analytic score instead of the teacher")
    parser.add_argument("--batches", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="experiments/figures/adam_bands.json")
    a = parser.parse_args(argv)
    if len(a.bands) < 2 or any(hi <= lo for lo, hi in zip(a.bands, a.bands[1:])) or a.bands[0] <= 0:
        raise UsageError(f"--bands {' '.join(map(str, a.bands))}: give at least two increasing positive edges")
    torch.manual_seed(a.seed)

    _, state = load_checkpoint(a.load)
    trained = argparse.Namespace(**state["config"])
    if state["config"].get("script") not in VARDIU_SCRIPTS:
        raise UsageError(f"--load {a.load}: not a VarDiU run (of {' or '.join(VARDIU_SCRIPTS)}); pick one that is")
    method = trained_method(trained, state)

    # The check: v at the checkpoint's own loss and power against the exp_avg_sq Adam stored.
    own_power = power_schedule(trained)(state["iteration"])
    g = generator_gradients(method, own_power, a.batches, None, a.seed)[:, 0]
    stored = torch.cat([s["exp_avg_sq"].reshape(-1)
                        for _, s in sorted(state["optimizers"]["generator"]["state"].items())])
    estimated = g.pow(2).mean(0)
    gets_gradient = (estimated > 0) & (stored > 0)  # a dead unit's parameters do not
    estimated, stored = estimated[gets_gradient], stored[gets_gradient]
    check = {"iteration": state["iteration"], "power": own_power, "weight": trained.weight,
             "weight_reduction": trained.weight_reduction, "true_score": trained.true_score,
             "median_ratio_estimated_to_stored": float((estimated / stored).median()),
             "sum_ratio_estimated_to_stored": float(estimated.sum() / stored.sum()),
             "log_correlation": float(torch.corrcoef(torch.stack([estimated.log(), stored.log()]))[0, 1])}
    print(f"check at iteration {state['iteration']} (power {own_power:.2f}): estimated / stored exp_avg_sq: median "
          f"{check['median_ratio_estimated_to_stored']:.2f}, sum {check['sum_ratio_estimated_to_stored']:.2f}, "
          f"correlation of logs {check['log_correlation']:.3f}")

    # The measurement: the same networks under the chosen loss, band by band.
    study = copy.copy(trained)
    study.weight, study.weight_reduction, study.true_score = a.weight, "sample", a.true_score
    study.teacher, study.teacher_ckpt = "edm", a.teacher_ckpt
    study.sigma_min, study.sigma_max = a.bands[0], a.bands[-1]
    method = trained_method(study, state)
    bands = list(zip(a.bands[:-1], a.bands[1:]))
    bands[-1] = (bands[-1][0], float("inf"))  # sigma_max itself belongs to the last band
    rows, v0 = [], None
    for power in a.powers:
        parts = generator_gradients(method, power, a.batches, bands, a.seed)  # [K, n_bands, n_params]
        whole = parts.sum(1)
        v = whole.pow(2).mean(0)
        if v0 is None:
            v0, live = v, v > 0
        band_sq = parts.pow(2).mean(0).sum(1)  # sum_j E[g_b,j^2] [n_bands]
        sigmas = method.updates[0].loss_fn.noise.sigmas(torch.tensor(power))
        row = {"power": power,
               "normaliser_median_ratio": float((v[live] / v0[live]).sqrt().median()),
               "normaliser_rms_ratio": float((v.sum() / v0.sum()).sqrt()),
               "band_share_of_v": [float(x) for x in band_sq / band_sq.sum()],
               "band_share_of_samples": [float(((sigmas >= lo) & (sigmas < hi)).float().mean()) for lo, hi in bands],
               "cross_terms_share": float(1 - band_sq.sum() / v.sum())}
        rows.append(row)
        print(f"power {power:5.2f} | normaliser x{row['normaliser_median_ratio']:.2f} (median), "
              f"x{row['normaliser_rms_ratio']:.2f} (RMS) | share of v by band "
              + " / ".join(f"{x:.2f}" for x in row["band_share_of_v"]) + " | of samples "
              + " / ".join(f"{x:.2f}" for x in row["band_share_of_samples"]))
    return write_result(a.out, "experiments/adam_bands.py", argv,
                        {"bands": a.bands, "weight": a.weight, "true_score": a.true_score, "batches": a.batches,
                         "check": check, "rows": rows})


if __name__ == "__main__":
    exit_on_usage_error(main)()
