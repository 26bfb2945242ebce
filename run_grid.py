"""Launch a recipe of the MoG40 experiments: methods x seeds, each method one process training its seeds vectorised
(or --seeds_per_job seeds per process).

    python run_grid.py --list                                      # the recipes, their methods and flags
    python run_grid.py --recipe paper --dry_run                    # print the commands, run nothing
    python run_grid.py --recipe paper --max_iter 1000000 --seeds 0-9 --out_dir results
    python run_grid.py --recipe matched --methods vardiu_gaussian_true,di_ss1_true --max_iter 20000
    python run_grid.py --recipe paper --methods vardiu_gaussian_true --seeds 5-8 --seeds_per_job 1   # 4 processes
    python run_grid.py --recipe paper --launcher slurm --wait      # one SLURM array task per method (submitit)

Recipes (``utils/recipes.py``): ``paper`` (the table's eight rows as the authors' code ran them), ``matched``
(every method with the same per-sample weight and sigma schedule) and ``published`` (the README's published
commands). Runs land in --out_dir/<recipe>/ as ``<method>_seed<N>`` and record the recipe in config.json; each
job's output goes to --out_dir/<recipe>/logs/<method>.log. Flags after ``--`` go to every training script. Jobs
are spread over the GPUs in --gpus (default: all visible), one job per GPU at a time; with no GPU they run one
after another on the CPU. Exit code 1 if any job failed.
"""
from __future__ import annotations

from utils import interrupt

if __name__ == "__main__":  # before the imports below (seconds): a stop signal from here on ends with one line
    interrupt.install()

import argparse
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from utils.cli import Parser, UsageError, exit_on_usage_error, validate_output_folder
from utils.recipes import RECIPE_SUMMARIES, RECIPES
from utils.seeds import parse_seeds
from utils.slurm import GridTask, SlurmOptions, require_submitit, submit as slurm_submit, wait as slurm_wait

ROOT = Path(__file__).resolve().parent


def job_command(recipe: str, method: str, seeds: str, max_iter: int, out_dir: Path, extra: list[str],
                resume: bool = False) -> list[str] | None:
    """The training command of one method of a recipe: its script and flags, all seeds vectorised. With
    ``resume``, a method whose seeds' run folders exist continues them with --load (None: already at max_iter)."""
    spec = RECIPES[recipe][method]
    folders = job_folders(method, seeds, out_dir)
    if resume and any(f.exists() for f in folders):
        missing = [str(f) for f in folders if not (f / "checkpoints" / "last.pt").is_file()]
        if missing:
            raise UsageError(f"--resume: {method} has run folders without a checkpoint ({', '.join(missing)}); "
                             "move them away or resume those seeds by hand")
        from utils.run_io import load_checkpoint
        if min(load_checkpoint(f)[1]["iteration"] for f in folders) >= max_iter:
            return None
        return [sys.executable, str(ROOT / spec.script), "--load", *map(str, folders), "--max_iter", str(max_iter),
                "--no_progress", *extra]
    # the grid's folders are <method>_seed<N>; a one-seed run's folder is its --name (run_io.run_folder_name)
    name = method if len(folders) > 1 else folders[0].name
    return [sys.executable, str(ROOT / spec.script), *spec.flags, "--seeds", seeds, "--max_iter", str(max_iter),
            "--out_dir", str(out_dir), "--name", name, "--recipe", recipe, "--no_progress", *extra]


def job_folders(method: str, seeds: str, out_dir: Path) -> list[Path]:
    """The run folders of one job: <method>_seed<N> for each seed."""
    return [out_dir / f"{method}_seed{seed}" for seed in parse_seeds(seeds)]


def reached(folders: list[Path], max_iter: int) -> bool:
    """Whether every folder has reached ``max_iter`` (``reached_iteration``: a run that finished before it was
    killed)."""
    from utils.run_io import reached_iteration
    return all(f.is_dir() and reached_iteration(f) >= max_iter for f in folders)


def job_state(code: int, finished: bool) -> str:
    """done, stopped (exit 130 / 143 after saving, or killed by a signal: a negative code) or FAILED; a job killed
    by a signal after its runs reached --max_iter is done."""
    if code == 0 or (code < 0 and finished):
        return "done"
    return "stopped" if code in (130, 143) or code < 0 else "FAILED"


