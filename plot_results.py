"""The paper's figures and summary table from run folders.

    python plot_results.py runs/grid/*                  # our run folders
    python plot_results.py results/ --out figures --pdf # any folders below (ours, or the reference repo's lists/)

A run folder is any folder holding ``metrics.csv`` (ours) or ``lists/logpd_list.json`` (the reference repo's
layout: logpd_list, MMD_list and time_list, one entry per evaluation). Runs are grouped by recipe and method: ours
by the ``--recipe`` in their config.json and their ``--name`` (the grid launcher names runs after the method) or
else by script and flags; reference folders by their name with a trailing ``seedN`` removed (or their parent's
name when the folder is just ``seedN``). When the runs come from several recipes, labels end in ``[recipe]``.

Writes to --out: mmd_vs_time.png and logpd_vs_time.png (the paper's two figures: mean +- one std over seeds
against training wall time), metrics_vs_iterations.png, samples_grid.png (final samples of each method's first
seed over the target's contours), and summary.md / summary.csv: for each run the mean of its last --last
evaluations (among the evaluations all the method's seeds have, when some ran longer), then mean +- std (numpy's,
ddof 0) over the method's seeds, with the mean number of modes covered and the mean fraction of samples near a
mode (log density alone cannot see mode collapse), beside the paper's numbers for the method of the same name.
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from utils.cli import Parser, UsageError, exit_on_usage_error, validate_output_folder  # noqa: E402
from utils.recipes import LABELS, METHOD_ORDER, PAPER_NUMBERS, RECIPES, method_key  # noqa: E402
from utils.resume import PER_SEED_CONFIG, SEGMENT_KEYS  # noqa: E402
from utils.run_io import read_metric_rows  # noqa: E402

plt.rcParams.update({"font.size": 8, "axes.titlesize": 8, "legend.fontsize": 6.5, "axes.labelsize": 8})
COLUMN_WIDTH = 3.4  # inches: one column of a two-column paper
ITERATIONS = matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x else "0")  # 250000 -> 250k


@dataclass
class Run:
    """One seed's evaluation history: per evaluation the iteration, training time, log density, log MMD, modes
    covered and fraction of samples near a mode (NaN for the reference layout, which does not record them)."""

    path: Path
    method: str
    iteration: np.ndarray
    train_time: np.ndarray
    logpd: np.ndarray
    log_mmd: np.ndarray
    modes: np.ndarray
    near_mode: np.ndarray
    samples: np.ndarray | None = None
    target: str = "mog40"
    recipe: str = ""
    flags: dict = field(default_factory=dict)  # what defines the method (``defining_flags``)
    seed: int | None = None


@dataclass
class MethodRuns:
    recipe: str
    key: str
    label: str
    runs: list[Run] = field(default_factory=list)

    @property
    def common_evaluations(self) -> int:
        """How many evaluations every seed has: seeds of different lengths are compared on these."""
        return min(len(r.logpd) for r in self.runs)


def _log(values: list[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(arr > 0, np.log(np.where(arr > 0, arr, 1.0)), -np.inf)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# config.json entries that do not define a method: the seed, where and how a command ran, and what it wrote.
NOT_DEFINING = PER_SEED_CONFIG | set(SEGMENT_KEYS) | {"seeds", "out_dir", "recipe", "end", "script", "device_resolved"}


@functools.lru_cache(maxsize=None)
def script_defaults(script: str) -> dict:
    """The flag defaults of a training script ({} for a script this repository does not have)."""
    from utils.registry import entry_script
    try:
        return vars(entry_script(script).build_parser().parse_args([]))
    except (ImportError, ValueError, SystemExit):
        return {}


def defining_flags(config: dict) -> dict:
    """The entries of a run's config.json that define its method: every flag but the seed, the output and the
    flags a resume may change (only the seed may differ between the runs averaged as one method). A flag newer
    than the run (absent from its config) counts at its default, which is what the run trained with."""
    config = {**script_defaults(str(config.get("script", ""))), **config}
    return {k: v for k, v in config.items() if k not in NOT_DEFINING}


def read_config(path: Path) -> dict:
    """A run folder's config.json as a dict ({} when absent); a damaged one is a UsageError naming it."""
    file = path / "config.json"
    if not file.is_file():
        return {}
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{file}: not readable JSON ({err}); repair or move that run folder") from None
    if not isinstance(config, dict):
        raise UsageError(f"{file}: not a JSON object; repair or move that run folder")
    return config


