"""Why teacher-score training loses modes: the teacher's score error against the analytic MoG40 score, per noise
level, on points inside the modes and on points in the gaps between them; and the force each noise band puts on
the generator's samples.

    python experiments/teacher_collapse.py --out experiments/figures/teacher_collapse.png

Four measurements, all on the CPU, all against the analytic diffused score s*(x, sigma) of the target:

1. Score error per sigma. ``mode`` points are x = y + sigma * eps with y ~ p (where the teacher was trained);
   ``gap`` points are uniform in the box [-45, 45]^2 but more than 4 diffused standard deviations,
   4 sqrt(s^2 + sigma^2), from every mean (where its training data at that sigma had next to no mass).
   Reported: relative RMS error sqrt(E|s_T - s*|^2 / E|s*|^2), and the fraction of points whose teacher score
   points more than 90 degrees away from the true one.
2. The same for the KDE teacher (``--teacher kde``: the exact score of the diffused empirical distribution of
   --kde_samples target samples).
3. The bias force per sigma band. A converged generator puts its samples x0 ~ p; the generator gradient is
   E[w (s_d(x_t) + grad log q(z | x_t)) . dx0/dtheta] (losses/vardiu.py), so the teacher changes the force on x0
   by w(sigma) E_eps[s_T - s*](x0 + sigma eps). With uniform weights (the matched recipe, or the authors' batch
   reduction) every sample and noise level carries the same weight. We report, per band, the RMS over x0 of that
   bias force (averaged over eps) and, for comparison, the RMS of the true score itself (the scale of the forces
   that keep each sample on its mode). The bias force on
   the 2% of samples farthest from their mode (the bridge samples whose moves reassign mass between modes) is
   reported separately. Against it stands the signal that restores a lost mode: for a generator that has dropped
   mode k (samples x0 ~ p without mode k), the analytic score pushes with E_eps[s_p - s_p'](x0 + sigma eps), p' the
   mixture without mode k; its RMS over x0 (averaged over --lost_modes choices of k) is the ``lost-mode signal``.

4. How much of the teacher's error is its training set's. train_teacher.py fits a fixed set of N target samples;
   a perfect fit of that set would give the score s_N of its diffused empirical distribution (the KDE teacher on
   the same points). On the ``mode`` points we report the share of the teacher's error that lies along the
   training set's own error, <s_T - s*, s_N - s*> / |s_N - s*|^2 (sums over points): 1 when the teacher's error is
   exactly the sampling error of its N points, 0 when unrelated to it. N and the seed come from the teacher file.

5. Optionally the authors' own teacher (``--reference_teacher``: the file ``edm_network.pth`` of the authors'
   repository Leyangw/VarDiU at bf35f42, which their teacher rows used; not shipped here and never downloaded: pass
   the path of a copy you fetched), measured with the same points beside ours, so that the two teachers' errors
   can be compared at every noise level.

The script ends by naming, for each teacher, the smallest sigma from which on its bias force stays below the
lost-mode signal: a noise floor (--sigma_min of the distillation) at which the teacher's error can no longer
outweigh the force that keeps every mode.

Writes a JSON table next to --out and a two-panel figure.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from utils.run_io import write_result
from utils.cli import exit_on_usage_error
from utils.registry import make_target
from utils.targets import GaussianMixture
from utils.teachers import kde_teacher, load_reference_teacher, load_teacher, teacher_path

SIGMAS = [0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0]


def gap_points(target, sigma: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """Points uniform in [-45, 45]^2 farther than 4 sqrt(s^2 + sigma^2) from every mean. [<=n, 2]."""
    x = (torch.rand(4 * n, target.dim, generator=generator) - 0.5) * 90
    _, dist = target.nearest_mode(x)  # in units of the component std s
    far = dist * target.std > 4 * math.sqrt(target.std**2 + sigma**2)
    return x[far][:n]


def error_stats(score_fn, target, x: torch.Tensor, sigma: float) -> dict:
    """Relative RMS error of score_fn against the analytic score at x, and the fraction pointing the wrong way."""
    if x.shape[0] == 0:  # at large sigma no point of the box is that far from every mean
        return {"rel_rms_error": None, "rms_error": None, "rms_true": None, "wrong_way": None, "points": 0}
    s = torch.full((x.shape[0],), sigma)
    with torch.no_grad():
        true, est = target.score(x, s), score_fn(x, s)
    err = (est - true).pow(2).sum(-1)
    cos = torch.nn.functional.cosine_similarity(est, true, dim=-1)
    return {"rel_rms_error": math.sqrt(err.mean().item() / true.pow(2).sum(-1).mean().item()),
            "rms_error": math.sqrt(err.mean().item()), "rms_true": math.sqrt(true.pow(2).sum(-1).mean().item()),
            "wrong_way": (cos < 0).float().mean().item(), "points": x.shape[0]}


def training_set_share(score_fn, target, empirical_score, x: torch.Tensor, sigma: float) -> float:
    """<s_T - s*, s_N - s*> / |s_N - s*|^2 summed over the points x: the share of the teacher's error that is the
    error of the empirical score s_N of its training set (measurement 4). Evaluated in chunks of 1000 points (the
    empirical score compares each point with all N samples)."""
    num = den = 0.0
    with torch.no_grad():
        for chunk in x.split(1000):
            s = torch.full((chunk.shape[0],), sigma)
            true = target.score(chunk, s)
            teacher_error, set_error = score_fn(chunk, s) - true, empirical_score(chunk, s) - true
            num += (teacher_error * set_error).sum().item()
            den += set_error.pow(2).sum().item()
    return num / den


def teacher_training_set(path: str | None, target: GaussianMixture) -> GaussianMixture | None:
    """The diffused empirical distribution of the points a teacher was trained on: train_teacher.py draws
    --num_train_samples target samples with --seed, both recorded in the teacher file (None if the file does not
    record them; measurement 4 is then skipped)."""
    ckpt = torch.load(teacher_path(path, target), map_location="cpu", weights_only=True)
    config = ckpt.get("info", {}).get("config", {})
    if "num_train_samples" not in config or "seed" not in config:
        return None
    return kde_teacher(target, config["num_train_samples"], config["seed"])


def mean_score_difference(score_a, score_b, x0: torch.Tensor, sigma: float, eps_draws: int,
                          generator: torch.Generator) -> torch.Tensor:
    """E_eps[s_a - s_b](x0 + sigma eps) over ``eps_draws`` noise draws: the mean force on each x0. [N, d]."""
    acc = torch.zeros_like(x0)
    s = torch.full((x0.shape[0],), sigma)
    with torch.no_grad():
        for _ in range(eps_draws):
            x_t = x0 + sigma * torch.randn(x0.shape, generator=generator)
            acc += score_a(x_t, s) - score_b(x_t, s)
    return acc / eps_draws


def bias_force(score_fn, target, x0: torch.Tensor, sigma: float, eps_draws: int, generator: torch.Generator) -> dict:
    """RMS over x0 of E_eps[s_T - s*](x0 + sigma eps), overall and on the 2% of x0 farthest from their mode."""
    force = mean_score_difference(score_fn, target.score, x0, sigma, eps_draws, generator).pow(2).sum(-1)
    _, dist = target.nearest_mode(x0)
    bridge = dist >= torch.quantile(dist, 0.98)
    return {"rms_bias_force": force.mean().sqrt().item(), "rms_bias_force_bridge": force[bridge].mean().sqrt().item()}


def lost_mode_signal(target, sigma: float, n: int, eps_draws: int, lost_modes: int,
                     generator: torch.Generator) -> float:
    """RMS over x0 ~ p' of E_eps[s_p - s_p'](x0 + sigma eps), p' = the target without one mode, averaged over
    ``lost_modes`` modes: the force the exact score puts on a generator that has lost a mode."""
    total = 0.0
    for k in range(lost_modes):
        keep = torch.arange(target.num_modes) != k
        reduced = GaussianMixture(target.means[keep], target.std)
        x0 = reduced.sample(n, generator=generator)
        force = mean_score_difference(target.score, reduced.score, x0, sigma, eps_draws, generator)
        total += force.pow(2).sum(-1).mean().item()
    return math.sqrt(total / lost_modes)


def safe_noise_floor(rows: list[dict], signal: dict[float, float]) -> float | None:
    """The smallest sigma of the grid from which on (for it and every larger sigma) the teacher's RMS bias force is
    below the lost-mode signal; None if there is none."""
    floor = None
    for row in sorted(rows, key=lambda r: r["sigma"], reverse=True):
        if row["rms_bias_force"] >= signal[row["sigma"]]:
            break
        floor = row["sigma"]
    return floor


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="mog40")
    p.add_argument("--teacher_ckpt", default=None, help="EDM teacher (default: the shipped one)")
    p.add_argument("--kde_samples", type=int, default=20_480)
    p.add_argument("--points", type=int, default=20_000, help="points per sigma and region")
    p.add_argument("--eps_draws", type=int, default=16, help="noise draws per x0 for the bias force")
    p.add_argument("--lost_modes", type=int, default=8, help="modes removed, one at a time, for the lost-mode signal")
    p.add_argument("--no_kde", action="store_true", help="skip the KDE teacher (the slow part)")
    p.add_argument("--reference_teacher", default=None, metavar="PATH",
                   help="also measure the authors' teacher: a copy of edm_network.pth from Leyangw/VarDiU (bf35f42)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="experiments/figures/teacher_collapse.png")
    a = p.parse_args(argv)

    torch.manual_seed(a.seed)
    target = make_target(a.target)
    teachers = {"EDM teacher": load_teacher(a.teacher_ckpt, target, torch.device("cpu")).score}
    if a.reference_teacher:
        teachers["authors' teacher"] = load_reference_teacher(a.reference_teacher, target, torch.device("cpu")).score
    if not a.no_kde:
        teachers[f"KDE ({a.kde_samples} samples)"] = kde_teacher(target, a.kde_samples, a.seed).score
    training_set = teacher_training_set(a.teacher_ckpt, target)
    g = torch.Generator().manual_seed(a.seed)
    x0 = target.sample(a.points, generator=g)
    rows = []
    signal = {}
    for sigma in SIGMAS:
        signal[sigma] = lost_mode_signal(target, sigma, a.points, a.eps_draws, a.lost_modes, g)
        print(f"{'lost-mode signal':>22} sigma {sigma:6.2f} | {signal[sigma]:.4f}", flush=True)
        mode_x = x0 + sigma * torch.randn(x0.shape, generator=g)
        gap_x = gap_points(target, sigma, a.points, g)
        for name, score_fn in teachers.items():
            row = {"teacher": name, "sigma": sigma,
                   "mode": error_stats(score_fn, target, mode_x, sigma),
                   "gap": error_stats(score_fn, target, gap_x, sigma),
                   **bias_force(score_fn, target, x0, sigma, a.eps_draws, g)}
            if name == "EDM teacher" and training_set is not None:
                row["mode"]["training_set_share"] = training_set_share(score_fn, target, training_set.score,
                                                                       mode_x, sigma)
            rows.append(row)
            gap = (f"rel err {row['gap']['rel_rms_error']:.3f} wrong-way {row['gap']['wrong_way']:.3f}"
                   if row["gap"]["points"] else "no points")
            share = row["mode"].get("training_set_share")
            print(f"{name:>22} sigma {sigma:6.2f} | mode: rel err {row['mode']['rel_rms_error']:.3f} wrong-way "
                  f"{row['mode']['wrong_way']:.3f}" + (f" training-set share {share:.2f}" if share is not None else "")
                  + f" | gap: {gap} | bias force {row['rms_bias_force']:.3f}, "
                  f"bridge {row['rms_bias_force_bridge']:.3f}", flush=True)

    floors = {name: safe_noise_floor([row for row in rows if row["teacher"] == name], signal) for name in teachers}
    for name, floor in floors.items():
        print(f"{name}: bias force below the lost-mode signal from sigma = {floor} on" if floor is not None else
              f"{name}: bias force above the lost-mode signal even at sigma = {SIGMAS[-1]}: no safe noise floor")
    out = Path(a.out).with_suffix(".png")  # matplotlib adds .png to a name without a suffix: say the real name
    write_result(out.with_suffix(".json"), "experiments/teacher_collapse.py", argv,
                 {"rows": rows, "lost_mode_signal": signal, "noise_floor": floors})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name in teachers:
        r = [row for row in rows if row["teacher"] == name]
        s = [row["sigma"] for row in r]
        for region, style in (("mode", "-"), ("gap", "--")):
            kept = [row for row in r if row[region]["points"]]
            axes[0].plot([row["sigma"] for row in kept], [row[region]["rel_rms_error"] for row in kept], style,
                         marker="o", ms=3,
                         label=f"{name}, {region} points")
        axes[1].plot(s, [row["rms_bias_force"] for row in r], "-", marker="o", ms=3, label=f"{name}, all x0")
        axes[1].plot(s, [row["rms_bias_force_bridge"] for row in r], "--", marker="o", ms=3,
                     label=f"{name}, farthest 2% of x0")
    axes[1].plot(SIGMAS, [signal[s] for s in SIGMAS], "k-", marker="s", ms=3,
                 label="lost-mode signal of the exact score")
    axes[0].set(xscale="log", yscale="log", xlabel="sigma", ylabel="|s_T - s*| / |s*| (RMS)",
                title="teacher score error")
    axes[1].set(xscale="log", yscale="log", xlabel="sigma", ylabel="RMS of E_eps[s_T - s*](x0 + sigma eps)",
                title="bias force on generator samples x0 ~ p")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    print(f"wrote {out}")
    return {"rows": rows, "lost_mode_signal": signal, "noise_floor": floors}


if __name__ == "__main__":
    exit_on_usage_error(main)()
