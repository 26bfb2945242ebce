"""The one training loop shared by every entry script.

An entry script parses its flags (``parse_flags``) and hands ``run_training`` a ``build(flags, device, target)``
that makes, for one seed, a ``Method``:

    networks        the networks to train, by name, with their learning rates
    updates         the updates of one iteration, in order. Each is a loss callable
                    ``loss_fn(nets, power) -> {name: scalar}`` (``losses/``), the networks it trains and how often
                    it repeats; the first scalar is backpropagated, every scalar is logged (metrics.csv columns)
    power_schedule  iteration -> the sigma-sampler power p, passed to every loss as a device tensor
    eval_network    the network evaluation samples from, and ``sample(module, n, rng)`` saying how

The loop owns everything else: seeds (one, or K vectorised through ``utils.seeds.Networks``), one Adam per trained
network, per-network gradient clipping, the EMA of the evaluated network, the CUDA-graph fast path
(``utils.fast``), evaluation every --show_iter iterations, metrics, plots (in a worker process), checkpoints,
the progress bar, non-finite detection and time limits. Nothing inside an iteration synchronises with the host.
"""
from __future__ import annotations

import argparse
import copy
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from utils.cli import UsageError, device_name, resolve_device, validate_training_args
from utils.fast import make_adam, make_iteration_runner
from utils.metrics import SampleEvaluator
from utils.plotting import PlotWorker, plot_metrics
from utils.run_io import (ExternalLoggers, MetricsLog, load_checkpoint, run_folder_name, save_checkpoint,
                          unique_run_dir, write_json)
from utils.seeds import Networks, load_optimizer_state_for_seed, optimizer_state_for_seed, parse_seeds
from utils.targets import GaussianMixture, make_target

LossFn = Callable[[dict[str, nn.Module], torch.Tensor], dict[str, torch.Tensor]]
SampleFn = Callable[[nn.Module, int, torch.Generator], torch.Tensor]

# Flags that may differ when a run is resumed with --load; every other flag comes from the checkpoint.
RESUME_OVERRIDABLE = {"max_iter", "device", "show_iter", "plot_every", "save_every", "eval_samples", "load",
                      "time_limit", "tensorboard", "wandb", "wandb_project", "no_progress", "mode",
                      "checkpoint_minutes"}
PER_SEED_CONFIG = {"seed", "run_dir", "name", "load", "vectorised_seeds", "segments"}
# What config.json keeps of each earlier command of a resumed run (its "segments"): what a resume may change.
SEGMENT_KEYS = sorted(RESUME_OVERRIDABLE | {"vectorised_seeds", "device_resolved", "device_name", "torch_version"})
REFERENCE_SET_SEED = 12345  # seed of the fixed target sample set that MMD is measured against


# ----------------------------------------------------------------------------------------------------------------
# What an entry script builds


def sample_from_module(module: nn.Module, n: int, rng: torch.Generator) -> torch.Tensor:
    """Evaluation samples of a generator: ``module.sample(n, generator=rng)`` [n, d]."""
    return module.sample(n, generator=rng)


@dataclass
class Update:
    """One optimiser update of ``networks`` per call of ``loss_fn`` (``repeats`` calls per iteration)."""

    loss_fn: LossFn
    networks: tuple[str, ...]
    repeats: int = 1


@dataclass
class Method:
    """A training method for one seed: networks and learning rates, the updates of one iteration, the sigma-sampler
    power schedule, and how evaluation draws samples from ``networks[eval_network]``."""

    networks: dict[str, nn.Module]
    learning_rates: dict[str, float]
    updates: list[Update]
    power_schedule: Callable[[int], float]
    eval_network: str = "generator"
    sample: SampleFn = sample_from_module
    notes: tuple[str, ...] = ()  # one-line notes on the chosen settings, printed once after the run-folder line


# ----------------------------------------------------------------------------------------------------------------
# The trained state and one training iteration


