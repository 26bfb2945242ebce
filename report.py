"""The generated tables of the README and docs/, and the index of every run folder, from the committed results/.

    python report.py           # rewrite results/INDEX.csv and every generated block of README.md and docs/*.md
    python report.py --check   # exit 1 naming each file that differs from what results/ gives (the tests run this)

A generated block in a Markdown file sits between ``<!-- generated: NAME -->`` and ``<!-- end generated -->``;
``BLOCKS`` below says what each NAME holds. Nothing between the markers is written by hand: edit the results or
this file, then run ``python report.py``.

Summaries follow the paper: each seed's mean over its last N evaluations (among the evaluations all seeds of the
row have, when some stopped earlier), then mean ± std (ddof 0) over seeds. "Reproduced" means both numbers are
within the paper's mean ± its std, or better (higher log density, lower log MMD).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shlex
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from plot_results import MethodRuns, find_run_folders, group_methods, read_run, summarise
from utils.cli import Parser, exit_on_usage_error
from utils.recipes import LABELS, PAPER_NUMBERS, RECIPES
from utils.registry import entry_script
from utils.run_io import read_metric_rows

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"

BEGIN = re.compile(r"<!-- generated: ([\w-]+) -->\n")
END = "<!-- end generated -->"

# Flags that say where and how a run was launched, not what it trains, and those command_of writes itself
# (max_iter): left out of the flags taken from config.json.
BOOKKEEPING = {"out_dir", "load", "time_limit", "no_progress", "device", "plot_every", "checkpoint_minutes",
               "tensorboard", "wandb", "wandb_project", "seed", "seeds", "name", "recipe", "save_every", "max_iter"}
# Folders whose runs a later run replaces, and why.
SUPERSEDED = {"superseded/first_runs": "superseded: re-run from iteration 0 (the re-run is the committed row)",
              "superseded/repeat_continuations": "superseded: a second continuation from the same checkpoint "
                                                 "(docs/reproducibility.md compares the two)"}


# ---------------------------------------------------------------------------------------------------------------
# Reading run folders
# ---------------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def runs_below(folder: str) -> tuple:
    """Every run below results/<folder>, grouped by (recipe, method) as plot_results groups them."""
    paths = find_run_folders([str(RESULTS / folder)])
    return tuple(group_methods([r for r in (read_run(p, 1000) for p in paths) if r]))


def group(folder: str, key: str) -> MethodRuns:
    """The runs of method ``key`` (the run name without _seedN) below results/<folder>."""
    found = [g for g in runs_below(folder) if g.key == key]
    if len(found) != 1:
        raise SystemExit(f"report: {len(found)} groups named {key} below results/{folder}; expected one")
    return found[0]


def seeds_of(g: MethodRuns) -> list[int]:
    return [int(re.search(r"_seed(\d+)$", r.path.name).group(1)) for r in g.runs]


def seed_range(seeds: list[int]) -> str:
    seeds = sorted(seeds)
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 1 \
        else ",".join(map(str, seeds))


def last_iterations(g: MethodRuns) -> str:
    """'1,000,000', or each distinct last iteration with its seeds when they differ."""
    ends: dict[int, list[int]] = {}
    for run, seed in zip(g.runs, seeds_of(g)):
        ends.setdefault(int(run.iteration[-1]), []).append(seed)
    if len(ends) == 1:
        return f"{next(iter(ends)):,}"
    return "; ".join(f"{it:,} (seed{'s' if len(s) > 1 else ''} {seed_range(s)})"
                     for it, s in sorted(ends.items(), reverse=True))


def config_of(run_path: Path) -> dict:
    path = run_path / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


# ---------------------------------------------------------------------------------------------------------------
# Commands and provenance
# ---------------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def script_parser(script: str) -> argparse.ArgumentParser:
    return entry_script(script).build_parser()


def flags_between(script: str, config: dict, given: tuple[str, ...]) -> list[str]:
    """The flags that take ``script``'s parser from the values ``given`` set to those in ``config``."""
    parser = script_parser(script)
    base = vars(parser.parse_args(list(given)))
    options = {a.dest: a for a in parser._actions if a.option_strings}
    flags: list[str] = []
    for dest, action in options.items():
        if dest in BOOKKEEPING or dest not in config or config[dest] == base.get(dest):
            continue
        value = config[dest]
        if dest == "teacher_ckpt" and value and not str(value).startswith("teachers/"):
            value = Path(value).name  # a file outside the repository: where it lay is not part of the command
        flag = next(o for o in action.option_strings if o.startswith("--"))  # --true_score, not its alias
        if action.nargs == 0:
            flags.append(flag if value else "")
        else:
            flags += [flag, str(value)]
    return [f for f in flags if f]


def command_of(run_path: Path, seeds: list[int]) -> str:
    """The command that makes this run's folder: run_grid.py for a recipe's method, else the script itself."""
    config = config_of(run_path)
    script, recipe, name = config.get("script", ""), config.get("recipe"), config.get("name") or ""
    out_dir = Path(RESULTS.name) / run_path.parent.relative_to(RESULTS)
    spec = RECIPES.get(recipe or "", {}).get(name)
    if spec is not None and spec.script == script and out_dir.name == recipe:
        out_dir = out_dir.parent
        extra = flags_between(script, config, spec.flags)
        return " ".join(["python run_grid.py --recipe", recipe, "--methods", name, "--seeds", seed_range(seeds),
                         "--max_iter", str(config["max_iter"]), "--out_dir", str(out_dir),
                         *(["--", *map(shlex.quote, extra)] if extra else [])])
    extra = flags_between(script, config, ())
    seed_flag = ["--seeds", seed_range(seeds)] if len(seeds) > 1 else ["--seed", str(seeds[0])]
    return " ".join(["python", script, *map(shlex.quote, extra), *seed_flag, "--max_iter", str(config["max_iter"]),
                     *(["--recipe", recipe] if recipe else []), "--out_dir", str(out_dir), "--name", name])


def segments(run_path: Path, rows: list[dict]) -> list[dict]:
    """Each command that wrote to the run: iteration range, card, torch version, mode, training seconds."""
    config = config_of(run_path)
    parts = config.get("segments", []) + [dict(config, until_iteration=int(rows[-1]["iteration"]))]
    train = {int(r["iteration"]): float(r["train_time"]) for r in rows}
    out, start = [], 0
    for part in parts:
        end = int(part["until_iteration"])
        seconds = train.get(end, float("nan")) - train.get(start, 0.0)
        out.append({"from": start, "to": end, "card": part.get("device_name") or "",
                    "device": part.get("device_resolved") or "", "torch": part.get("torch_version") or "",
                    "mode": part.get("mode") if str(part.get("device_resolved", "")).startswith("cuda") else "cpu",
                    "train_s": seconds})
        start = end
    return out