def read_run(path: Path, eval_every: int) -> Run | None:
    """Read one run folder, ours (metrics.csv + config.json) or the reference repo's (lists/*.json). None, with a
    warning, for a run with no evaluations yet; a damaged file is a UsageError naming it."""
    if (path / "metrics.csv").is_file():
        config = read_config(path)
        try:
            rows = read_metric_rows(path / "metrics.csv")
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise UsageError(f"{path / 'metrics.csv'}: not readable ({err})") from None
        if not rows:
            warn(f"{path}: no evaluations yet; skipped")
            return None
        name = config.get("name")
        key = re.sub(r"_seed\d+$", "", name) if isinstance(name, str) and name else method_key(config)
        try:
            column = lambda name, kind=float: np.array([kind(float(r[name])) for r in rows])  # noqa: E731
            run = Run(path, key, column("iteration", int), column("train_time"), column("logpd"),
                      column("log_mmd"), column("modes"), column("near_mode"), None, config.get("target", "mog40"),
                      config.get("recipe") or "", defining_flags(config), config.get("seed"))
        except KeyError as err:
            raise UsageError(f"{path / 'metrics.csv'}: no column {err}; is it a run folder of this project?") from None
        except (TypeError, ValueError) as err:
            raise UsageError(f"{path / 'metrics.csv'}: a value that is not a number ({err})") from None
        return run
    lists = path / "lists"
    try:
        logpd = json.loads((lists / "logpd_list.json").read_text())
        mmd = json.loads((lists / "MMD_list.json").read_text())
        times = json.loads((lists / "time_list.json").read_text()) if (lists / "time_list.json").is_file() \
            else [math.nan] * len(logpd)
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"{path}: unreadable reference lists ({err})") from None
    n = min(len(logpd), len(mmd), len(times))
    if n == 0:
        warn(f"{path}: no evaluations yet; skipped")
        return None
    name = re.sub(r"[_-]?seed\d+$", "", path.name) or path.parent.name
    return Run(path, name, np.arange(n) * eval_every, np.asarray(times[:n], float), np.asarray(logpd[:n], float),
               _log(mmd[:n]), np.full(n, np.nan), np.full(n, np.nan))


def find_run_folders(paths: list[str]) -> list[Path]:
    """Run folders among the given paths and below them."""
    found: list[Path] = []
    for spec in paths:
        root = Path(spec)
        if not root.exists():
            raise UsageError(f"{spec}: no such file or folder")
        candidates = [root] + sorted(p for p in root.rglob("*") if p.is_dir()) if root.is_dir() else []
        found += [p for p in candidates if (p / "metrics.csv").is_file() or (p / "lists" / "logpd_list.json").is_file()]
    if not found:
        raise UsageError(f"no run folders (metrics.csv or lists/logpd_list.json) in {' '.join(paths)}")
    unique: dict[Path, Path] = {}
    for path in found:  # a folder reached twice (a link, or named twice) counts once
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def group_methods(runs: list[Run]) -> list[MethodRuns]:
    """Runs grouped by (recipe, method, the flags that define it): runs of one method name whose flags differ are
    shown apart, their labels naming the differing flags, and a seed met twice in a group counts once (the first
    folder; a warning names the other). Recipes in their order in utils.recipes, methods in the paper's order,
    then alphabetically. Labels are the paper's legend names, ending in [recipe] when several recipes are
    present."""
    several = len({run.recipe for run in runs}) > 1
    by_method: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        by_method.setdefault((run.recipe, run.method), []).append(run)
    groups: list[MethodRuns] = []
    for (recipe, method), members in by_method.items():
        varying = sorted({k for r in members for k in r.flags if any(o.flags.get(k) != r.flags.get(k) for o in members)})
        label = LABELS.get(method, method) + (f" [{recipe or 'no recipe'}]" if several else "")
        split: dict[str, MethodRuns] = {}
        for run in members:
            differs = ", ".join(f"{k}={run.flags.get(k)}" for k in varying)
            group = split.setdefault(differs, MethodRuns(recipe, method, f"{label} ({differs})" if differs else label))
            twin = next((r for r in group.runs if run.seed is not None and r.seed == run.seed), None)
            if twin is not None:
                warn(f"{run.path}: seed {run.seed} of {group.label} again (first: {twin.path}); counted once")
                continue
            group.runs.append(run)
        groups += split.values()
    recipe_order = {name: i for i, name in enumerate(RECIPES)}
    order = {key: i for i, key in enumerate(METHOD_ORDER)}
    return sorted(groups, key=lambda g: (recipe_order.get(g.recipe, len(recipe_order)), g.recipe,
                                         order.get(g.key, len(order)), g.key, g.label))