class Trainer:
    """The networks of every seed, one Adam per trained network, the EMA of the evaluated network and the per-seed
    running sums [K] of the logged scalars. ``iteration()`` is one training iteration at the power held in the
    device tensor ``power``; it never synchronises with the host, so it can be captured as one CUDA graph."""

    def __init__(self, methods: list[Method], device: torch.device, grad_clip: float, ema_decay: float):
        method = methods[0]  # every seed's method is built alike; only the networks' initial weights differ
        self.method, self.device, self.grad_clip, self.ema_decay = method, device, grad_clip, ema_decay
        self.nets = Networks.stack([m.networks for m in methods])
        self.optimizers = {name: make_adam(self.nets.parameters(name), lr, device)
                           for name, lr in method.learning_rates.items()}
        self.eval_params = self.nets.parameters(method.eval_network)
        self.ema = [p.detach().clone() for p in self.eval_params] if ema_decay > 0 else None
        self.power = torch.zeros((), device=device)
        self.sums: dict[str, torch.Tensor] = {}  # logged scalar -> per-seed sum [K] since the last evaluation

    def iteration(self) -> None:
        for update in self.method.updates:
            for _ in range(update.repeats):
                out = self.nets.call(update.loss_fn, self.power)
                loss = next(iter(out.values()))
                for name in update.networks:
                    self.optimizers[name].zero_grad(set_to_none=True)
                (loss if loss.dim() == 0 else loss.sum()).backward()  # seeds are independent: sum their losses
                for name in update.networks:
                    if self.grad_clip > 0:
                        self.nets.clip_grad_norm_(name, self.grad_clip)
                    self.optimizers[name].step()
            for key, value in out.items():  # the last repeat's scalars
                value = value.detach().reshape(-1)
                if key in self.sums:
                    self.sums[key].add_(value)
                else:
                    self.sums[key] = value.clone()
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, self.eval_params, 1.0 - self.ema_decay)

    def eval_module(self, index: int) -> nn.Module:
        """Seed ``index``'s evaluated network with the weights evaluation uses (the EMA when it is on)."""
        return self.nets.module_for_seed(self.method.eval_network, index, self.ema)

    def seed_state(self, index: int) -> dict:
        """Seed ``index``'s networks, optimiser states and EMA, in the single-seed checkpoint format."""
        nets, k = self.nets, self.nets.num_seeds
        return {"modules": {name: nets.state_dict(name, index) for name in nets.modules},
                "optimizers": {name: optimizer_state_for_seed(opt, k, index) for name, opt in self.optimizers.items()},
                "ema": None if self.ema is None else copy.deepcopy(self.eval_module(index).state_dict())}

    def load_seed_state(self, index: int, state: dict) -> None:
        """Load a checkpoint's ``seed_state`` into seed ``index``."""
        for name in self.nets.modules:
            self.nets.load_state_dict(name, state["modules"][name], index)
        for name, opt in self.optimizers.items():
            load_optimizer_state_for_seed(opt, state["optimizers"][name], self.nets.num_seeds, index)
        if self.ema is not None:
            module = copy.deepcopy(self.nets.modules[self.method.eval_network])
            prefix = f"{self.method.eval_network}."  # older teacher checkpoints stored the sampler's state dict
            module.load_state_dict({k.removeprefix(prefix): v for k, v in state["ema"].items()})
            with torch.no_grad():
                for e, t in zip(self.ema, module.parameters()):
                    (e[index] if self.nets.num_seeds > 1 else e).copy_(t)


# ----------------------------------------------------------------------------------------------------------------
# Flags, resumption and run folders


_UNSET = object()


def typed_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """Names of the flags the user actually typed: parse again with every default replaced by a sentinel."""
    quiet = copy.deepcopy(parser)
    quiet.set_defaults(**{name: _UNSET for name in vars(parser.parse_args(argv))})
    return {name for name, value in vars(quiet.parse_args(argv)).items() if value is not _UNSET}


def resume_flags(flags: argparse.Namespace, typed: set[str], config: dict, script: str) -> argparse.Namespace:
    """The flags of a resumed run: the checkpoint's config, with only RESUME_OVERRIDABLE flags replaced."""
    if config.get("script") != script:
        raise UsageError(f"--load: that checkpoint was written by {config.get('script')}, not {script}; "
                         f"resume it with {config.get('script')}")
    for name in sorted(typed - RESUME_OVERRIDABLE):
        if name in config and config[name] != getattr(flags, name):
            raise UsageError(f"--{name} cannot change when resuming (the run has {config[name]!r}); "
                             "start a new run instead")
    merged = dict(vars(flags))  # flags newer than the checkpoint keep their defaults
    merged.update({k: v for k, v in config.items() if k in merged})
    merged.update({k: getattr(flags, k) for k in (typed & RESUME_OVERRIDABLE) | {"load"}})
    return argparse.Namespace(**merged)