@lru_cache(maxsize=None)
def legacy_stops() -> dict[str, str]:
    """folder -> why it stopped, for run folders written before the trainer recorded it (results/legacy_stops.csv)."""
    path = RESULTS / "legacy_stops.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {row["folder"]: row["reason"] for row in csv.DictReader(line for line in f if not line.startswith("#"))}


def stop_reason(run_path: Path, rows: list[dict]) -> str:
    rel = str(run_path.relative_to(RESULTS))
    for prefix, why in SUPERSEDED.items():
        if rel.startswith(prefix + "/"):
            return why
    config = config_of(run_path)
    last = int(rows[-1]["iteration"])
    if "end" in config:
        return config["end"]["reason"]
    if last >= int(config.get("max_iter", 0)):
        return "reached max_iter"
    if rel in legacy_stops():
        return legacy_stops()[rel]
    start = config.get("segments", [{}])[-1].get("until_iteration", 0) if config.get("segments") else 0
    wall = {int(r["iteration"]): float(r["wall_time"]) for r in rows}
    limit = float(config.get("time_limit") or 0.0) * 60
    if limit and wall[last] - wall.get(start, 0.0) >= 0.99 * limit:
        return "time limit"
    return "ended before max_iter (reason not recorded)"


@lru_cache(maxsize=None)
def index_rows() -> tuple[dict, ...]:
    """One row per run folder under results/."""
    out = []
    for path in sorted(p.parent for p in RESULTS.rglob("metrics.csv")):
        rows = read_metric_rows(path / "metrics.csv")
        if not rows:
            continue
        config = config_of(path)
        seed_match = re.search(r"_seed(\d+)$", path.name)
        seed = int(seed_match.group(1)) if seed_match else int(config.get("seed", 0))
        parts = segments(path, rows)
        out.append({"folder": str(path.relative_to(RESULTS)), "recipe": config.get("recipe") or "",
                    "name": config.get("name") or "", "script": config.get("script", ""), "seed": seed,
                    "last_iteration": int(rows[-1]["iteration"]), "max_iter": int(config.get("max_iter", 0)),
                    "stop": stop_reason(path, rows), "train_time_s": round(float(rows[-1]["train_time"]), 1),
                    "segments": "; ".join(
                        f"{s['from']}-{s['to']} {s['card'] or s['device'] or 'device not recorded'} "
                        f"torch {s['torch'] or '?'} {s['mode']} {s['train_s']:.0f} s "
                        f"({1000 * s['train_s'] / max(s['to'] - s['from'], 1):.2f} ms/it)" for s in parts),
                    "command": command_of(path, [seed])})
    return tuple(out)


