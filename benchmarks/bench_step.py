"""Milliseconds per training iteration at the paper's sizes (width 400, depth 4, batch 1024, true score) in the
three --mode settings (eager; exact: one CUDA graph of the eager kernels, float32; fast: one CUDA graph of
torch.compile'd kernels with TF32 hidden products), 1 seed vs K vectorised seeds. Iterations only: for wall time
with the paper's evaluation schedule see bench_wall.py.

    python benchmarks/bench_step.py                                  # every method, cuda if available
    python benchmarks/bench_step.py --device cpu --seeds 1 --iters 20 --methods vardiu_gaussian

Times the same iteration the training loop runs (``utils.step.Trainer.iteration``, run as ``utils.step.prepare``
sets it up for the mode), after warm-up
(and capture), between two device synchronisations. Prints a Markdown table and the device name and writes a
JSON file. ``--profile`` adds, per row, the CUDA kernels one iteration launches and their summed GPU time (from an
eager iteration under torch.profiler): the floor a CUDA graph can approach.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from benchmarks import chosen_methods
from models.networks import HIDDEN_DTYPES, THIN_LAYER_GRADS
from utils.cli import exit_on_usage_error
from utils.registry import method_trainer
from utils.run_io import write_result
from utils.step import Trainer, prepare, resolve_device, synchronize

# benchmark row -> (utils.registry method, its flags): the true score at the paper's sizes, and the K-sample bound
# and the prior proposals of the d = 8 and d = 32 studies (docs/high-dimensional.md), timed only when --methods
# names them
METHODS = {
    "vardiu_gaussian": ("vardiu_gaussian", ["--true_score"]),
    "vardiu_nsf": ("vardiu_nsf", ["--true_score"]),
    "di_ss1": ("diff_instruct", ["--true_score", "--score_step", "1"]),
    "di_ss10": ("diff_instruct", ["--true_score", "--score_step", "10"]),
    "vardiu_gaussian_iw8_d8": ("vardiu_gaussian", ["--true_score", "--dim", "8", "--sigma_max", "150",
                                                   "--precondition", "--iw_samples", "8", "--weight", "sigma"]),
    "vardiu_gaussian_prior20_d8": ("vardiu_gaussian", ["--true_score", "--dim", "8", "--sigma_max", "150",
                                                       "--precondition", "--prior_proposals_sigma", "20",
                                                       "--weight", "sigma"]),
    "vardiu_gaussian_prior10_d32": ("vardiu_gaussian", ["--true_score", "--dim", "32", "--sigma_max", "250",
                                                        "--precondition", "--prior_proposals_sigma", "10",
                                                        "--weight", "sigma"]),
}
PAPER_METHODS = ("vardiu_gaussian", "vardiu_nsf", "di_ss1", "di_ss10")


def make_trainer(method: str, num_seeds: int, device: torch.device) -> Trainer:
    """The trainer of a method at the paper's sizes, K seeds, the power at 2 (the cost does not depend on it)."""
    name, flags = METHODS[method]
    trainer = method_trainer(name, flags, list(range(num_seeds)), device)
    trainer.power.fill_(2.0)
    return trainer


def kernel_profile(iteration, device: torch.device) -> tuple[int, float, list]:
    """(CUDA kernels launched, their summed GPU time in ms, the 8 costliest kernels) for one iteration run
    outside any graph (compiled or not, as the row's mode)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        iteration()
        synchronize(device)
    count, total_us, by_name = 0, 0.0, {}
    for event in prof.events():
        if getattr(event, "device_type", None) == torch.autograd.DeviceType.CUDA:
            us = event.device_time if hasattr(event, "device_time") else event.cuda_time
            count += 1
            total_us += us
            n, t = by_name.get(event.name[:80], (0, 0.0))
            by_name[event.name[:80]] = (n + 1, t + us)
    top = sorted(([name, n, round(t, 1)] for name, (n, t) in by_name.items()), key=lambda r: -r[2])[:8]
    return count, total_us / 1000, top


def bench(method: str, num_seeds: int, mode: str, device: torch.device, iters: int, warmup: int,
          profile_kernels: bool, thin_layer_grad: str = "exact", hidden_dtype: str = "float32") -> dict:
    """One row, in one of the scripts' --mode settings (eager, exact, fast), --thin_layer_grad and --hidden_dtype."""
    torch._dynamo.reset()  # each row compiles afresh (no recompile limit across rows)
    trainer = make_trainer(method, num_seeds, device)
    run = prepare(trainer, mode, thin_layer_grad, hidden_dtype)
    for _ in range(warmup):
        run()
    synchronize(device)
    t0 = time.perf_counter()
    iters = max(iters // 4, 5) if mode == "eager" else iters
    for _ in range(iters):
        run()
    synchronize(device)
    ms = (time.perf_counter() - t0) / iters * 1000
    row = {"method": method, "seeds": num_seeds, "mode": mode, "thin_layer_grad": thin_layer_grad,
           "hidden_dtype": hidden_dtype, "ms_per_it": ms, "ms_per_seed_it": ms / num_seeds, "iters": iters}
    if profile_kernels and device.type == "cuda":
        row["kernels"], row["kernel_ms"], row["top_kernels"] = kernel_profile(trainer.iteration, device)
    return row


@exit_on_usage_error
def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--methods", default=",".join(PAPER_METHODS),
                   help=f"comma-separated subset of {', '.join(METHODS)} (default: the paper's four)")
    p.add_argument("--seeds", default="1,10", help="comma-separated numbers of vectorised seeds")
    p.add_argument("--modes", default="eager,exact,fast", help="the scripts' --mode settings to time (all but eager "
                   "need CUDA)")
    p.add_argument("--iters", type=int, default=200, help="timed iterations per row (eager rows: a quarter)")
    p.add_argument("--warmup", type=int, default=20, help="untimed iterations first (includes the graph capture)")
    p.add_argument("--thin_layer_grad", default="exact", choices=THIN_LAYER_GRADS,
                   help="the scripts' --thin_layer_grad for every row")
    p.add_argument("--hidden_dtype", default="float32", choices=HIDDEN_DTYPES,
                   help="the scripts' --hidden_dtype for every row")
    p.add_argument("--profile", action="store_true", help="count kernels and their GPU time (eager CUDA rows)")
    p.add_argument("--json", default="benchmarks/results/bench_step.json", help="where to write the results")
    a = p.parse_args(argv)
    methods = chosen_methods(a.methods, METHODS)
    device = resolve_device(a.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    rows = []
    print("| method | seeds | mode | ms / iteration | ms / seed-iteration | kernels | kernel ms |")
    print("|---|---|---|---|---|---|---|")
    for method in methods:
        for num_seeds in [int(k) for k in a.seeds.split(",")]:
            for mode in a.modes.split(","):
                if mode != "eager" and device.type != "cuda":
                    continue
                row = bench(method, num_seeds, mode, device, a.iters, a.warmup, a.profile, a.thin_layer_grad,
                            a.hidden_dtype)
                rows.append(row)
                kernel_ms = f"{row['kernel_ms']:.3f}" if "kernel_ms" in row else ""
                print(f"| {method} | {num_seeds} | {row['mode']} | {row['ms_per_it']:.3f} | "
                      f"{row['ms_per_seed_it']:.3f} | {row.get('kernels', '')} | {kernel_ms} |", flush=True)
    write_result(a.json, "benchmarks/bench_step.py", argv,
                 {"device": str(device), "device_name": name, "torch": torch.__version__, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