def resumed_seeds(checkpoints: list[tuple[Path, dict]]) -> list[int]:
    """Seeds of the checkpoints given to --load; several must be seeds of one run stopped at one iteration. Seeds
    that were resumed apart (other --max_iter, --time_limit, device, ...) may be resumed together again: only the
    flags a resume cannot change must agree."""
    def training_flags(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in PER_SEED_CONFIG and k not in SEGMENT_KEYS}
    first_path, first = checkpoints[0]
    shared = training_flags(first["config"])
    for path, ckpt in checkpoints[1:]:
        if training_flags(ckpt["config"]) != shared:
            raise UsageError(f"--load: {path} and {first_path} are not seeds of one run (their flags differ); "
                             "resume them separately")
        if ckpt["iteration"] != first["iteration"]:
            raise UsageError(f"--load: {path} is at iteration {ckpt['iteration']}, {first_path} at "
                             f"{first['iteration']}; seeds resumed together must be at the same iteration")
    seeds = [ckpt["config"]["seed"] for _, ckpt in checkpoints]
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--load: two of these checkpoints are of the same seed ({seeds})")
    return seeds


@dataclass
class Flags:
    """Parsed, validated flags: ``values`` (the script's flags), the seeds to train, and for a resumed run its
    checkpoints, one per seed (path, state)."""

    values: argparse.Namespace
    seeds: list[int]
    checkpoints: list[tuple[Path, dict]] = field(default_factory=list)


def parse_flags(parser: argparse.ArgumentParser, argv: list[str] | None, script: str) -> Flags:
    """Parse and validate a training script's flags; with --load, take the training flags from the checkpoints."""
    values = parser.parse_args(argv)
    checkpoints: list[tuple[Path, dict]] = []
    if values.load:
        checkpoints = [load_checkpoint(spec) for spec in values.load]
        values = resume_flags(values, typed_flags(parser, argv), checkpoints[0][1]["config"], script)
        seeds = resumed_seeds(checkpoints)
    else:
        seeds = parse_seeds(values.seeds) if getattr(values, "seeds", None) is not None else [values.seed]
    validate_training_args(values)
    if len(seeds) > 1 and not getattr(values, "true_score", True) and values.teacher == "kde":
        raise UsageError("--seeds with --teacher kde: the KDE teacher's sample set depends on the seed, so its "
                         "seeds cannot share one score; train them one --seed at a time")
    return Flags(values, seeds, checkpoints)


def default_run_name(prefix: str, flags: argparse.Namespace, seed: int) -> str:
    """prefix_target[_score][_weight]_seedN, e.g. vardiu_gaussian_mog40_true_score_sigma2_seed0."""
    parts = [prefix, flags.target]
    if hasattr(flags, "true_score"):
        parts.append("true_score" if flags.true_score else f"{flags.teacher}_teacher")
    if hasattr(flags, "weight"):
        parts.append(flags.weight)
    return "_".join(parts + [f"seed{seed}"])


@dataclass
class SeedRun:
    """One seed's run folder and its logs (a vectorised run has one per seed)."""

    index: int
    seed: int
    run_dir: Path
    config: dict
    log: MetricsLog
    loggers: ExternalLoggers
    # This seed's wall and training time minus the shared clock's: nonzero only for seeds resumed together after
    # being resumed apart, so that each goes on counting its own.
    wall_offset: float = 0.0
    train_offset: float = 0.0

    def times(self, clock: Clock) -> dict:
        """This seed's ``wall_time`` and ``train_time`` (seconds) on the shared clock."""
        return {"wall_time": clock.wall_time() + self.wall_offset, "train_time": clock.train_time + self.train_offset}


def earlier_segments(checkpoint: dict) -> list[dict]:
    """The earlier commands of a resumed run, oldest first, for its config.json: the checkpoint's own list plus the
    command that wrote the checkpoint (its SEGMENT_KEYS values and ``until_iteration``, the checkpoint's iteration,
    where this command takes over). So a run that went over several commands records each one's device, --mode
    and --time_limit, not only the last one's."""
    config = checkpoint["config"]
    last = {key: config.get(key) for key in SEGMENT_KEYS} | {"until_iteration": checkpoint["iteration"]}
    return config.get("segments", []) + [last]


