"""Wall time per training iteration of the real training scripts, with the paper's evaluation schedule (every 1000
iterations, 10,000 samples), for each --mode.

    python benchmarks/bench_wall.py                                   # every method, modes exact and fast
    python benchmarks/bench_wall.py --methods vardiu_gaussian --seeds 5,10 --iters 6000

Each row runs one training process alone (``--seeds 0-(K-1) --max_iter ITERS --show_iter 1000 --eval_samples
10000``, paper recipe flags) and reads its metrics.csv: ms per iteration = (wall_time at the last evaluation -
wall_time at iteration 1000) / (ITERS - 1000). That span holds the evaluations, metrics and logging of the
paper's runs but not the start (CUDA initialisation, compilation, capture). ``train ms`` counts the training
iterations alone (train_time). Prints a Markdown table and writes a JSON file.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from benchmarks import chosen_methods
from utils.cli import UsageError, exit_on_usage_error
from utils.recipes import RECIPES
from utils.run_io import device_name, read_metric_rows, run_folder_name, write_result

METHODS = {  # the paper recipe's true-score rows
    "vardiu_gaussian": RECIPES["paper"]["vardiu_gaussian_true"],
    "vardiu_nsf": RECIPES["paper"]["vardiu_nsf_true"],
    "di_ss1": RECIPES["paper"]["di_ss1_true"],
    "di_ss10": RECIPES["paper"]["di_ss10_true"],
}


def bench(method: str, seeds: int, mode: str, iters: int, out_dir: Path) -> dict:
    spec = METHODS[method]
    name = f"{method}_{mode}_{seeds}"
    cmd = [sys.executable, str(ROOT / spec.script), *spec.flags, "--seeds", f"0-{seeds - 1}", "--max_iter", str(iters),
           "--show_iter", "1000", "--eval_samples", "10000", "--mode", mode, "--out_dir", str(out_dir), "--name",
           name, "--no_progress", "--plot_every", "0", "--checkpoint_minutes", "1000", "--save_every", "0"]
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        errors = [line for line in res.stderr.splitlines() if "Error" in line or "error:" in line]
        return {"method": method, "seeds": seeds, "mode": mode, "iters": iters, "failed": True,
                "error": (errors or res.stderr.strip().splitlines() or ["?"])[-1][:300], "command": " ".join(cmd[1:])}
    return {"method": method, "seeds": seeds, "mode": mode, "iters": iters,
            **ms_per_iteration(out_dir / run_folder_name(name, 0, seeds), 1000, iters),
            "process_s": time.perf_counter() - start, "command": " ".join(cmd[1:])}


def ms_per_iteration(run_dir: Path, first: int, last: int) -> dict:
    """Wall and training milliseconds per iteration of a run folder between its evaluations at iterations
    ``first`` and ``last`` (so the start, compilation and capture, is left out; evaluations are in)."""
    rows = {int(r["iteration"]): r for r in read_metric_rows(run_dir / "metrics.csv")}
    a, b = rows[first], rows[last]
    return {"ms_per_it": (float(b["wall_time"]) - float(a["wall_time"])) / (last - first) * 1000,
            "train_ms_per_it": (float(b["train_time"]) - float(a["train_time"])) / (last - first) * 1000}


@exit_on_usage_error
def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {', '.join(METHODS)}")
    p.add_argument("--seeds", default="5", help="comma-separated numbers of vectorised seeds")
    p.add_argument("--modes", default="exact,fast", help="comma-separated --mode settings")
    p.add_argument("--iters", type=int, default=5000, help="iterations per row (timed from 1000 on)")
    p.add_argument("--json", default="benchmarks/results/bench_wall.json", help="where to write the results")
    a = p.parse_args(argv)
    if a.iters < 2000 or a.iters % 1000:
        raise UsageError(f"--iters must be a multiple of 1000 and at least 2000, got {a.iters}")
    methods = chosen_methods(a.methods, METHODS)
    import torch
    device = device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"device: {device}, torch {torch.__version__}")
    print("| method | seeds | mode | ms / iteration (with evaluation) | train ms / iteration | process s |")
    print("|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            for seeds in [int(k) for k in a.seeds.split(",")]:
                for mode in a.modes.split(","):
                    row = bench(method, seeds, mode, a.iters, Path(tmp))
                    rows.append(row)
                    if row.get("failed"):
                        print(f"| {method} | {seeds} | {mode} | failed: {row['error']} | | |", flush=True)
                        continue
                    print(f"| {method} | {seeds} | {mode} | {row['ms_per_it']:.3f} | {row['train_ms_per_it']:.3f} | "
                          f"{row['process_s']:.0f} |", flush=True)
    write_result(a.json, "benchmarks/bench_wall.py", argv, {"device": device, "torch": torch.__version__, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
