"""The one training loop shared by every entry script.

``run_training`` reads top to bottom: build every seed's networks and optimisers (``utils.step``), decide how the
iteration runs on the device (``prepare``), restore a resumed run (``utils.resume``), open the run folders
(``utils.run_io``), then loop: one iteration (``Trainer.iteration``, replayed as a CUDA graph on the fast path);
every --show_iter iterations evaluate, log and checkpoint (``Loop.evaluate``); stop at --max_iter, --time_limit,
a non-finite seed or a stop signal. The loop synchronises with the host only at evaluations and at a signal.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from utils.interrupt import StopSignals, deferred, stop_requested
from utils.metrics import SampleEvaluator
from utils.plotting import PlotWorker, plot_metrics
from utils.registry import make_target
from utils.resume import SEGMENT_KEYS, Clock, Flags, restore, rng_state
from utils.run_io import SeedRun, open_run_folders, release_run_folders, save_run_checkpoints, write_json
from utils.step import (MODE_NAMES, BuildFn, Trainer, build_trainer, prepare, resolve_device, run_mode,
                        synchronize)
from utils.targets import GaussianMixture

REFERENCE_SET_SEED = 12345  # seed of the fixed target sample set that MMD is measured against


def run_training(build: BuildFn, flags: Flags, script: str, run_prefix: str) -> list[Path]:
    """Train, evaluate, log and checkpoint until --max_iter (or --time_limit). Returns the run folders (one per
    seed). ``script`` names the entry script (recorded, checked on resume); ``run_prefix`` starts default
    run-folder names."""
    f = flags.values

    # Build the networks, optimisers and run folders; restore a resumed run.
    device = resolve_device(f.device)
    target = make_target(f.target, f.dim).to(device)
    trainer = build_trainer(build, f, flags.seeds, device, target)
    run_iteration = prepare(trainer, f.mode, f.thin_layer_grad, f.hidden_dtype)
    clock = restore(trainer, flags.checkpoints, f.max_iter) if flags.checkpoints else Clock()
    # From here on a stop signal saves every seed and exits (before, nothing is written: utils/interrupt.py); a
    # second one waits until every new run folder has its first checkpoint, so no folder is left without one.
    stop, loop, runs = StopSignals(), None, []
    try:
        with deferred():
            runs = open_run_folders(f, flags.seeds, flags.checkpoints, script, run_prefix, device, SEGMENT_KEYS)
            evaluator, plotter = SampleEvaluator(target, f.eval_samples, seed=REFERENCE_SET_SEED), PlotWorker()
            where = runs[0].run_dir if len(runs) == 1 else f"{len(runs)} folders, {runs[0].run_dir} ..."
            print(f"run folder: {where}  (device {device}, {MODE_NAMES[run_mode(f.mode, device)]}"
                  f"{f', {len(runs)} vectorised seeds' if len(runs) > 1 else ''})", file=sys.stderr)
            for note in trainer.method.notes:
                print(note, file=sys.stderr)
            loop = Loop(trainer, runs, clock, target, evaluator, plotter, f, progress_bar(f, clock, runs))
            if not flags.checkpoints:
                loop.evaluate(0, final=False)

        # Train: one iteration at a time; evaluate, log and checkpoint every --show_iter iterations.
        t_train, power = time.perf_counter(), None
        for it in range(clock.iteration, f.max_iter):
            if stop.signal:  # SIGINT / SIGTERM: save this iteration's state, then exit
                loop.close_train_interval(t_train)
                loop.save_and_exit(it, stop)
            if trainer.method.power_schedule(it) != power:  # the captured graph reads the power in place
                power = trainer.method.power_schedule(it)
                trainer.power.fill_(power)
            run_iteration()
            clock.steps += 1
            done = it + 1
            if done % 100 == 0:
                loop.bar.update(done - loop.bar.n)
            if done % f.show_iter and done != f.max_iter:
                continue
            loop.close_train_interval(t_train)
            out_of_time = 0 < f.time_limit * 60 < clock.elapsed()
            loop.evaluate(done, final=done == f.max_iter or out_of_time)
            if out_of_time:
                print(f"time limit of {f.time_limit} min reached at iteration {done}; continue with "
                      f"--load {' '.join(str(r.run_dir) for r in runs)}", file=sys.stderr)
                loop.record_end("time limit", done)
                break
            t_train = time.perf_counter()
    except BaseException:
        release_run_folders(runs)
        raise
    finally:
        stop.restore()
        if loop is not None:
            loop.close(wait_for_plots=not stop.signal)

    # Finish: metric plots and one line per seed.
    if runs[0].log.history[-1]["iteration"] >= f.max_iter:
        loop.record_end("reached max_iter", f.max_iter)
    loop.finish()
    release_run_folders(runs)
    return [run.run_dir for run in runs]


def progress_bar(f: argparse.Namespace, clock: Clock, runs: list[SeedRun]) -> tqdm:
    return tqdm(total=f.max_iter, initial=clock.iteration, disable=f.no_progress, dynamic_ncols=True,
                mininterval=1.0, desc=runs[0].run_dir.name, file=sys.stderr)


@dataclass
class Loop:
    """What one training command holds while it runs, and what it does at an evaluation, a stop and the end."""

    trainer: Trainer
    runs: list[SeedRun]
    clock: Clock
    target: GaussianMixture
    evaluator: SampleEvaluator
    plotter: PlotWorker
    flags: argparse.Namespace
    bar: tqdm

    def close_train_interval(self, t_train: float) -> None:
        """Wait for the queued training steps, then add the time since ``t_train`` to the training time."""
        synchronize(self.trainer.device)
        self.clock.train_time += time.perf_counter() - t_train

    def evaluate(self, it: int, final: bool) -> None:
        """Evaluate every seed at iteration ``it``, log its row, checkpoint when due; a non-finite seed stops the
        run (exit 1) and keeps the last good checkpoint."""
        trainer, clock, f = self.trainer, self.clock, self.flags
        steps = max(clock.steps, 1)
        means = {k: (v / steps).tolist() for k, v in trainer.sums.items()}  # one host sync per evaluation
        evaluated = [evaluate(trainer, run, it, self.evaluator, f.eval_samples) for run in self.runs]
        rows = [{"iteration": it, **{k: round(v, 3) for k, v in run.times(clock).items()}, **metrics,
                 **{k: v[run.index] for k, v in means.items()},
                 "power": round(trainer.method.power_schedule(max(it - 1, 0)), 6)}
                for run, (metrics, _) in zip(self.runs, evaluated)]
        bad = [run for run, row, (_, samples) in zip(self.runs, rows, evaluated)
               if samples is None or not all(math.isfinite(row[k]) for k in means)]
        if bad:
            self.bar.close()
            report_non_finite(bad, rows, clock, it, several=len(self.runs) > 1)
            last = self.runs[0].log.history[-1]["iteration"] if self.runs[0].log.history else 0
            self.record_end(f"non-finite between {last:,} and {it:,}", last)
            raise SystemExit(1)
        # the rows and the checkpoint are written as one: a second stop signal waits for both, and after a first
        # one the checkpoint is written now, so no folder's metrics run ahead of its last.pt
        with deferred():
            for run, row, (_, samples) in zip(self.runs, rows, evaluated):
                self.log(run, row, samples,
                         plot=final or bool(f.plot_every and it % (f.plot_every * f.show_iter) == 0))
            due = time.perf_counter() - clock.checkpoint_time >= 60 * f.checkpoint_minutes
            if final or due or it == 0 or (f.save_every and it % f.save_every == 0) or stop_requested():
                save_run_checkpoints(trainer, self.runs, clock, it, f.save_every, rng_state(trainer.device))
        for v in trainer.sums.values():
            v.zero_()
        clock.steps = 0
        self.bar.update(it - self.bar.n)
        self.bar.set_postfix_str(progress_summary(rows), refresh=False)

    def log(self, run: SeedRun, row: dict, samples: np.ndarray, plot: bool) -> None:
        """One seed's evaluation: its metrics row, its samples, and (``plot``) a sample plot in the worker."""
        run.log.append(row)
        run.loggers.log(row)
        np.save(run.run_dir / "samples.npy", samples)
        if plot:
            it = row["iteration"]
            self.plotter.plot_samples(samples, self.target, run.run_dir / "plots" / f"samples_{it:07d}.png",
                                      title=f"{run.run_dir.name}\niter {it}  logpd {row['logpd']:.3f}  "
                                            f"logMMD {row['log_mmd']:.2f}")

    def save_and_exit(self, it: int, stop: StopSignals) -> None:
        """On a stop signal: every seed's checkpoint at iteration ``it`` (with the running sums of the interval),
        one line with the command that continues, and exit 128 + the signal's number."""
        save_run_checkpoints(self.trainer, self.runs, self.clock, it, 0, rng_state(self.trainer.device),
                             between_evaluations=True)
        self.record_end(f"stopped by {stop.name}", it)
        self.bar.close()
        runs = self.runs
        print(f"{stop.name} received: stopped at iteration {it} and saved {runs[0].run_dir / 'checkpoints'}"
              f"/last.pt{' (every seed)' if len(runs) > 1 else ''}; continue with --load "
              f"{' '.join(str(r.run_dir) for r in runs)}", file=sys.stderr)
        raise SystemExit(128 + stop.signal)

    def record_end(self, reason: str, iteration: int) -> None:
        """Write why the command stopped into every seed's config.json ("end": reason and iteration), for
        results/INDEX.csv; a resumed run's config.json is written anew without it."""
        for run in self.runs:
            write_json(run.run_dir / "config.json", dict(run.config, end={"reason": reason, "iteration": iteration}))

    def close(self, wait_for_plots: bool) -> None:
        self.bar.close()
        self.plotter.close(wait=wait_for_plots)
        for run in self.runs:
            run.loggers.close()

    def finish(self) -> None:
        """Each seed's metric plot and one line with its last numbers."""
        reference_logpd = float(self.target.log_prob(self.evaluator.reference).mean())
        for run in self.runs:
            plot_metrics(run.log.history, run.run_dir / "plots" / "metrics.png", reference_logpd=reference_logpd)
            last = run.log.history[-1]
            print(f"done: iteration {last['iteration']}  logpd {last['logpd']:.3f}  log MMD {last['log_mmd']:.2f}  "
                  f"modes {last['modes']}/{self.target.num_modes}  -> {run.run_dir}", file=sys.stderr)