def open_run_folders(flags: Flags, script: str, run_prefix: str, device: torch.device) -> list[SeedRun]:
    """One run folder per seed: a resumed run's own folders, or new ones (never reusing a folder); each gets
    config.json (every flag, the resolved device and its model, the torch version, and for a resumed run its earlier
    commands) and its metrics log."""
    values, seeds = flags.values, flags.seeds
    runs = []
    for i, seed in enumerate(seeds):
        wall_offset = train_offset = 0.0
        if flags.checkpoints:
            path, state = flags.checkpoints[i]
            run_dir, history, segments = path.parent.parent, state["history"], earlier_segments(state)
            first = flags.checkpoints[0][1]  # restore() starts the shared clock at the first seed's times
            wall_offset = state["wall_time"] - first["wall_time"]
            train_offset = state["train_time"] - first["train_time"]
        else:
            name = run_folder_name(values.name, seed, len(seeds)) if values.name else \
                default_run_name(run_prefix, values, seed)
            run_dir, history, segments = unique_run_dir(values.out_dir, name), [], []
        for sub in ("plots", "checkpoints"):
            (run_dir / sub).mkdir(exist_ok=True)
        config = dict(vars(values), seed=seed, seeds=None, vectorised_seeds=seeds if len(seeds) > 1 else None,
                      script=script, run_dir=str(run_dir), device_resolved=str(device),
                      device_name=device_name(device), torch_version=str(torch.__version__), segments=segments)
        write_json(run_dir / "config.json", config)
        runs.append(SeedRun(i, seed, run_dir, config, MetricsLog(run_dir, history),
                            ExternalLoggers(run_dir, config, values.tensorboard, values.wandb, values.wandb_project),
                            wall_offset, train_offset))
    return runs


def build_trainer(build: Callable[[argparse.Namespace, torch.device, GaussianMixture], Method],
                  values: argparse.Namespace, seeds: list[int], device: torch.device,
                  target: GaussianMixture) -> Trainer:
    """``build`` once per seed, each under torch.manual_seed(seed), so that every seed's networks start exactly as
    in a single-seed run of that seed; then one Trainer over all of them."""
    methods = []
    for seed in seeds:
        torch.manual_seed(seed)
        np.random.seed(seed)
        methods.append(build(values, device, target))
    return Trainer(methods, device, values.grad_clip, values.ema_decay)


@dataclass
class Clock:
    """Where a run stands: the next iteration, the iterations since the last evaluation, wall time and training
    time so far (carried over a resume), and when and at which iteration the last checkpoint was written."""

    iteration: int = 0
    steps: int = 0
    wall_offset: float = 0.0
    train_time: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    checkpoint_iteration: int = 0
    checkpoint_time: float = field(default_factory=time.perf_counter)

    def wall_time(self) -> float:
        return self.wall_offset + time.perf_counter() - self.started


def restore(trainer: Trainer, checkpoints: list[tuple[Path, dict]], max_iter: int) -> Clock:
    """Load every seed's checkpoint into the trainer and the random state of the first; the clock they stopped at."""
    try:
        for i, (_, state) in enumerate(checkpoints):
            trainer.load_seed_state(i, state)
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise UsageError(f"--load {' '.join(str(p) for p, _ in checkpoints)}: the checkpoint does not fit these "
                         f"networks ({str(err).splitlines()[0]})") from None
    first = checkpoints[0][1]
    set_rng_state(first["rng"], trainer.device)
    if first["iteration"] >= max_iter:
        raise UsageError(f"--load: the run is already at iteration {first['iteration']}; pass --max_iter above "
                         f"{first['iteration']} to continue it")
    interval = first.get("interval")  # a checkpoint written between evaluations (on a signal)
    if interval:
        trainer.sums = {key: torch.stack([state["interval"]["sums"][key] for _, state in checkpoints]).to(
            trainer.device).reshape(-1) for key in interval["sums"]}
    return Clock(iteration=first["iteration"], steps=interval["steps"] if interval else 0,
                 wall_offset=first["wall_time"], train_time=first["train_time"], checkpoint_iteration=first["iteration"])


MODE_NAMES = {"fast": "fast: compiled CUDA graph, TF32 hidden products", "exact": "exact: CUDA graph, float32",
              "eager": "eager, float32"}


