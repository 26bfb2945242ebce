"""GPU-hours of a run_grid.py recipe, from measured speeds: each job of the recipe runs briefly, exactly as the
grid runs it, and its time per iteration is multiplied out to the recipe's --max_iter.

    python benchmarks/grid_cost.py --recipe paper                  # every job of the paper grid, 10 seeds
    python benchmarks/grid_cost.py --recipe matched --seeds 0-4 --iters 3000

Each job is ``run_grid.job_command`` (the command ``run_grid.py --dry_run`` prints, its seeds vectorised) with
--max_iter ITERS; ms per iteration = wall time between the evaluations at --start and ITERS (evaluation every
--show_iter iterations included, start-up left out), and the job's GPU-hours = ms per iteration x --max_iter /
3.6e6 (one GPU per job, as run_grid.py runs them). Prints a Markdown table and writes a JSON file. Flags after
``--`` go to every training command (as with run_grid.py).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import chosen_methods
from benchmarks.bench_wall import ms_per_iteration
from run_grid import job_command, seed_jobs
from utils.cli import UsageError, exit_on_usage_error
from utils.recipes import RECIPES
from utils.run_io import device_name, write_result
from utils.seeds import parse_seeds


def job_cost(recipe: str, method: str, seeds: str, iters: int, start: int, max_iter: int, extra: list[str],
             out_dir: Path) -> dict:
    """Run one job of ``recipe`` for ``iters`` iterations and price it at ``max_iter``."""
    cmd = job_command(recipe, method, seeds, iters, out_dir, extra)
    began = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    row = {"method": method, "seeds": seeds, "iters": iters, "command": " ".join(cmd[1:])}
    if res.returncode != 0:
        return {**row, "failed": (res.stderr.strip().splitlines() or ["?"])[-1][:300]}
    speed = ms_per_iteration(out_dir / f"{method}_seed{parse_seeds(seeds)[0]}", start, iters)
    return {**row, **speed, "gpu_hours": speed["ms_per_it"] * max_iter / 3.6e6, "process_s": time.perf_counter() - began}


@exit_on_usage_error
def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="paper", choices=list(RECIPES))
    p.add_argument("--methods", default=None, help="comma-separated methods of the recipe (default: all)")
    p.add_argument("--seeds", default="0-9", help="seeds of every job, as run_grid.py --seeds")
    p.add_argument("--seeds_per_job", type=int, default=0, help="as run_grid.py --seeds_per_job")
    p.add_argument("--max_iter", type=int, default=1_000_000, help="the grid's iterations the cost is priced at")
    p.add_argument("--iters", type=int, default=5000, help="iterations each job runs here")
    p.add_argument("--start", type=int, default=1000, help="first evaluation timed (the start-up before is not)")
    p.add_argument("--json", default=None, help="where to write the results (default: benchmarks/results/"
                                                "grid_cost_<recipe>.json)")
    a = p.parse_args(argv)
    methods = list(RECIPES[a.recipe]) if a.methods is None else chosen_methods(a.methods, list(RECIPES[a.recipe]))
    parse_seeds(a.seeds)
    if not 0 < a.start < a.iters or a.max_iter <= 0:
        raise UsageError(f"need 0 < --start < --iters and --max_iter > 0, got {a.start}, {a.iters}, {a.max_iter}")
    import torch
    device = device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"recipe {a.recipe}, device {device}, torch {torch.__version__}, priced at {a.max_iter:,} iterations")
    print("| job | seeds | ms / iteration (with evaluation) | GPU-hours |")
    print("|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            for job, seeds in seed_jobs(method, a.seeds, a.seeds_per_job):
                row = job_cost(a.recipe, method, seeds, a.iters, a.start, a.max_iter, extra, Path(tmp) / job)
                rows.append({"job": job, **row})
                cells = f"failed: {row['failed']} | " if "failed" in row else \
                    f"{row['ms_per_it']:.3f} | {row['gpu_hours']:.2f}"
                print(f"| {job} | {seeds} | {cells} |", flush=True)
    total = sum(r.get("gpu_hours", 0.0) for r in rows)
    print(f"| total | | | {total:.2f} |" + (" (some jobs failed)" if any("failed" in r for r in rows) else ""))
    return write_result(a.json or f"benchmarks/results/grid_cost_{a.recipe}.json", "benchmarks/grid_cost.py", argv,
                        {"recipe": a.recipe, "device": device, "torch": torch.__version__, "max_iter": a.max_iter,
                         "rows": rows, "gpu_hours": total})


if __name__ == "__main__":
    main()