def evaluate(trainer: Trainer, run: SeedRun, it: int, evaluator: SampleEvaluator,
             num_samples: int) -> tuple[dict, np.ndarray | None]:
    """One seed's sample metrics at iteration ``it`` from fresh samples, drawn from their own seeded stream so that
    the training stream is untouched. Returns (metrics, the samples [N, d]; None when they are not finite)."""
    rng = torch.Generator(device=trainer.device).manual_seed(run.seed * 1_000_003 + it)
    with torch.no_grad():
        samples = trainer.method.sample(trainer.eval_module(run.index), num_samples, rng)
    if not bool(torch.isfinite(samples).all()):
        return {"logpd": math.nan, "mmd": math.nan, "log_mmd": math.nan, "modes": 0, "near_mode": 0.0}, None
    return evaluator(samples), samples.cpu().numpy()


def report_non_finite(bad: list[SeedRun], rows: list[dict], clock: Clock, it: int, several: bool) -> None:
    """One line per seed that went non-finite: where, and which checkpoint to resume from."""
    last = bad[0].log.history[-1]["iteration"] if bad[0].log.history else 0
    for run in bad:
        print(f"error: training{f' of seed {run.seed}' if several else ''} became non-finite between iterations "
              f"{last} and {it} (mean loss {rows[run.index].get('loss', math.nan)}); stopped. The last good "
              f"checkpoint is {run.run_dir / 'checkpoints' / 'last.pt'} (iteration {clock.checkpoint_iteration}); "
              "try a lower --lr or --grad_clip, or resume from it with --load", file=sys.stderr)


def progress_summary(rows: list[dict]) -> str:
    """The progress bar's postfix: the seeds' mean log density, log MMD, modes and loss (finite ones only)."""
    parts = []
    for key, label, fmt in [("logpd", "logpd", ".3f"), ("log_mmd", "logMMD", ".2f"), ("modes", "modes", "g"),
                            ("loss", "loss", ".3g")]:
        value = float(np.mean([r[key] for r in rows])) if key in rows[0] else math.nan
        if math.isfinite(value):
            parts.append(f"{label}={value:{fmt}}")
    return ", ".join(parts)