def set_precision(mode: str) -> None:
    """TF32 matrix products in the fast mode only. Every product of coordinates is computed without a matrix
    product (models.networks.exact_linear, the mixture score), so TF32 reaches only the hidden layers."""
    torch.set_float32_matmul_precision("high" if mode == "fast" else "highest")


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.random.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.random.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def save_run_checkpoints(trainer: Trainer, runs: list[SeedRun], clock: Clock, iteration: int,
                         save_every: int, between_evaluations: bool = False) -> None:
    """checkpoints/last.pt of every seed (and iter_XXXXXXX.pt at multiples of ``save_every``). Written
    ``between_evaluations`` (on a signal), it also holds the running sums of the logged scalars and the number of
    iterations since the last evaluation, so that a resumed run logs what the uninterrupted one would."""
    for run in runs:
        state = {"iteration": iteration, "config": run.config, "history": run.log.history,
                 "rng": rng_state(trainer.device), **trainer.seed_state(run.index), **run.times(clock)}
        if between_evaluations:
            state["interval"] = {"steps": clock.steps,
                                 "sums": {k: v[run.index].detach().cpu().clone() for k, v in trainer.sums.items()}}
        save_checkpoint(run.run_dir / "checkpoints" / "last.pt", state)
        if save_every and iteration % save_every == 0 and iteration > 0:
            save_checkpoint(run.run_dir / "checkpoints" / f"iter_{iteration:07d}.pt", state)
    clock.checkpoint_iteration, clock.checkpoint_time = iteration, time.perf_counter()


# ----------------------------------------------------------------------------------------------------------------
# The loop