def summarise(group: MethodRuns, last: int) -> dict:
    """Mean of each run's last ``last`` evaluations, then mean and std (ddof 0) over the runs. Seeds that ran for
    different lengths (a run still being relayed beside finished ones) are compared on the evaluations they all
    have: each run is cut to the shortest run's n evaluations first, so the row describes one iteration count."""
    n = group.common_evaluations

    def per_run(attr: str) -> list[float]:
        return [float(np.mean(getattr(r, attr)[:n][-last:])) for r in group.runs]

    logpd, log_mmd, modes, near = per_run("logpd"), per_run("log_mmd"), per_run("modes"), per_run("near_mode")
    paper = PAPER_NUMBERS.get(LABELS.get(group.key, group.key))
    return {"recipe": group.recipe, "method": group.label, "seeds": len(group.runs), "evaluations": n,
            "last_iteration": int(group.runs[0].iteration[n - 1]),
            "logpd_mean": float(np.mean(logpd)), "logpd_std": float(np.std(logpd)),
            "log_mmd_mean": float(np.mean(log_mmd)), "log_mmd_std": float(np.std(log_mmd)),
            "modes_mean": float(np.mean(modes)), "modes_min": float(np.min(modes)),
            "near_mode_mean": float(np.mean(near)),
            "paper_logpd": f"{paper[0]:.3f} ± {paper[1]:.3f}" if paper else "",
            "paper_log_mmd": f"{paper[2]:.2f} ± {paper[3]:.2f}" if paper else ""}


def aligned(group: MethodRuns, attr: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean training time, mean iteration, mean, std) over seeds, per evaluation index common to all seeds."""
    n = group.common_evaluations
    values = np.stack([getattr(r, attr)[:n] for r in group.runs])
    times = np.stack([r.train_time[:n] for r in group.runs])
    iters = np.stack([r.iteration[:n] for r in group.runs])
    return times.mean(0), iters.mean(0), values.mean(0), values.std(0)


def plot_against(groups: list[MethodRuns], attr: str, x: str, ylabel: str, ax: plt.Axes) -> None:
    """Mean ± std over seeds against wall time or iterations. The y-range covers each curve after its first 10% of
    evaluations: the first evaluations (log density near -25 at initialisation) would otherwise squeeze the
    differences between methods into a few pixels."""
    later = []
    for i, group in enumerate(groups):
        time, iters, mean, std = aligned(group, attr)
        xs = time if x == "time" else iters
        ok = np.isfinite(mean) & np.isfinite(xs)
        line, = ax.plot(xs[ok], mean[ok], lw=1.0, label=group.label, color=f"C{i % 10}")
        ax.fill_between(xs[ok], (mean - std)[ok], (mean + std)[ok], color=line.get_color(), alpha=0.2, lw=0)
        later.append(mean[ok][len(mean[ok]) // 10:])
    later = np.concatenate(later) if later else np.array([])
    if later.size and np.ptp(later) > 0:
        low, high = later.min(), later.max()
        ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    ax.set_xlabel("wall time (s)" if x == "time" else "iteration")
    if x != "time":
        ax.xaxis.set_major_formatter(ITERATIONS)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def add_legend(fig: plt.Figure, ax: plt.Axes, curves: int) -> float:
    """Up to four curves: a legend inside the axes. More: a legend below the axes, in a strip added to the figure,
    so that it hides no curve. Returns the strip's share of the figure's height (0 for a legend inside)."""
    if curves <= 4:
        ax.legend(frameon=False)
        return 0.0
    strip = 0.13 * curves + 0.1  # inches: one line of 6-point text per curve
    fig.set_figheight(fig.get_figheight() + strip)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", frameon=False, fontsize=6)
    return strip / fig.get_figheight()


def save(fig: plt.Figure, out: Path, stem: str, pdf: bool, legend_strip: float = 0.0) -> list[Path]:
    fig.tight_layout(rect=(0, legend_strip, 1, 1))
    paths = [out / f"{stem}.png"] + ([out / f"{stem}.pdf"] if pdf else [])
    for path in paths:
        fig.savefig(path, dpi=200)
    plt.close(fig)
    return paths


def first_samples(group: MethodRuns) -> np.ndarray | None:
    """The samples.npy of a group's first run (None when it has none)."""
    path = group.runs[0].path / "samples.npy"
    if group.runs[0].samples is None and path.is_file():
        try:
            group.runs[0].samples = np.load(path)
        except (OSError, ValueError) as err:
            raise UsageError(f"{path}: not a readable sample array ({err})") from None
    return group.runs[0].samples