def seed_jobs(method: str, spec: str, per_job: int) -> list[tuple[str, str]]:
    """(job name, --seeds value) of each process of one method: all seeds of ``spec`` in one (per_job 0, the job
    is named after the method) or per_job seeds each (named ``<method>_seed<first>`` or ``<method>_seeds<a>-<b>``)."""
    seeds = parse_seeds(spec)
    if per_job <= 0 or per_job >= len(seeds):
        return [(method, spec)]
    chunks = [seeds[i:i + per_job] for i in range(0, len(seeds), per_job)]
    return [(f"{method}_seed{c[0]}" if len(c) == 1 else f"{method}_seeds{c[0]}-{c[-1]}", ",".join(map(str, c)))
            for c in chunks]


def comma_items(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated list: "2, 3," -> ["2", "3"]."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_gpus(spec: str | None, inherited: str | None = None) -> list[str]:
    """The CUDA_VISIBLE_DEVICES value of each job slot. --gpus: None = every visible GPU; "" = none (the CPU); else
    comma-separated indices counted among the GPUs this process sees: under an inherited CUDA_VISIBLE_DEVICES
    (``inherited``, e.g. "2,3") index 0 is that list's first entry ("2"), as torch counts them, so a job never lands
    on a GPU outside those the user gave."""
    if spec is None:
        indices = visible_gpus()
    else:
        indices = comma_items(spec)
        if not all(g.isdigit() for g in indices):
            raise UsageError(f"--gpus {spec!r}: expected comma-separated GPU indices like 0,1 (or '' for the CPU)")
    if inherited is None:
        return indices
    visible = comma_items(inherited)
    outside = [g for g in indices if int(g) >= len(visible)]
    if outside:
        raise UsageError(f"--gpus {spec!r}: index {outside[0]} is outside the {len(visible)} GPU(s) of "
                         f"CUDA_VISIBLE_DEVICES={inherited!r}; count --gpus from 0 within that list")
    return [visible[int(g)] for g in indices]


def missing_inputs(grid: dict, methods: list[str]) -> dict[str, str]:
    """The files the ``methods`` of ``grid`` read (RecipeMethod.needs) that do not exist here: path -> the command
    that makes it."""
    return {path: command for m in methods for path, command in grid[m].needs if not Path(path).is_file()}


def print_recipes(recipes: list[str]) -> None:
    for recipe in recipes:
        print(f"recipe {recipe}: {RECIPE_SUMMARIES[recipe]}")
        for i, (key, m) in enumerate(RECIPES[recipe].items()):
            print(f"  {i}  {key:24s} {m.label:40s} {m.script} {' '.join(m.flags)}")


def visible_gpus() -> list[str]:
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def run_jobs(jobs: list[tuple[str, list[str]]], gpus: list[str], log_dir: Path,
             finished=lambda job: False) -> dict[str, tuple[str, int]]:
    """Run jobs, at most one per GPU at a time (or one at a time on the CPU), each appending to its log. SIGINT or
    SIGTERM is passed on to the running jobs (which save and exit) and no further job starts. Returns each job's
    state (``job_state``; ``finished(job)`` says whether its runs reached --max_iter) and exit code."""
    todo: queue.Queue = queue.Queue()
    for job in jobs:
        todo.put(job)
    codes: dict[str, tuple[str, int]] = {}
    running: dict[str, subprocess.Popen] = {}
    stopping = threading.Event()

    def forward(signum: int, frame) -> None:
        stopping.set()
        for proc in list(running.values()):
            proc.send_signal(signum)

    def worker(gpu: str | None) -> None:
        while not stopping.is_set():
            try:
                method, cmd = todo.get_nowait()
            except queue.Empty:
                return
            env = dict(os.environ)
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            start = time.time()
            print(f"start {method}{f' on GPU {gpu}' if gpu is not None else ''}: log {log_dir / (method + '.log')}",
                  flush=True)
            with open(log_dir / f"{method}.log", "a") as log:
                log.write(shlex.join(cmd) + "\n")
                log.flush()
                running[method] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
                if stopping.is_set():  # a signal came while it started
                    running[method].send_signal(signal.SIGTERM)
                code = running[method].wait()
                del running[method]
            codes[method] = job_state(code, code < 0 and finished(method)), code
            how = f"killed by signal {-code}" if code < 0 else f"exit {code}"
            print(f"{codes[method][0]} {method} ({how}, {(time.time() - start) / 60:.1f} min)", flush=True)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        threads = [threading.Thread(target=worker, args=(gpu,)) for gpu in (gpus or [None])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return codes


def submit_to_slurm(a: argparse.Namespace, recipe: str, blocks: list[tuple[str, str, str]], out_dir: Path,
                    extra: list[str], options: SlurmOptions) -> int:
    """The grid as one SLURM job array (utils/slurm.py): one task per (job, method, seeds) block, logs in
    out_dir/logs/. Prints the array's id and how to follow it; with --wait blocks until it ends."""
    tasks = [GridTask(recipe, m, job_seeds, a.max_iter, str(out_dir.resolve()), extra) for _, m, job_seeds in blocks]
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    jobs = slurm_submit(tasks, log_dir.resolve(), options, f"vardiu-{recipe}")
    array = jobs[0].job_id.split("_")[0]
    print(f"submitted SLURM array {array}: {len(jobs)} tasks ({', '.join(job for job, _, _ in blocks)}); follow "
          f"with: squeue -j {array}; logs in {log_dir}/", flush=True)
    if not a.wait:
        return 0
    try:
        return slurm_wait(jobs, tasks)
    except interrupt.Interrupted as stop:
        print(f"{stop.name}: stopped waiting; the array runs on (squeue -j {array}, scancel {array})", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None


@exit_on_usage_error
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipe", default=None, choices=list(RECIPES),
                   help="which experiment: paper, matched or published (default: paper; --list shows all)")
    p.add_argument("--methods", default=None, help="comma-separated methods of the recipe (default: all; see --list)")
    p.add_argument("--method_index", type=int, default=None,
                   help="run only the method at this index of --methods (a SLURM array task id)")
    p.add_argument("--seeds", default="0-9", help="seeds, trained vectorised in one process per method")
    p.add_argument("--seeds_per_job", type=int, default=0,
                   help="seeds per process (0: all of a method's seeds in one vectorised process; 1: one process per "
                        "seed, e.g. to finish each seed's run inside one time-limited command on a several-GPU machine)")
    p.add_argument("--max_iter", type=int, default=1_000_000, help="training iterations of every run")
    p.add_argument("--out_dir", default="runs/grid", help="folder for the run folders and logs")
    p.add_argument("--gpus", default=None,
                   help="comma-separated GPU indices to use, counted within an inherited CUDA_VISIBLE_DEVICES "
                        "(default: all visible; '' runs on the CPU)")
    p.add_argument("--resume", action="store_true",
                   help="continue methods whose run folders exist (--load their checkpoints/last.pt up to --max_iter); "
                        "start the others")
    p.add_argument("--launcher", default="local", choices=["local", "slurm"],
                   help="local: run the jobs on this machine's GPUs; slurm: submit them as one SLURM job array "
                        "through submitit (README, 'Running on a cluster')")
    g = p.add_argument_group("SLURM (--launcher slurm)")
    g.add_argument("--slurm_partition", default=None, help="partition (default: the cluster's default)")
    g.add_argument("--slurm_gpus_per_task", type=int, default=1, help="GPUs per array task (0: CPU only)")
    g.add_argument("--slurm_cpus_per_task", type=int, default=4, help="CPU cores per array task")
    g.add_argument("--slurm_time", type=int, default=24 * 60, metavar="MINUTES",
                   help="time limit per task; the task saves and requeues itself before it")
    g.add_argument("--slurm_signal_delay", type=int, default=300, metavar="SECONDS",
                   help="how long before the time limit SLURM signals the task to save and requeue")
    g.add_argument("--slurm_sbatch", action="append", default=[], metavar="OPTION",
                   help="an extra sbatch option, e.g. --slurm_sbatch=--account=myproj (repeatable)")
    g.add_argument("--wait", action="store_true", help="block until the array ends and report each task's state")
    p.add_argument("--dry_run", action="store_true", help="print the commands and run nothing")
    p.add_argument("--list", action="store_true", help="print the methods and their flags, then exit")
    a = p.parse_args(argv)
    if a.list:
        print_recipes([a.recipe] if a.recipe else list(RECIPES))
        return 0
    recipe = a.recipe or "paper"
    grid = RECIPES[recipe]
    methods = list(grid) if a.methods is None else comma_items(a.methods)
    if not methods:
        raise UsageError(f"--methods {a.methods!r} names no method; see --list")
    unknown = [m for m in methods if m not in grid]
    if unknown:
        raise UsageError(f"unknown method(s) {', '.join(unknown)} in recipe {recipe}; see --list")
    if a.method_index is not None:
        if not 0 <= a.method_index < len(methods):
            raise UsageError(f"--method_index {a.method_index} is outside 0..{len(methods) - 1}")
        methods = [methods[a.method_index]]
    parse_seeds(a.seeds)  # one clear error now rather than one per job
    if a.max_iter <= 0:
        raise UsageError(f"--max_iter must be a positive integer, got {a.max_iter}")
    if a.seeds_per_job < 0:
        raise UsageError(f"--seeds_per_job must be 0 (all seeds in one process) or positive, got {a.seeds_per_job}")
    slurm_options = SlurmOptions(a.slurm_partition, a.slurm_gpus_per_task, a.slurm_time, a.slurm_cpus_per_task,
                                 a.slurm_signal_delay, tuple(a.slurm_sbatch))
    if a.launcher == "slurm":
        slurm_options.check()
        if not a.dry_run:
            require_submitit()
    gpus = parse_gpus(a.gpus, os.environ.get("CUDA_VISIBLE_DEVICES")) if a.launcher == "local" else []
    validate_output_folder(a.out_dir)
    out_dir = Path(a.out_dir) / recipe
    blocks = [(job, m, job_seeds) for m in methods for job, job_seeds in seed_jobs(m, a.seeds, a.seeds_per_job)]
    folders = {job: job_folders(m, job_seeds, out_dir) for job, m, job_seeds in blocks}
    existing = [str(f) for paths in folders.values() for f in paths if f.exists()]
    if existing and not a.resume:
        raise UsageError(f"{out_dir} already holds run folders of this grid ({', '.join(existing[:3])}"
                         f"{', ...' if len(existing) > 3 else ''}); continue them with: "
                         f"{shlex.join(['python', 'run_grid.py', *argv, '--resume', *(['--', *extra] if extra else [])])}"
                         " (or pass another --out_dir)")
    commands = {job: job_command(recipe, m, job_seeds, a.max_iter, out_dir, extra, a.resume)
                for job, m, job_seeds in blocks}
    for job in [j for j, cmd in commands.items() if cmd is None]:
        print(f"{job}: already at --max_iter {a.max_iter}; nothing to do")
    jobs = [(m, cmd) for m, cmd in commands.items() if cmd is not None]
    missing = missing_inputs(grid, [m for job, m, _ in blocks if commands[job] is not None])  # only jobs that run
    if missing and not a.dry_run:
        raise UsageError(f"{', '.join(missing)}: missing; make {'it' if len(missing) == 1 else 'them'} first with: "
                         + " && ".join(missing.values()))
    if a.dry_run:
        print(f"# recipe {recipe}: {RECIPE_SUMMARIES[recipe]}")
        for path, command in missing.items():
            print(f"# first ({path} is missing): {command}")
        for i, (method, cmd) in enumerate(jobs):
            gpu = f"CUDA_VISIBLE_DEVICES={gpus[i % len(gpus)]} " if gpus else ""
            print(f"{gpu}{shlex.join(cmd)}")
        return 0
    if a.launcher == "slurm":
        return submit_to_slurm(a, recipe, blocks, out_dir, extra, slurm_options)
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    codes = run_jobs(jobs, gpus, log_dir, lambda job: reached(folders[job], a.max_iter))
    stopped = sorted(m for m, (state, _) in codes.items() if state == "stopped")
    if stopped:
        print(f"stopped by a signal: {', '.join(stopped)}; continue with the same command and --resume",
              file=sys.stderr)
        return max([codes[m][1] for m in stopped if codes[m][1] > 0], default=143)  # 130 / 143 as the jobs said
    failed = sorted(m for m, (state, _) in codes.items() if state == "FAILED")
    if failed:
        print(f"{len(failed)} of {len(jobs)} jobs failed: {', '.join(failed)} (see {log_dir})", file=sys.stderr)
        return 1
    print(f"all {len(jobs)} jobs done; figures: python plot_results.py {out_dir} --out docs/figures/{recipe}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