def run_training(build: Callable[[argparse.Namespace, torch.device, GaussianMixture], Method], flags: Flags,
                 script: str, run_prefix: str) -> list[Path]:
    """Train, evaluate, log and checkpoint until --max_iter (or --time_limit). Returns the run folders (one per
    seed). ``script`` names the entry script (recorded, checked on resume); ``run_prefix`` starts default
    run-folder names."""
    f = flags.values

    # Build the networks, optimisers and run folders; restore a resumed run.
    device = resolve_device(f.device)
    mode = f.mode if device.type == "cuda" else "eager"
    set_precision(mode)
    target = make_target(f.target).to(device)
    trainer = build_trainer(build, f, flags.seeds, device, target)
    trainer.nets.compile = mode == "fast"
    clock = restore(trainer, flags.checkpoints, f.max_iter) if flags.checkpoints else Clock()
    runs = open_run_folders(flags, script, run_prefix, device)
    schedule = trainer.method.power_schedule
    evaluator = SampleEvaluator(target, f.eval_samples, seed=REFERENCE_SET_SEED)
    plotter = PlotWorker()
    run_iteration = make_iteration_runner(trainer.iteration, device, mode != "eager")
    where = runs[0].run_dir if len(runs) == 1 else f"{len(runs)} folders, {runs[0].run_dir} ..."
    print(f"run folder: {where}  (device {device}, {MODE_NAMES[mode]}"
          f"{f', {len(runs)} vectorised seeds' if len(runs) > 1 else ''})", file=sys.stderr)
    for note in trainer.method.notes:
        print(note, file=sys.stderr)
    bar = tqdm(total=f.max_iter, initial=clock.iteration, disable=f.no_progress, dynamic_ncols=True,
               mininterval=1.0, desc=runs[0].run_dir.name, file=sys.stderr)

    def evaluate_and_log(it: int, steps: int, final: bool) -> None:
        """Evaluate every seed, log its row, checkpoint when due; a non-finite seed stops the run (exit 1)."""
        means = {k: (v / max(steps, 1)).tolist() for k, v in trainer.sums.items()}  # one host sync per evaluation
        evaluated = [evaluate(trainer, run, it, evaluator, f.eval_samples) for run in runs]
        rows = [{"iteration": it, **{k: round(v, 3) for k, v in run.times(clock).items()},
                 **metrics, **{k: v[run.index] for k, v in means.items()}, "power": round(schedule(max(it - 1, 0)), 6)}
                for run, (metrics, _) in zip(runs, evaluated)]
        bad = [run for run, row, (_, samples) in zip(runs, rows, evaluated)
               if samples is None or not all(math.isfinite(row[k]) for k in means)]
        if bad:
            bar.close()
            report_non_finite(bad, rows, clock, it, several=len(runs) > 1)
            raise SystemExit(1)
        for run, row, (_, samples) in zip(runs, rows, evaluated):
            run.log.append(row)
            run.loggers.log(row)
            np.save(run.run_dir / "samples.npy", samples)
            if final or (f.plot_every and it % (f.plot_every * f.show_iter) == 0):
                plotter.plot_samples(samples, target, run.run_dir / "plots" / f"samples_{it:07d}.png",
                                     title=f"{run.run_dir.name}\niter {it}  logpd {row['logpd']:.3f}  "
                                           f"logMMD {row['log_mmd']:.2f}")
        due = time.perf_counter() - clock.checkpoint_time >= 60 * f.checkpoint_minutes
        if final or due or it == 0 or (f.save_every and it % f.save_every == 0):
            save_run_checkpoints(trainer, runs, clock, it, f.save_every)
        for v in trainer.sums.values():
            v.zero_()
        bar.update(it - bar.n)
        bar.set_postfix_str(progress_summary(rows), refresh=False)

    def close_train_interval() -> None:
        """Wait for the queued training steps, then add the time since t_train. The loop synchronises with the
        host only here: at an evaluation and at a stop signal."""
        synchronize(device)
        clock.train_time += time.perf_counter() - t_train

    stop = StopSignals()
    try:
        if not flags.checkpoints:
            evaluate_and_log(0, 0, final=False)
        t_train, power = time.perf_counter(), None
        for it in range(clock.iteration, f.max_iter):
            if stop.signal:  # SIGINT / SIGTERM: save this iteration's state, then exit
                close_train_interval()
                save_run_checkpoints(trainer, runs, clock, it, 0, between_evaluations=True)
                bar.close()
                print(f"{stop.name} received: stopped at iteration {it} and saved {runs[0].run_dir / 'checkpoints'}"
                      f"/last.pt{' (every seed)' if len(runs) > 1 else ''}; continue with --load "
                      f"{' '.join(str(r.run_dir) for r in runs)}", file=sys.stderr)
                raise SystemExit(128 + stop.signal)
            # One training iteration (the sigma-sampler power is read in place by the captured graph).
            if schedule(it) != power:
                power = schedule(it)
                trainer.power.fill_(power)
            run_iteration()
            clock.steps += 1
            done = it + 1
            if done % 100 == 0:
                bar.update(done - bar.n)
            if done % f.show_iter and done != f.max_iter:
                continue
            # Evaluate, log and checkpoint.
            close_train_interval()
            out_of_time = 0 < f.time_limit * 60 < clock.wall_time() - clock.wall_offset
            evaluate_and_log(done, clock.steps, final=done == f.max_iter or out_of_time)
            clock.steps = 0
            if out_of_time:
                print(f"time limit of {f.time_limit} min reached at iteration {done}; continue with "
                      f"--load {' '.join(str(r.run_dir) for r in runs)}", file=sys.stderr)
                break
            t_train = time.perf_counter()
    finally:
        stop.restore()
        bar.close()
        plotter.close(wait=not stop.signal)
        for run in runs:
            run.loggers.close()

    # Finish: metric plots and one line per seed.
    reference_logpd = float(target.log_prob(evaluator.reference).mean())
    for run in runs:
        plot_metrics(run.log.history, run.run_dir / "plots" / "metrics.png", reference_logpd=reference_logpd)
        last = run.log.history[-1]
        print(f"done: iteration {last['iteration']}  logpd {last['logpd']:.3f}  log MMD {last['log_mmd']:.2f}  "
              f"modes {last['modes']}/{target.num_modes}  -> {run.run_dir}", file=sys.stderr)
    return [run.run_dir for run in runs]


class StopSignals:
    """While a run trains, SIGINT (Ctrl-C) and SIGTERM (what schedulers send before killing a job) ask the loop to
    stop after the current iteration: ``signal`` holds the first one's number (0: none). A second signal exits at
    once. Outside the main thread (where Python cannot install handlers) signals keep their usual effect."""

    NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}

    def __init__(self):
        self.signal = 0
        self._previous = {}
        try:
            for signum in self.NAMES:
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread
            self._previous = {}

    @property
    def name(self) -> str:
        return self.NAMES.get(self.signal, str(self.signal))

    def _handle(self, signum: int, frame) -> None:
        if self.signal:
            print(f"\n{self.NAMES[signum]} received again: exiting at once (the last checkpoint stays)",
                  file=sys.stderr)
            raise SystemExit(128 + signum)
        self.signal = signum

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


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