def write_figures(groups: list[MethodRuns], out: Path, pdf: bool) -> list[Path]:
    written: list[Path] = []
    for attr, stem, ylabel in [("log_mmd", "mmd_vs_time", "log MMD"), ("logpd", "logpd_vs_time", "log density")]:
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.6))
        plot_against(groups, attr, "time", ylabel, ax)
        strip = add_legend(fig, ax, len(groups))
        written += save(fig, out, stem, pdf, strip)
    fig, axes = plt.subplots(1, 2, figsize=(2 * COLUMN_WIDTH, 2.6))
    plot_against(groups, "logpd", "iteration", "log density", axes[0])
    plot_against(groups, "log_mmd", "iteration", "log MMD", axes[1])
    strip = add_legend(fig, axes[1], len(groups))
    written += save(fig, out, "metrics_vs_iterations", pdf, strip)
    with_samples = [g for g in groups if first_samples(g) is not None]
    if with_samples:
        from utils.plotting import draw_samples
        from utils.registry import make_target
        cols = min(len(with_samples), 5)
        rows = math.ceil(len(with_samples) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.7 * rows), squeeze=False)
        for ax, group in zip(axes.flat, with_samples):
            draw_samples(ax, group.runs[0].samples, make_target(group.runs[0].target), max_points=2000)
            ax.set_title(textwrap.fill(group.label, 30), fontsize=5.5)  # long labels on several lines
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in list(axes.flat)[len(with_samples):]:
            ax.axis("off")
        written += save(fig, out, "samples_grid", pdf)
    return written


def write_table(rows: list[dict], out: Path, last: int) -> str:
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"| recipe | method | seeds | evaluations (last iteration) | log density (last {last}) "
             f"| log MMD (last {last}) | modes covered (mean / worst seed) | near a mode | paper log density "
             "| paper log MMD |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['method']} | {r['seeds']} | {r['evaluations']} ({r['last_iteration']}) | "
                     f"{r['logpd_mean']:.3f} ± {r['logpd_std']:.3f} | {r['log_mmd_mean']:.2f} ± {r['log_mmd_std']:.2f} | "
                     f"{r['modes_mean']:.1f} / {r['modes_min']:.1f} | {r['near_mode_mean']:.3f} | "
                     f"{r['paper_logpd']} | {r['paper_log_mmd']} |")
    table = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(table)
    return table


@exit_on_usage_error
def main(argv: list[str] | None = None) -> Path:
    p = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dirs", nargs="+", help="run folders, or folders holding them")
    p.add_argument("--out", default="results", help="folder for the figures and the table")
    p.add_argument("--last", type=int, default=50, help="evaluations averaged per run for the table")
    p.add_argument("--eval_every", type=int, default=1000,
                   help="iterations between evaluations for reference-layout folders (they do not record it)")
    p.add_argument("--pdf", action="store_true", help="also write PDF figures")
    p.add_argument("--max_curves", type=int, default=12,
                   help="methods drawn in the figures, in table order (the table lists every one)")
    a = p.parse_args(argv)
    if a.last <= 0:
        raise UsageError(f"--last must be a positive number of evaluations, got {a.last}")
    if a.max_curves <= 0:
        raise UsageError(f"--max_curves must be positive, got {a.max_curves}")
    validate_output_folder(a.out, "--out")
    runs = [run for run in (read_run(path, a.eval_every) for path in find_run_folders(a.run_dirs)) if run]
    if not runs:
        raise UsageError(f"no run in {' '.join(a.run_dirs)} has an evaluation yet")
    groups = group_methods(runs)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if len(groups) > a.max_curves:
        print(f"note: {len(groups)} methods; the figures draw the first {a.max_curves} (--max_curves), the table "
              "lists all", file=sys.stderr)
    figures = write_figures(groups[:a.max_curves], out, a.pdf)
    table = write_table([summarise(g, a.last) for g in groups], out, a.last)
    print(table)
    print(f"wrote {', '.join(str(f) for f in figures)}, {out / 'summary.md'}, {out / 'summary.csv'}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
