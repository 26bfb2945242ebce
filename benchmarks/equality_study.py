"""Do two fast-path settings train alike? Compares the run folders of two arms (e.g. --mode exact and --mode fast,
5 seeds of the paper recipe each) at one iteration, and draws their curves.

    python run_grid.py --recipe paper --methods vardiu_gaussian_true --seeds 0-4 --max_iter 240000 \\
        --out_dir results/equality/exact -- --mode exact
    python run_grid.py --recipe paper --methods vardiu_gaussian_true --seeds 0-4 --max_iter 240000 \\
        --out_dir results/equality/fast -- --mode fast
    python benchmarks/equality_study.py results/equality/exact results/equality/fast --at 240000 \\
        --out docs/figures/equality

The criterion (the speed issue's): at ``--at`` iterations the arms' mean log density over seeds differs by at most
0.05 and their mean log MMD by at most 0.2. ``--window W`` first averages each seed over its W evaluations that end
at ``--at`` (default 1: the evaluation at ``--at`` alone), which damps the evaluation-to-evaluation noise. Writes
equality.png (mean +- std over seeds against iterations, both metrics), equality.json and equality.md, and prints
whether the criterion holds (exit code 0 either way).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from plot_results import ITERATIONS
from utils.cli import UsageError, exit_on_usage_error
from utils.run_io import read_metric_rows

TOLERANCE = {"logpd": 0.05, "log_mmd": 0.2}


def read_arm(folder: Path) -> dict[str, np.ndarray]:
    """Per-seed curves [S, E] of one arm: iteration, logpd, log_mmd, modes (seeds' evaluations aligned)."""
    runs = sorted(p.parent for p in folder.rglob("metrics.csv"))
    if not runs:
        raise UsageError(f"{folder}: no run folders (metrics.csv) below it")
    tables = []
    for run in runs:
        tables.append(read_metric_rows(run / "metrics.csv"))
    n = min(len(t) for t in tables)
    return {key: np.array([[float(r[key]) for r in t[:n]] for t in tables])
            for key in ("iteration", "logpd", "log_mmd", "modes")}


def compare(arms: list[dict[str, np.ndarray]], names: list[str], at: int, window: int = 1) -> dict:
    """The criterion on two arms (``read_arm``, reference first): per arm the mean and std over seeds of each seed's
    mean over its ``window`` evaluations ending at iteration ``at``; the difference (second - first) of the means;
    ``passed`` when each difference is inside ``TOLERANCE``."""
    if window < 1:
        raise UsageError(f"--window must be at least 1 evaluation, got {window}")
    result = {"at": at, "window": window, "arms": {}, "tolerance": TOLERANCE}
    for name, arm in zip(names, arms):
        hits = np.nonzero(arm["iteration"][0] == at)[0]
        if len(hits) == 0:
            raise UsageError(f"arm {name}: no evaluation at iteration {at} (last: {int(arm['iteration'][0][-1])})")
        j = int(hits[0])
        if j + 1 < window:
            raise UsageError(f"arm {name}: --window {window} reaches before the first evaluation "
                             f"({j + 1} evaluations up to iteration {at})")
        per_seed = {k: arm[k][:, j + 1 - window:j + 1].mean(1) for k in ("logpd", "log_mmd", "modes")}  # [S]
        result["arms"][name] = {"seeds": int(arm["logpd"].shape[0]),
                                **{f"{k}_mean": float(per_seed[k].mean()) for k in ("logpd", "log_mmd", "modes")},
                                **{f"{k}_std": float(per_seed[k].std()) for k in ("logpd", "log_mmd")}}
    ref, new = (result["arms"][n] for n in names)
    result["difference"] = {k: new[f"{k}_mean"] - ref[f"{k}_mean"] for k in TOLERANCE}
    result["passed"] = all(abs(result["difference"][k]) <= tol for k, tol in TOLERANCE.items())
    return result


@exit_on_usage_error
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("arms", nargs=2, help="two folders holding one arm's run folders each (reference arm first)")
    p.add_argument("--names", default=None, help="comma-separated names of the arms (default: folder names)")
    p.add_argument("--at", type=int, default=240_000, help="iteration at which the arms are compared")
    p.add_argument("--window", type=int, default=1,
                   help="evaluations averaged per seed, ending at --at (1: the evaluation at --at alone)")
    p.add_argument("--out", default="docs/figures/equality", help="folder for the figure and the tables")
    a = p.parse_args(argv)
    names = a.names.split(",") if a.names else [Path(x).name for x in a.arms]
    arms = [read_arm(Path(x)) for x in a.arms]
    result = compare(arms, names, a.at, a.window)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.8))
    for i, (name, arm) in enumerate(zip(names, arms)):
        for ax, key in zip(axes, ("logpd", "log_mmd")):
            it, mean, std = arm["iteration"][0], arm[key].mean(0), arm[key].std(0)
            ax.plot(it, mean, lw=1, color=f"C{i}", label=f"{name} ({arm[key].shape[0]} seeds)")
            ax.fill_between(it, mean - std, mean + std, color=f"C{i}", alpha=0.2, lw=0)
            ax.set_xlabel("iteration")
            ax.xaxis.set_major_formatter(ITERATIONS)
            ax.set_ylabel({"logpd": "log density", "log_mmd": "log MMD"}[key])
            ax.grid(alpha=0.3)
    for ax in axes:
        ax.axvline(a.at, color="gray", lw=0.8, ls="--")
    axes[0].set_ylim(bottom=max(axes[0].get_ylim()[0], -20))
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "equality.png", dpi=150)
    (out / "equality.json").write_text(json.dumps(result, indent=2))
    at = f"at {a.at}" if a.window == 1 else f"over the {a.window} evaluations to {a.at}"
    lines = [f"| arm | seeds | log density {at} | log MMD {at} | modes |", "|---|---|---|---|---|"]
    for name in names:
        r = result["arms"][name]
        lines.append(f"| {name} | {r['seeds']} | {r['logpd_mean']:.3f} ± {r['logpd_std']:.3f} | "
                     f"{r['log_mmd_mean']:.2f} ± {r['log_mmd_std']:.2f} | {r['modes_mean']:.1f} |")
    d = result["difference"]
    lines.append(f"\ndifference ({names[1]} - {names[0]}): log density {d['logpd']:+.3f} (tolerance 0.05), "
                 f"log MMD {d['log_mmd']:+.2f} (tolerance 0.2): {'PASSED' if result['passed'] else 'FAILED'}")
    (out / "equality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