def index_csv(rows: tuple[dict, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def run_index_tables() -> str:
    """The index as Markdown: one table per results/ folder (superseded runs by their own subfolder), the seeds
    of one run that stopped alike on one line."""
    blocks: dict[str, list[list[dict]]] = {}
    for row in index_rows():
        parts = row["folder"].split("/")
        rows = blocks.setdefault("/".join(parts[:2] if parts[0] == "superseded" else parts[:1]), [])
        stem = re.sub(r"_seed\d+$", "", row["folder"])
        alike = rows and re.sub(r"_seed\d+$", "", rows[-1][0]["folder"]) == stem and all(
            rows[-1][0][k] == row[k] for k in ("last_iteration", "stop", "segments", "train_time_s"))
        rows[-1].append(row) if alike else rows.append([row])
    lines: list[str] = []
    for top, runs in blocks.items():
        lines += [f"### results/{top}", "", "| folder | last iteration | stopped | train s | segments | command |",
                  "|---|---|---|---|---|---|"]
        for run in runs:
            first, seeds = run[0], [r["seed"] for r in run]
            folder = re.sub(r"_seed\d+$", f"_seed{{{seed_range(seeds)}}}", first["folder"]) if len(run) > 1 \
                else first["folder"]
            command = command_of(RESULTS / first["folder"], seeds)
            lines.append(f"| `{folder}` | {first['last_iteration']:,} | {first['stop']} | "
                         f"{first['train_time_s']:.0f} | "
                         f"{first['segments']} | `{command}` |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One row of a results table: the runs of method ``key`` below results/<folder>, under a label."""

    folder: str
    key: str
    label: str = ""
    paper: str = ""  # the paper's row to compare with (a PAPER_NUMBERS label)

    @property
    def runs(self) -> MethodRuns:
        return group(self.folder, self.key)

    @property
    def name(self) -> str:
        return self.label or LABELS.get(self.key, self.key)


def pm(mean: float, std: float, digits: int) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def reproduced(s: dict, paper: tuple[float, float, float, float]) -> str:
    logpd_ok = s["logpd_mean"] >= paper[0] - paper[1]
    mmd_ok = s["log_mmd_mean"] <= paper[2] + paper[3]
    return "yes" if logpd_ok and mmd_ok else "no"


PAPER_ROWS = [Row("paper", "vardiu_gaussian_true"), Row("paper", "vardiu_nsf_true"),
              Row("paper", "di_ss10_true"), Row("paper", "di_ss5_true"), Row("paper", "di_ss1_true"),
              Row("paper", "vardiu_nsf_teacher"), Row("paper", "vardiu_gaussian_teacher"),
              Row("paper", "di_ss10_teacher"),
              Row("published", "vardiu_gaussian_true", "the published command (VarDiU Gaussian*)",
                  "VarDiU Gaussian*")]


def paper_table(last: int = 50) -> str:
    lines = ["| row | ours: log density | ours: log MMD | modes (of 40) | seeds | last iteration | paper: log density "
             "| paper: log MMD | reproduced |", "|---|---|---|---|---|---|---|---|---|"]
    for row in PAPER_ROWS:
        g = row.runs
        s = summarise(g, last)
        paper = PAPER_NUMBERS[row.paper or LABELS[row.key]]
        lines.append(f"| {row.name.replace('*', chr(92) + '*')} | {pm(s['logpd_mean'], s['logpd_std'], 3)} | "
                     f"{pm(s['log_mmd_mean'], s['log_mmd_std'], 2)} | {s['modes_mean']:.1f} | {len(g.runs)} | "
                     f"{last_iterations(g)} | {pm(paper[0], paper[1], 3)} | {pm(paper[2], paper[3], 2)} | "
                     f"{reproduced(s, paper)} |")
    return "\n".join(lines)


def reproduce_table() -> str:
    lines = ["| row | command | training time (s, per process) |", "|---|---|---|"]
    for row in PAPER_ROWS:
        g = row.runs
        first = g.runs[0].path
        times = sorted({round(float(r.train_time[-1])) for r in g.runs})
        lines.append(f"| {row.name.replace('*', chr(92) + '*')} | `{command_of(first, seeds_of(g))}` | "
                     f"{' / '.join(f'{t:,}' for t in times)} |")
    return "\n".join(lines)


def summary_table(rows: list[Row], last: int, modes_at: tuple[int, ...] = ()) -> str:
    """Label, seeds, last iteration, last-``last`` numbers, modes (mean / worst seed), near a mode, and the mean
    number of modes at the given iterations ('-' where a row has not reached one)."""
    head = ["run", "seeds", "last iteration", f"log density (last {last})", f"log MMD (last {last})",
            "modes (mean / worst seed)", "near a mode"] + [f"modes at {i // 1000}k" for i in modes_at]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        g = row.runs
        s = summarise(g, last)
        at = [at_iteration(g, "modes", i) for i in modes_at]
        lines.append(f"| {row.name} | {len(g.runs)} | {last_iterations(g)} | {pm(s['logpd_mean'], s['logpd_std'], 3)}"
                     f" | {pm(s['log_mmd_mean'], s['log_mmd_std'], 2)} | {s['modes_mean']:.1f} / {s['modes_min']:.1f}"
                     f" | {s['near_mode_mean']:.3f} |" + "".join(f" {a} |" for a in at))
    return "\n".join(lines)


def at_iteration(g: MethodRuns, attr: str, iteration: int, digits: int = 1) -> str:
    """Mean over seeds of ``attr`` at ``iteration`` ('-' when some seed has no evaluation there)."""
    values = []
    for run in g.runs:
        hit = np.flatnonzero(run.iteration == iteration)
        if not hit.size:
            return "-"
        values.append(getattr(run, attr)[hit[0]])
    return f"{np.mean(values):.{digits}f}"


def trajectory_table(rows: list[Row], iterations: tuple[int, ...]) -> str:
    """Mean over seeds of log density / log MMD / modes at fixed iterations."""
    head = ["row"] + [f"{i // 1000}k" for i in iterations]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        g = row.runs
        cells = [f"{at_iteration(g, 'logpd', i, 2)} / {at_iteration(g, 'log_mmd', i, 2)} / "
                 f"{at_iteration(g, 'modes', i, 1)}" if at_iteration(g, 'logpd', i) != "-" else "-"
                 for i in iterations]
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_table(rows: list[Row], last: int) -> str:
    """Each seed's mean over its last ``last`` evaluations (log density / log MMD / modes)."""
    lines = ["| row | seed: log density / log MMD / modes |", "|---|---|"]
    for row in rows:
        g = row.runs
        n = g.common_evaluations
        cells = [f"{seed}: {np.mean(r.logpd[:n][-last:]):.3f} / {np.mean(r.log_mmd[:n][-last:]):.2f} / "
                 f"{np.mean(r.modes[:n][-last:]):.1f}" for r, seed in sorted(zip(g.runs, seeds_of(g)),
                                                                            key=lambda p: p[1])]
        lines.append(f"| {row.name} | " + "; ".join(cells) + " |")
    return "\n".join(lines)


MATCHED_ROWS = [Row("matched", k) for k in ("vardiu_gaussian_true", "vardiu_nsf_true", "di_ss10_true", "di_ss1_true")]
MATCHED_ROWS = [Row(r.folder, r.key, LABELS[r.key] + " (`matched`)") for r in MATCHED_ROWS]
PAPER_AND_PUBLISHED = [Row(r.folder, r.key, r.label or LABELS[r.key] + " (`paper`)") for r in PAPER_ROWS]
TEACHER_STUDY_ROWS = [Row("teacher_study", "vardiu_gaussian_teacher_smin0.1", "VarDiU Gaussian, `--sigma_min 0.1`"),
                      Row("teacher_study", "vardiu_gaussian_teacher_smin0.5", "VarDiU Gaussian, `--sigma_min 0.5`"),
                      Row("teacher_study", "vardiu_gaussian_teacher_smin1.0", "VarDiU Gaussian, `--sigma_min 1.0`"),
                      Row("teacher_study", "vardiu_gaussian_teacher_smin1.5", "VarDiU Gaussian, `--sigma_min 1.5`"),
                      Row("teacher_study", "vardiu_gaussian_teacher_smin2.0", "VarDiU Gaussian, `--sigma_min 2.0`"),
                      Row("teacher_study", "vardiu_nsf_teacher_smin1.0", "VarDiU NSF, `--sigma_min 1.0`"),
                      Row("teacher_study", "vardiu_nsf_teacher_smin2.0", "VarDiU NSF, `--sigma_min 2.0`"),
                      Row("matched", "di_ss1_teacher", "Diff-Instruct score_step 1, `--sigma_min 0.1`"),
                      Row("teacher_study", "di_ss1_teacher_smin2.0", "Diff-Instruct score_step 1, `--sigma_min 2.0`"),
                      Row("teacher_82k", "vardiu_gaussian_teacher_smin1.5",
                          "VarDiU Gaussian, `--sigma_min 1.5`, teacher on 81,920 points")]
TEACHER_ROWS = [Row("paper", "vardiu_gaussian_teacher", "`paper` recipe, our teacher"),
                Row("authors_teacher", "vardiu_gaussian_teacher", "`paper` recipe, the authors' teacher"),
                Row("teacher_rows", "vardiu_gaussian_teacher_cap2", "power capped at 2.0, our teacher"),
                Row("teacher_rows", "vardiu_gaussian_authors_teacher_cap2",
                    "power capped at 2.0, the authors' teacher"),
                Row("teacher_rows", "vardiu_gaussian_authors_teacher_defaults",
                    "their script's defaults (`--sigma_max 40 --power 1.5`), the authors' teacher"),
                Row("teacher_rows", "vardiu_gaussian_authors_teacher_defaults_no_antithetic",
                    "the same with `--no_antithetic`, the authors' teacher"),
                Row("teacher_rows", "vardiu_gaussian_teacher_per_sample",
                    "per-sample sigma^2 weights (`--weight_reduction sample`), our teacher"),
                Row("teacher_rows", "vardiu_gaussian_authors_teacher_floor1",
                    "noise floor `--sigma_min 1.0`, the authors' teacher")]
EQUALITY_ROWS = [Row("equality/exact", "vardiu_gaussian_true", "`--mode exact`"),
                 Row("equality/fast", "vardiu_gaussian_true", "`--mode fast`")]
MILESTONES = (50_000, 100_000, 200_000, 400_000, 600_000, 800_000, 1_000_000)
EQUALITY_ARM_LABELS = {  # folder under results/equality -> what the arm changes against equality/exact
    "fast": "`--mode fast`",
    "thin_matmul": "`--thin_layer_grad matmul`",
    "bf16": "`--thin_layer_grad matmul --hidden_dtype bfloat16`",
}
EQUALITY_ARMS = [  # (folder under results/equality, iteration, window): each against equality/exact
    ("fast", 240_000, 1), ("fast", 240_000, 20), ("fast", 200_000, 1), ("fast", 200_000, 20),
    ("thin_matmul", 200_000, 1), ("thin_matmul", 200_000, 20),
    ("bf16", 200_000, 20), ("bf16", 240_000, 1), ("bf16", 240_000, 20),
]


def equality_criterion_table(arms: list[tuple[str, int, int]]) -> str:
    """benchmarks/equality_study.compare of each arm (results/equality/<folder>) against results/equality/exact at
    an iteration, each seed averaged over ``window`` evaluations: both arms' means, the differences, the verdict."""
    from benchmarks.equality_study import TOLERANCE, compare, read_arm
    reference = read_arm(RESULTS / "equality" / "exact")
    lines = ["| arm | seeds | iteration | evaluations per seed | log density (exact / arm) | difference "
             f"(tolerance {TOLERANCE['logpd']}) | log MMD (exact / arm) | difference "
             f"(tolerance {TOLERANCE['log_mmd']}) | criterion |", "|" + "---|" * 9]
    for folder, at, window in arms:
        r = compare([reference, read_arm(RESULTS / "equality" / folder)], ["exact", folder], at, window)
        ref, arm, d = r["arms"]["exact"], r["arms"][folder], r["difference"]
        lines.append(f"| {EQUALITY_ARM_LABELS[folder]} | {arm['seeds']} | {at:,} | {window} | "
                     f"{ref['logpd_mean']:.3f} / {arm['logpd_mean']:.3f} | {d['logpd']:+.3f} | "
                     f"{ref['log_mmd_mean']:.2f} / {arm['log_mmd_mean']:.2f} | {d['log_mmd']:+.2f} | "
                     f"{'passed' if r['passed'] else 'failed'} |")
    return "\n".join(lines)


def benchmark_rows_table(pattern: str, header: list[str], cells) -> str:
    """One markdown row per row of every benchmarks/results/<pattern> file, ``cells(data, row)`` giving its cells
    under ``header``, each file named in the last column; then the command that wrote each file."""
    lines = ["| " + " | ".join(header + ["file"]) + " |", "|" + "---|" * (len(header) + 1)]
    commands = []
    for path in sorted((ROOT / "benchmarks" / "results").glob(pattern)):
        data = json.loads(path.read_text())
        commands.append(f"- `{path.name}`: `{data['command']}`")
        lines += ["| " + " | ".join(cells(data, r) + [f"`{path.name}`"]) + " |" for r in data["rows"]]
    return "\n".join(lines + [""] + commands)


def speed_table() -> str:
    """Every row of benchmarks/results/bench_wall_*.json: ms per iteration with and without evaluation, then the
    command that wrote each file. A row whose run failed says so."""
    def cells(data: dict, r: dict) -> list[str]:
        timing = ([f"{r['ms_per_it']:.3f}", f"{r['train_ms_per_it']:.3f}"] if not r.get("failed")
                  else [f"failed: {r['error'].split(': ')[-1]}", ""])
        return [r["method"], str(r["seeds"]), r["mode"], *timing, data["device"], data["torch"]]
    return benchmark_rows_table("bench_wall_*.json", ["method", "seeds", "`--mode`", "ms / iteration",
                                                      "of it training", "card", "torch"], cells)


def step_precision_table() -> str:
    """Every row of benchmarks/results/bench_step_h200_*.json (benchmarks/bench_step.py, iterations only): ms per
    iteration and per seed-iteration under each --thin_layer_grad / --hidden_dtype, then each file's command."""
    def cells(data: dict, r: dict) -> list[str]:
        return [r["method"], str(r["seeds"]), r["mode"], r.get("thin_layer_grad", "exact"),
                r.get("hidden_dtype", "float32"), f"{r['ms_per_it']:.3f}", f"{r['ms_per_seed_it']:.3f}",
                data["device_name"], data["torch"], data.get("date", "undated")]
    return benchmark_rows_table("bench_step_h200_*.json", ["method", "seeds", "`--mode`", "`--thin_layer_grad`",
                                                           "`--hidden_dtype`", "ms / iteration", "ms / seed-iteration",
                                                           "card", "torch", "date"], cells)


def grid_cost_table() -> str:
    """benchmarks/results/grid_cost_*.json (benchmarks/grid_cost.py): per recipe, each job's measured ms per
    iteration and its GPU-hours at the recipe's --max_iter, the total, and the command, card, torch and date."""
    out = []
    for path in sorted((ROOT / "benchmarks" / "results").glob("grid_cost_*.json")):
        data = json.loads(path.read_text())
        out += [f"Recipe `{data['recipe']}`, priced at {data['max_iter']:,} iterations: {data['device']}, torch "
                f"{data['torch']}, {data.get('date', 'undated')}; `{data['command']}` (`{path.name}`)", "",
                "| job | seeds | ms / iteration | of it training | GPU-hours |", "|---|---|---|---|---|"]
        for r in data["rows"]:
            out.append(f"| {r['job']} | {r['seeds']} | failed: {r['failed']} | | |" if "failed" in r else
                       f"| {r['job']} | {r['seeds']} | {r['ms_per_it']:.3f} | {r['train_ms_per_it']:.3f} | "
                       f"{r['gpu_hours']:.2f} |")
        out += [f"| total | | | | {data['gpu_hours']:.2f} |", ""]
    return "\n".join(out)


def demo_line() -> str:
    """The committed run of scripts/demo.sh (results/demo/demo): where it ends, on what."""
    run = results_run("demo/demo")
    config, last = config_of(run.path), int(run.iteration[-1])
    return (f"`bash scripts/demo.sh` (small scale: {last:,} iterations, seed {config['seed']}, width "
            f"{config['width']}, depth {config['depth']}, {config['device_resolved']}, torch "
            f"{config['torch_version']}, float32): log density {run.logpd[-1]:.3f}, log MMD {run.log_mmd[-1]:.2f}, "
            f"{run.modes[-1]:.0f} of 40 modes at the end (true samples: about -6.85, -8.5, 40).")


HIGHDIM_PILOT = [("gauss_d8_s150", "VarDiU Gaussian, d = 8, `--sigma_max 150`"),
                 ("gauss_d8_s20", "VarDiU Gaussian, d = 8, `--sigma_max 20`"),
                 ("di1_d8_s150", "Diff-Instruct score_step 1, d = 8, `--sigma_max 150`"),
                 ("di1_d8_s20", "Diff-Instruct score_step 1, d = 8, `--sigma_max 20`"),
                 ("gauss_d128_s420", "VarDiU Gaussian, d = 128, `--sigma_max 420`")]
HIGHDIM_COLUMNS = [("logpd", "log density", 2), ("logpd_true", "true samples' log density", 2),
                   ("modes", "modes", 1), ("mode_tv", "mode-weight error", 3), ("energy", "energy distance", 1),
                   ("sliced_w2", "sliced W2", 1), ("log_mmd", "log MMD", 2)]


def seed_rows(folder: str, name: str) -> list[list[dict]]:
    """The metrics rows of every seed of run ``name`` in results/<folder> (folders <name>_seed<N>)."""
    runs = sorted((RESULTS / folder).glob(f"{name}_seed*"), key=lambda p: int(p.name.rsplit("seed", 1)[1]))
    return [read_metric_rows(run / "metrics.csv") for run in runs]


def highdim_table(folder: str, runs: list[tuple[str, str]], last: int = 5) -> str:
    """Per run: seeds, last iteration, then mean ± std over seeds of each seed's mean over its last ``last``
    evaluations of the high-dimensional metrics."""
    head = ["run", "seeds", "last iteration"] + [label for _, label, _ in HIGHDIM_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, label in runs:
        seeds = seed_rows(folder, name)
        cells = []
        for key, _, digits in HIGHDIM_COLUMNS:
            per_seed = [np.mean([float(r[key]) for r in rows[-last:]]) for rows in seeds]
            cells.append(pm(float(np.mean(per_seed)), float(np.std(per_seed)), digits))
        lines.append(f"| {label} | {len(seeds)} | {int(seeds[0][-1]['iteration']):,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


HIGHDIM_D8 = [
    ("gauss_d8_s150_fast", "VarDiU Gaussian, annealing 10x (`--power_interval 100`)"),
    ("gauss_d8_s150_pi300", "VarDiU Gaussian, annealing 3.3x (`--power_interval 300`)"),
    ("gauss_d8_s150_slow", "VarDiU Gaussian, the paper's annealing (`--power_interval 1000`)"),
    ("gauss_d8_s150_slow_cv", "VarDiU Gaussian, paper's annealing, `--control_variate on`"),
    ("gauss_d8_s150_slow_b8k", "VarDiU Gaussian, paper's annealing, `--batch_size 8192`"),
    ("gauss_d8_s150_slow_b8k_cv", "VarDiU Gaussian, paper's annealing, batch 8192, control variate"),
    ("nsf_d8_s150_slow", "VarDiU NSF, the paper's annealing"),
    ("gauss_d8_s150_w2", "VarDiU Gaussian, annealing 10x, `--weight sigma2`"),
    ("di1_d8_s150_pi300", "Diff-Instruct score_step 1, annealing 3.3x"),
    ("di1_d8_s150_slow", "Diff-Instruct score_step 1, the paper's annealing"),
]
HIGHDIM_D8_STAGES = (4_000, 12_000, 20_000, 30_000, 51_000)
GAP_PROBES = [("fast_seed0_2000", "10x, 2k"), ("fast_seed0_4000", "10x, 4k"), ("fast_seed0_6000", "10x, 6k"),
              ("fast_seed0_12000", "10x, 12k"), ("gauss_d8_s150_pi300_seed0_last", "3.3x, 58k"),
              ("slow_seed0_last", "paper's, 68k"), ("nsf_d8_s150_slow_seed0_last", "NSF, paper's, 26k")]


def stage_cells(seeds: list[list[dict]], iterations: tuple[int, ...], columns: tuple[tuple[str, int], ...]) -> list[str]:
    """Per iteration: each of ``columns`` (key, digits) as a mean over the seeds that reached it, joined by " / "
    (blank where no seed did)."""
    cells = []
    for it in iterations:
        at = [r for rows in seeds for r in rows if int(r["iteration"]) == it]
        cells.append(" / ".join(f"{np.mean([float(r[key]) for r in at]):.{digits}f}" for key, digits in columns)
                     if at else "")
    return cells


def highdim_stages(folder: str, runs: list[tuple[str, str]], iterations: tuple[int, ...]) -> str:
    """Per run and iteration: energy distance / mode-weight error, mean over the seeds that reached it."""
    lines = ["| run | " + " | ".join(f"{it // 1000}k" for it in iterations) + " |", "|" + "---|" * (1 + len(iterations))]
    for name, label in runs:
        cells = stage_cells(seed_rows(folder, name), iterations, (("energy", 1), ("mode_tv", 2)))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


HIGHDIM_IW = [  # folders under results/highdim
    ("d8_schedule/gauss_d8_s150_slow", "VarDiU Gaussian, K = 0 (the paper's bound)", "shared by 4"),
    ("d8_iw/gauss_d8_s150_slow_iw2", "VarDiU Gaussian, `--iw_samples 2`", "shared by 2"),
    ("d8_iw/gauss_d8_s150_slow_iw8", "VarDiU Gaussian, `--iw_samples 8`", "alone"),
    ("d8_schedule/gauss_d8_s150_slow_b8k", "VarDiU Gaussian, K = 0, `--batch_size 8192`", "shared by 4"),
    ("d8_schedule/di1_d8_s150_slow", "Diff-Instruct score_step 1", "shared by 4"),
]
HIGHDIM_IW_STAGES = (4_000, 12_000, 20_000, 30_000, 40_000, 55_000)


def highdim_run_table(runs: list[tuple[str, str, str]]) -> str:
    """``highdim_table`` of runs given as ``highdim_run_stages`` takes them (results/highdim/<folder/name>)."""
    return highdim_table("highdim", [(name, label) for name, label, _ in runs])


def highdim_run_stages(runs: list[tuple[str, str, str]], iterations: tuple[int, ...]) -> str:
    """Per run (results/highdim/<folder/name>) and iteration: energy distance / mode-weight error / modes, mean
    over the seeds that reached it; then the training milliseconds per iteration (train_time / iteration at each
    seed's last evaluation, mean over seeds) and how the run shared the GPU."""
    lines = ["| run | " + " | ".join(f"{it // 1000}k" for it in iterations) + " | training ms / iteration (sharing) |",
             "|" + "---|" * (2 + len(iterations))]
    for name, label, sharing in runs:
        seeds = seed_rows("highdim", name)
        cells = stage_cells(seeds, iterations, (("energy", 1), ("mode_tv", 2), ("modes", 1)))
        ms = np.mean([1000 * float(rows[-1]["train_time"]) / int(rows[-1]["iteration"]) for rows in seeds])
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ms:.1f} ({sharing}) |")
    return "\n".join(lines)


HIGHDIM_PI500 = [  # folders under results/highdim: one schedule, --power_interval 500 (p = 2 at 95k)
    ("d8_pi500/gauss_d8_s150_pi500", "VarDiU Gaussian, K = 0", "shared by 3"),
    ("d8_pi500/gauss_d8_s150_pi500_wsigma", "VarDiU Gaussian, K = 0, `--weight sigma`", "shared by 3"),
    ("d8_pi500/gauss_d8_s150_pi500_p1", "VarDiU Gaussian, K = 0, `--power 1` (p held at 1 from 45k)", "shared by 3"),
    ("d8_pi500/gauss_d8_s150_pi500_iw8", "VarDiU Gaussian, `--iw_samples 8`", "alone"),
    ("d8_pi500/gauss_d8_s150_pi500_iw8_p1", "VarDiU Gaussian, `--iw_samples 8 --power 1`", "alone"),
    ("d8_pi500/gauss_d8_s150_pi500_iw8_wsigma", "VarDiU Gaussian, `--iw_samples 8 --weight sigma`", "alone"),
    ("d8_pi500/di1_d8_s150_pi500_wsigma", "Diff-Instruct score_step 1, `--weight sigma`", "alone"),
]
HIGHDIM_PI500_STAGES = (10_000, 20_000, 30_000, 45_000, 55_000, 65_000, 80_000)
# rows of HIGHDIM_PI500's schedule with --weight sigma that more than one table below shows
PI500_PRIOR20 = ("d8_pi500/gauss_d8_s150_pi500_prior20_wsigma", "VarDiU Gaussian, K = 0, `--prior_proposals_sigma 20`",
                 "shared by 3")
PI500_IW8 = ("d8_pi500/gauss_d8_s150_pi500_iw8_wsigma", "VarDiU Gaussian, `--iw_samples 8`", "alone")
PI500_DI = ("d8_pi500/di1_d8_s150_pi500_wsigma", "Diff-Instruct score_step 1", "alone")
HIGHDIM_FIXES = [  # folders under results/highdim: the candidate fixes on HIGHDIM_PI500's schedule, --weight sigma
    ("d8_pi500/gauss_d8_s150_pi500_wsigma", "VarDiU Gaussian, K = 0", "shared by 3"),
    PI500_PRIOR20,
    PI500_IW8,
    ("d8_pi500/gauss_d8_s150_pi500_prior20_iw8_wsigma_mm",
     "VarDiU Gaussian, `--iw_samples 8 --prior_proposals_sigma 20 --thin_layer_grad matmul`", "shared by 3"),
    ("d8_pi500/gauss_d8_s150_pi500_iw32_wsigma_mm", "VarDiU Gaussian, `--iw_samples 32 --thin_layer_grad matmul`",
     "shared by 3"),
    PI500_DI,
]
HIGHDIM_FIXES_STAGES = (5_000, 10_000, 17_000, 30_000, 45_000, 60_000, 84_000)
HIGHDIM_PRIOR_SIGMA = [  # folders under results/highdim: K = 0 with prior proposals from lower noise (HIGHDIM_FIXES)
    PI500_PRIOR20,
    ("d8_pi500/gauss_d8_s150_pi500_prior10_wsigma", "VarDiU Gaussian, K = 0, `--prior_proposals_sigma 10`",
     "shared by 4"),
    ("d8_pi500/gauss_d8_s150_pi500_prior5_wsigma", "VarDiU Gaussian, K = 0, `--prior_proposals_sigma 5`",
     "shared by 4"),
    ("d8_pi500/gauss_d8_s150_pi500_prior1_wsigma", "VarDiU Gaussian, K = 0, `--prior_proposals_sigma 1`",
     "shared by 3"),
    PI500_IW8,
    PI500_DI,
]
HIGHDIM_PRIOR_SIGMA_STAGES = (10_000, 20_000, 30_000, 40_000, 45_000, 56_000, 64_000, 86_000)
HIGHDIM_LONG = [  # folders under results/highdim: the paper's annealing speed, --power_interval 1000 (p = 2 at 190k)
    ("d8_schedule_long/gauss_d8_s150_slow_iw8_wsigma_mm",
     "VarDiU Gaussian, `--iw_samples 8 --weight sigma --thin_layer_grad matmul`", "alone"),
    ("d8_schedule_long/gauss_d8_s150_slow_prior5_wsigma",
     "VarDiU Gaussian, K = 0, `--prior_proposals_sigma 5 --weight sigma`", "shared by 3"),
    ("d8_schedule_long/gauss_d8_s150_slow_prior5_wsigma_si2000",
     "VarDiU Gaussian, K = 0, `--prior_proposals_sigma 5 --weight sigma`, to 250k", "alone"),
    ("d8_schedule_long/di1_d8_s150_slow_wsigma", "Diff-Instruct score_step 1, `--weight sigma`", "alone"),
]
HIGHDIM_LONG_STAGES = (30_000, 60_000, 76_000, 86_000, 90_000, 110_000, 138_000, 180_000, 226_000, 250_000)
HIGHDIM_D8_SAMPLES = [  # d = 8, --weight sigma, prior proposals from sigma 5: more samples per step of the power
    ("d8_schedule_long/gauss_d8_s150_slow_prior5_wsigma_si2000",
     "VarDiU Gaussian, K = 0, `--prior_proposals_sigma 5`, `--power_interval 1000`", "alone"),
    ("d8_schedule_long/gauss_d8_s150_slow_prior5_b4k_wsigma",
     "VarDiU Gaussian, K = 0, `--prior_proposals_sigma 5`, `--power_interval 1000 --batch_size 4096`", "alone"),
    ("d8_pi2000/gauss_d8_s150_pi2000_prior5_wsigma",
     "VarDiU Gaussian, K = 0, `--prior_proposals_sigma 5`, `--power_interval 2000`", "alone"),
    ("d8_schedule_long/di1_d8_s150_slow_wsigma", "Diff-Instruct score_step 1, `--power_interval 1000`", "alone"),
    ("d8_pi2000/di1_d8_s150_pi2000_wsigma", "Diff-Instruct score_step 1, `--power_interval 2000`", "alone"),
]
HIGHDIM_D8_SAMPLES_STAGES = (40_000, 70_000, 92_000, 120_000, 140_000, 180_000, 226_000, 240_000, 280_000)
HIGHDIM_CPU_PILOT = [  # folders under results/highdim: small networks on the CPU, --power_interval 500
    ("cpu_pilot/gauss_d8_w128_pi500_wsigma", "VarDiU Gaussian, K = 0", "CPU, shared by 2"),
    ("cpu_pilot/gauss_d8_w128_pi500_prior20_wsigma", "VarDiU Gaussian, K = 0, `--prior_proposals_sigma 20`",
     "CPU, shared by 2 to 33k, then alone"),
]
HIGHDIM_CPU_PILOT_STAGES = (5_000, 10_000, 15_000, 20_000, 30_000, 40_000, 45_000)
HIGHDIM_CPU_PATHWISE = [  # small networks on the CPU, --power_interval 200: the bound's and the pathwise gradient
    ("cpu_pathwise/gauss_d8_w64_pi200_prior5_wsigma", "VarDiU Gaussian, K = 0, `--prior_proposals_sigma 5`",
     "CPU, shared by 2"),
    ("cpu_pathwise/gauss_d8_w64_pi200_prior5_path_wsigma",
     "VarDiU Gaussian, K = 0, `--prior_proposals_sigma 5 --prior_proposals_grad pathwise`", "CPU, shared by 2"),
]
HIGHDIM_CPU_PATHWISE_STAGES = (2_000, 4_000, 6_000, 8_000, 10_000, 12_000, 15_000, 18_000, 20_000)
HIGHDIM_CPU_PATHWISE_PI1000 = [  # the same small networks at the paper's annealing speed, --power_interval 1000
    ("cpu_pathwise/gauss_d8_w64_pi1000_prior5_wsigma", "VarDiU Gaussian, K = 0, `--prior_proposals_sigma 5`",
     "CPU, shared by 2"),
    ("cpu_pathwise/gauss_d8_w64_pi1000_prior5_path_wsigma",
     "VarDiU Gaussian, K = 0, `--prior_proposals_sigma 5 --prior_proposals_grad pathwise`", "CPU, shared by 2"),
    ("cpu_pathwise/di1_d8_w64_pi1000_wsigma", "Diff-Instruct score_step 1 (teacher width 64, depth 2)",
     "CPU, alone, 2 threads"),
]
HIGHDIM_CPU_PATHWISE_PI1000_STAGES = (10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 70_000, 80_000, 90_000)
HIGHDIM_D32 = [  # d = 32, --sigma_max 250, the same schedule as HIGHDIM_PI500, --weight sigma
    ("d32_pi500/gauss_d32_s250_pi500_iw8_wsigma", "VarDiU Gaussian, `--iw_samples 8`", "alone"),
    ("d32_pi500/gauss_d32_s250_pi500_prior10_wsigma_si2000", "VarDiU Gaussian, K = 0, `--prior_proposals_sigma 10`",
     "alone"),
    ("d32_pi500/di1_d32_s250_pi500_wsigma_si2000", "Diff-Instruct score_step 1", "shared by 3"),
]
HIGHDIM_D32_STAGES = (10_000, 20_000, 28_000, 40_000, 46_000, 56_000, 64_000, 74_000)
HIGHDIM_D32_PI1000 = [  # d = 32, --sigma_max 250, the paper's annealing speed (--power_interval 1000), --weight sigma
    ("d32_pi1000/gauss_d32_s250_pi1000_prior10_wsigma", "VarDiU Gaussian, K = 0, `--prior_proposals_sigma 10`",
     "shared by 2"),
    ("d32_pi1000/di1_d32_s250_pi1000_wsigma", "Diff-Instruct score_step 1", "shared by 2"),
]
HIGHDIM_D32_PI1000_STAGES = (10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 70_000, 78_000, 84_000)


def capacity_table() -> str:
    """experiments/generator_capacity.py results (results/highdim/capacity/d<D>.json): per d, the cell map T's own
    samples, then the network regressed onto it at its last evaluation."""
    lines = ["| d | samples of | iterations | squared error to T | modes | mode-weight error | energy distance "
             "| log density | true samples' log density | share near a mode |", "|" + "---|" * 10]
    found = [json.loads(p.read_text()) for p in (RESULTS / "highdim" / "capacity").glob("*.json")]
    for result in sorted(found, key=lambda r: r["dim"]):
        exact = next(r for r in result["rows"] if r.get("map"))
        for label, row in (("the map T", exact), (f"the network (width {result['width']}, depth {result['depth']})",
                                                  result["rows"][-1])):
            lines.append(f"| {result['dim']} | {label} | {row['iteration']:,} | {row['mse']:.3g} | {row['modes']} "
                         f"| {row['mode_tv']:.3f} | {row['energy']:.3f} | {row['logpd']:.2f} | "
                         f"{row['logpd_true']:.2f} | {row['near_mode']:.2f} |")
    return "\n".join(lines)


def proposal_ess_table() -> str:
    """experiments/proposal_ess.py results (results/highdim/proposal_ess/d<D>.json): per sigma and d, the prior
    proposals' effective sample size, median (10th percentile) over rows, of n draws."""
    found = sorted((json.loads(p.read_text()) for p in (RESULTS / "highdim" / "proposal_ess").glob("*.json")),
                   key=lambda r: r["dim"])
    lines = ["| sigma | " + " | ".join(f"d = {r['dim']} (n = {r['draws']})" for r in found) + " |",
             "|" + "---|" * (1 + len(found))]
    for k, row in enumerate(found[0]["rows"]):
        cells = [f"{r['rows'][k]['ess_median']:.1f} ({r['rows'][k]['ess_p10']:.1f})" for r in found]
        lines.append(f"| {row['sigma']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bound_vs_modes_table() -> str:
    """experiments/bound_vs_modes.py results (results/highdim/bound_vs_modes/*.json): per sigma, d and n, the share
    of the divergence's pull from m modes towards all 40 that the prior-proposal bound keeps, m = 20 (m = 1); a dash
    where that share's standard error is above 0.1 (the divergence's own difference is then near the noise)."""
    found = sorted((json.loads(p.read_text()) for p in (RESULTS / "highdim" / "bound_vs_modes").glob("*.json")),
                   key=lambda r: (r["dim"], r["draws"]))
    lines = ["| sigma | " + " | ".join(f"d = {r['dim']}, n = {r['draws']}" for r in found) + " |",
             "|" + "---|" * (1 + len(found))]
    for k, row in enumerate(found[0]["rows"]):
        shares = [[r["rows"][k]["by_m"][m] for m in ("20", "1")] for r in found]
        cells = ["{} ({})".format(*(f"{e['kept']:.2f}" if e["kept_se"] <= 0.1 else "–" for e in pair))
                 for pair in shares]
        lines.append(f"| {row['sigma']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def prior_force_table() -> str:
    """experiments/prior_force.py results (results/highdim/prior_force/d<D>.json): per d and sigma, the exact force's
    root mean square, then per pool size n the bound's and the pathwise estimate's root-mean-square error, each with
    its cosine to the exact force in brackets (a dash: no exact force to compare with)."""
    found = sorted((json.loads(p.read_text()) for p in (RESULTS / "highdim" / "prior_force").glob("*.json")),
                   key=lambda r: r["dim"])
    sizes = sorted({row["draws"] for r in found for row in r["rows"]})
    lines = ["| d | sigma | exact force | " + " | ".join(f"{name}, n = {n}" for n in sizes for name in ("bound", "pathwise"))
             + " |", "|" + "---|" * (3 + 2 * len(sizes))]
    cos = lambda c: "–" if c is None else f"{c:.2f}"  # noqa: E731
    for r in found:
        for sigma in dict.fromkeys(row["sigma"] for row in r["rows"]):
            by_n = {row["draws"]: row for row in r["rows"] if row["sigma"] == sigma}
            signal = np.mean([row["signal"] for row in by_n.values()])
            cells = [f"{by_n[n][f'{name}_error']:.2g} ({cos(by_n[n][f'{name}_cos'])})"
                     for n in sizes for name in ("bound", "pathwise")]
            lines.append(f"| {r['dim']} | {sigma:g} | {signal:.2g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gap_table(probes: list[tuple[str, str]]) -> str:
    """experiments/bound_gap.py results: per noise level and probe, gap in nats (gap gradient / KL gradient, ess)."""
    found = [(json.loads((RESULTS / "highdim" / "gap" / f"{name}.json").read_text()), label) for name, label in probes]
    lines = ["| sigma | " + " | ".join(label for _, label in found) + " |", "|" + "---|" * (1 + len(found))]
    for k, row in enumerate(found[0][0]["rows"]):
        cells = [f"{r['rows'][k]['gap']:.3g} ({r['rows'][k]['ratio']:.2f}, {r['rows'][k]['ess']:.2f})"
                 for r, _ in found]
        lines.append(f"| {row['sigma']:.3g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_run(folder: str):
    """The one run in results/<folder>."""
    return read_run(RESULTS / folder, 1000)


# NAME -> what the block between its markers holds
BLOCKS = {
    "paper-table": lambda: paper_table(),
    "reproduce-table": reproduce_table,
    "paper-trajectories": lambda: trajectory_table(PAPER_AND_PUBLISHED + MATCHED_ROWS, MILESTONES),
    "paper-seeds": lambda: seed_table(PAPER_AND_PUBLISHED + MATCHED_ROWS, 50),
    "matched-table": lambda: summary_table(MATCHED_ROWS, 50),
    "teacher-study-table": lambda: summary_table(TEACHER_STUDY_ROWS, 10, (100_000, 200_000, 300_000, 500_000)),
    "teacher-rows-table": lambda: summary_table(TEACHER_ROWS, 50),
    "speed-table": speed_table,
    "step-precision-table": step_precision_table,
    "equality-criterion-table": lambda: equality_criterion_table(EQUALITY_ARMS),
    "grid-cost-table": grid_cost_table,
    "run-index": run_index_tables,
    "demo-line": demo_line,
    "highdim-pilot-table": lambda: highdim_table("highdim/pilot", HIGHDIM_PILOT),
    "highdim-d8-table": lambda: highdim_table("highdim/d8_schedule", HIGHDIM_D8),
    "highdim-d8-stages": lambda: highdim_stages("highdim/d8_schedule", HIGHDIM_D8, HIGHDIM_D8_STAGES),
    "highdim-gap-table": lambda: gap_table(GAP_PROBES),
    "highdim-iw-table": lambda: highdim_run_table(HIGHDIM_IW),
    "highdim-iw-stages": lambda: highdim_run_stages(HIGHDIM_IW, HIGHDIM_IW_STAGES),
    "highdim-pi500-table": lambda: highdim_run_table(HIGHDIM_PI500),
    "highdim-pi500-stages": lambda: highdim_run_stages(HIGHDIM_PI500, HIGHDIM_PI500_STAGES),
    "highdim-fixes-table": lambda: highdim_run_table(HIGHDIM_FIXES),
    "highdim-fixes-stages": lambda: highdim_run_stages(HIGHDIM_FIXES, HIGHDIM_FIXES_STAGES),
    "highdim-long-table": lambda: highdim_run_table(HIGHDIM_LONG),
    "highdim-long-stages": lambda: highdim_run_stages(HIGHDIM_LONG, HIGHDIM_LONG_STAGES),
    "highdim-d8-samples-table": lambda: highdim_run_table(HIGHDIM_D8_SAMPLES),
    "highdim-d8-samples-stages": lambda: highdim_run_stages(HIGHDIM_D8_SAMPLES, HIGHDIM_D8_SAMPLES_STAGES),
    "highdim-cpu-pilot-table": lambda: highdim_run_table(HIGHDIM_CPU_PILOT),
    "highdim-cpu-pilot-stages": lambda: highdim_run_stages(HIGHDIM_CPU_PILOT, HIGHDIM_CPU_PILOT_STAGES),
    "highdim-prior-sigma-table": lambda: highdim_run_table(HIGHDIM_PRIOR_SIGMA),
    "highdim-prior-sigma-stages": lambda: highdim_run_stages(HIGHDIM_PRIOR_SIGMA, HIGHDIM_PRIOR_SIGMA_STAGES),
    "highdim-cpu-pathwise-table": lambda: highdim_run_table(HIGHDIM_CPU_PATHWISE),
    "highdim-cpu-pathwise-stages": lambda: highdim_run_stages(HIGHDIM_CPU_PATHWISE, HIGHDIM_CPU_PATHWISE_STAGES),
    "highdim-cpu-pathwise-pi1000-table": lambda: highdim_run_table(HIGHDIM_CPU_PATHWISE_PI1000),
    "highdim-cpu-pathwise-pi1000-stages": lambda: highdim_run_stages(HIGHDIM_CPU_PATHWISE_PI1000,
                                                                     HIGHDIM_CPU_PATHWISE_PI1000_STAGES),
    "highdim-d32-table": lambda: highdim_run_table(HIGHDIM_D32),
    "highdim-d32-stages": lambda: highdim_run_stages(HIGHDIM_D32, HIGHDIM_D32_STAGES),
    "highdim-d32-pi1000-table": lambda: highdim_run_table(HIGHDIM_D32_PI1000),
    "highdim-d32-pi1000-stages": lambda: highdim_run_stages(HIGHDIM_D32_PI1000, HIGHDIM_D32_PI1000_STAGES),
    "highdim-capacity-table": capacity_table,
    "highdim-proposal-ess-table": proposal_ess_table,
    "highdim-bound-vs-modes-table": bound_vs_modes_table,
    "highdim-prior-force-table": prior_force_table,
    "equality-table": lambda: summary_table(EQUALITY_ROWS, 10),
    "authors-teacher-trajectory": lambda: trajectory_table(
        [Row("authors_teacher", "vardiu_gaussian_teacher", "`paper` recipe, the authors' teacher"),
         Row("paper", "vardiu_gaussian_teacher", "`paper` recipe, our teacher")],
        (50_000, 100_000, 150_000, 200_000, 258_000)),
}


# ---------------------------------------------------------------------------------------------------------------
# Writing and checking
# ---------------------------------------------------------------------------------------------------------------

def fill_blocks(text: str) -> str:
    """``text`` with every generated block rewritten."""
    out, pos = [], 0
    for match in BEGIN.finditer(text):
        if match.start() < pos:
            continue
        name = match.group(1)
        end = text.find(END, match.end())
        if end < 0 or name not in BLOCKS:
            raise SystemExit(f"report: block {name!r} has no end marker or is not one of {', '.join(BLOCKS)}")
        out += [text[pos:match.end()], BLOCKS[name]().rstrip("\n") + "\n"]
        pos = end
    return "".join(out) + text[pos:]


def clear_caches() -> None:
    """Forget what was read from results/ (for a caller that changes RESULTS or the files under it)."""
    for cached in (runs_below, index_rows, legacy_stops):
        cached.cache_clear()


def expected_files() -> dict[Path, str]:
    """Every generated file (or file with generated blocks) and the text results/ gives it."""
    files = {RESULTS / "INDEX.csv": index_csv(index_rows())}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if BEGIN.search(path.read_text()):
            files[path] = fill_blocks(path.read_text())
    return files


def stale_files() -> list[Path]:
    """The generated files that differ from what results/ gives."""
    return [p for p, text in expected_files().items() if not p.is_file() or p.read_text() != text]


@exit_on_usage_error
def main(argv: list[str] | None = None) -> int:
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file is out of date")
    a = p.parse_args(argv)
    if a.check:
        stale = stale_files()
        for path in stale:
            print(f"report: {path.relative_to(ROOT)} differs from what results/ gives; run python report.py",
                  file=sys.stderr)
        return 1 if stale else 0
    for path, text in expected_files().items():
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
