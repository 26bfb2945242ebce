"""High-dimensional metrics of several runs against iterations and against training time (docs/high-dimensional.md).

    python experiments/highdim_figure.py results/highdim/d8_schedule --out docs/figures/highdim/d8_schedule.png
    python experiments/highdim_figure.py results/highdim/d8_pi500 --runs gauss_d8_s150_pi500,di1_d8_s150_pi500_wsigma --out f.png
    python experiments/highdim_figure.py results/highdim --runs d8_pi500/gauss_d8_s150_pi500,d8_schedule/di1_d8_s150_slow --out f.png

Run folders ``<name>_seed<N>`` are grouped by name; each panel shows the mean over a run's seeds (shaded: ± one
std) of energy distance, mode-weight error and modes covered, per evaluation that every seed reached, against the
iteration (top row) and the mean training time in seconds (bottom row). The energy distance is drawn on a log axis
(it spans 40 to below 1, and one seed that flies out for a few evaluations reaches 1e4).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from utils.cli import UsageError, exit_on_usage_error  # noqa: E402
from utils.run_io import read_metric_rows  # noqa: E402

PANELS = [("energy", "energy distance"), ("mode_tv", "mode-weight error"), ("modes", "modes covered")]
LOG_PANELS = {"energy"}


def grouped_runs(folder: Path) -> dict[str, list[list[dict]]]:
    """name -> the metrics rows of each seed, for the run folders <name>_seed<N> in ``folder``."""
    groups: dict[str, list[list[dict]]] = {}
    for run in sorted(folder.glob("*_seed*")):
        if (run / "metrics.csv").is_file():
            groups.setdefault(re.sub(r"_seed\d+$", "", run.name), []).append(read_metric_rows(run / "metrics.csv"))
    return groups


def seed_stats(seeds: list[list[dict]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(iterations, mean training time, mean, std) over seeds on the evaluations they all have."""
    n = min(len(rows) for rows in seeds)
    values = np.array([[float(r[key]) for r in rows[:n]] for rows in seeds])
    times = np.array([[float(r["train_time"]) for r in rows[:n]] for rows in seeds])
    iters = np.array([int(r["iteration"]) for r in seeds[0][:n]])
    return iters, times.mean(0), values.mean(0), values.std(0)


def figure(groups: dict[str, list[list[dict]]]) -> plt.Figure:
    """Each metric of PANELS against iterations (top row) and training time (bottom row), one curve (seed mean,
    shaded ± std) per run of ``groups``, coloured C0, C1, ... in the dict's order."""
    fig, axes = plt.subplots(2, len(PANELS), figsize=(10, 5.6), squeeze=False)
    tops = np.zeros(len(PANELS))  # y-range: the means after each run's first 3 evaluations (the start jumps)
    for k, (name, seeds) in enumerate(groups.items()):
        for col, (key, label) in enumerate(PANELS):
            iters, times, mean, std = seed_stats(seeds, key)
            tops[col] = max(tops[col], float(np.max(mean[3:], initial=0.0)))
            for row, xs in enumerate((iters, times)):
                ax = axes[row][col]
                ax.plot(xs, mean, lw=1.0, color=f"C{k % 10}", label=name if row == col == 0 else None)
                ax.fill_between(xs, mean - std, mean + std, color=f"C{k % 10}", alpha=0.15, lw=0)
                ax.set_xlabel("iteration" if row == 0 else "training time (s)")
                ax.set_ylabel(label)
                ax.grid(alpha=0.3)
    for col, (key, _) in enumerate(PANELS):
        axes[0][col].xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k"))  # 150k, not 150000
        for row in range(2):
            if key in LOG_PANELS:
                axes[row][col].set_yscale("log")
            else:
                axes[row][col].set_ylim(0, 1.1 * tops[col] or None)
    fig.legend(loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


@exit_on_usage_error
def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="a folder of run folders <name>_seed<N>")
    p.add_argument("--out", required=True, help="the figure to write (.png)")
    p.add_argument("--runs", default=None,
                   help="comma-separated run names to draw, in this order, each a name in the folder or sub/name in "
                        "a folder under it (default: every run in the folder, sorted)")
    a = p.parse_args(argv)
    folder = Path(a.folder)
    if a.runs is None:
        groups = grouped_runs(folder)
        if not groups:
            raise UsageError(f"{a.folder}: no run folders <name>_seed<N> with a metrics.csv")
    else:
        groups = {}
        for name in a.runs.split(","):  # "name" in folder, or "sub/name" in folder/sub
            sub, _, base = name.rpartition("/")
            found = grouped_runs(folder / sub)
            if base not in found:
                raise UsageError(f"--runs: no run folders {base}_seed<N> in {folder / sub} "
                                 f"(there: {', '.join(sorted(found)) or 'none'})")
            groups[name] = found[base]
    missing = [name for name, seeds in groups.items() if any(k not in seeds[0][0] for k, _ in PANELS)]
    if missing:
        raise UsageError(f"{', '.join(missing)}: no high-dimensional metrics (runs with --dim > 2 have them)")
    fig = figure(groups)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
