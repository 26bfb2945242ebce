"""The one training loop shared by every entry script, and the update steps it drives (VarDiU, Diff-Instruct,
the teacher denoiser).

An entry script parses flags and passes ``run_training`` a ``build`` function that wires networks, score and
loss into a *step* (``TrainStep``): its networks as ``utils.seeds.Networks``, the network evaluation samples
from (``generator``), its optimisers, and ``__call__(power) -> dict[str, Tensor]``, one update returning detached
scalars (``loss``; ``bound`` or ``score_loss`` where the method has them). The loop owns everything else:
seeding, vectorised seeds (``--seeds``: one step over K stacked copies), run folders or resumption, the power
schedule, EMA, the CUDA-graph fast path (``utils.fast``), evaluation every ``--show_iter`` iterations, metrics,
plots (in a worker process), checkpoints, the progress bar and non-finite detection. Nothing inside an
iteration synchronises with the host.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from losses.diff_instruct import diff_instruct_generator_loss
from losses.edm import edm_denoiser_loss
from losses.vardiu import LogProbFn, ScoreFn, annealed_power, draw_noise, sample_sigma, vardiu_loss
from models.denoiser import EDMDenoiser, HeunSampler
from utils.cli import UsageError, resolve_device, validate_training_args
from utils.metrics import SampleEvaluator
from utils.fast import make_adam, make_iteration_runner
from utils.plotting import PlotWorker, plot_metrics
from utils.run_io import ExternalLoggers, MetricsLog, load_checkpoint, save_checkpoint, unique_run_dir, write_json
from utils.seeds import Networks, load_optimizer_state_for_seed, optimizer_state_for_seed, parse_seeds
from utils.targets import GaussianMixture, make_target

# Flags that may differ when a run is resumed with --load; every other flag comes from the checkpoint.
RESUME_OVERRIDABLE = {"max_iter", "device", "show_iter", "plot_every", "save_every", "eval_samples", "load",
                      "time_limit", "tensorboard", "wandb", "wandb_project", "no_progress", "no_compile", "compile",
                      "checkpoint_minutes"}
REFERENCE_SET_SEED = 12345  # seed of the fixed target sample set that MMD is measured against


class TrainStep(Protocol):
    nets: Networks          # the trained networks (one seed, or K stacked seeds)
    generator: nn.Module    # the single-seed network that evaluation samples from (has .sample(n, generator))
    eval_network: str       # the entry of ``nets`` whose parameters ``generator`` uses

    def make_optimizers(self) -> None: ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def __call__(self, power: torch.Tensor) -> dict[str, torch.Tensor]: ...


def update(nets: Networks, loss: torch.Tensor, pairs: list[tuple[str, torch.optim.Optimizer]], clip: float) -> None:
    """Backpropagate loss (summed over seeds), clip each network's gradient norm separately (per seed, no host
    sync), and step its optimiser."""
    for _, opt in pairs:
        opt.zero_grad(set_to_none=True)
    (loss if loss.dim() == 0 else loss.sum()).backward()
    for name, opt in pairs:
        if clip > 0:
            nets.clip_grad_norm_(name, clip)
        opt.step()


class VarDiUStep:
    """One VarDiU update: draw (z, eps, sigma), the surrogate loss of ``losses.vardiu``, one Adam step for the
    generator and one for the posterior (same backward pass; gradients clipped per network)."""

    eval_network = "generator"

    def __init__(self, generator: nn.Module, posterior: nn.Module, target_score: ScoreFn,
                 target_log_prob: Optional[LogProbFn], args: argparse.Namespace, device: torch.device,
                 control_variate: bool = False):
        self.nets = Networks(generator=generator, posterior=posterior)
        self.generator = generator
        self.target_score, self.target_log_prob = target_score, target_log_prob
        self.args, self.device = args, device
        self.control_variate = control_variate
        self.make_optimizers()

    def make_optimizers(self) -> None:
        self.opt_g = make_adam(self.nets.parameters("generator"), self.args.lr, self.device)
        self.opt_q = make_adam(self.nets.parameters("posterior"), self.args.posterior_lr or self.args.lr, self.device)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "posterior": self.opt_q}

    def losses(self, nets: dict[str, nn.Module], power: torch.Tensor) -> dict[str, torch.Tensor]:
        """One seed's surrogate loss (and the bound's value when log p_d is known)."""
        a = self.args
        noise = draw_noise(a.batch_size, nets["generator"].dim, a.sigma_min, a.sigma_max, power,
                           antithetic=not a.no_antithetic, device=self.device)
        out = vardiu_loss(nets["generator"], nets["posterior"], noise, self.target_score, a.weight, a.sigma_max,
                          self.target_log_prob, control_variate=self.control_variate,
                          reduction=a.weight_reduction)
        return {"loss": out.loss} if out.bound is None else {"loss": out.loss, "bound": out.bound}

    def __call__(self, power: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.nets.call(self.losses, power)
        update(self.nets, out["loss"], [("generator", self.opt_g), ("posterior", self.opt_q)], self.args.grad_clip)
        return {k: v.detach() for k, v in out.items()}


class DiffInstructStep:
    """One Diff-Instruct update: ``score_step`` denoising-score-matching steps of the student denoiser on fresh
    generator samples (sigma from the same annealed sampler), then one generator step along
    (student score - target score), as in ``losses.diff_instruct``."""

    eval_network = "generator"

    def __init__(self, generator: nn.Module, student: EDMDenoiser, target_score: ScoreFn,
                 args: argparse.Namespace, device: torch.device):
        self.nets = Networks(generator=generator, student=student)
        self.generator, self.target_score = generator, target_score
        self.args, self.device = args, device
        self.make_optimizers()

    def make_optimizers(self) -> None:
        self.opt_g = make_adam(self.nets.parameters("generator"), self.args.lr, self.device)
        self.opt_s = make_adam(self.nets.parameters("student"), self.args.score_lr, self.device)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "student": self.opt_s}

    def student_loss(self, nets: dict[str, nn.Module], power: torch.Tensor) -> torch.Tensor:
        """One seed's EDM denoising loss of the student on fresh generator samples."""
        a = self.args
        with torch.no_grad():
            x0 = nets["generator"].draw(torch.randn(a.batch_size, nets["generator"].dim, device=self.device))
        sigma = sample_sigma(a.batch_size, a.sigma_min, a.sigma_max, power, self.device)
        return edm_denoiser_loss(nets["student"], x0, sigma, a.sigma_data)

    def generator_loss(self, nets: dict[str, nn.Module], power: torch.Tensor) -> torch.Tensor:
        """One seed's generator surrogate along (student score - target score)."""
        a = self.args
        noise = draw_noise(a.batch_size, nets["generator"].dim, a.sigma_min, a.sigma_max, power,
                           antithetic=not a.no_antithetic, device=self.device)
        return diff_instruct_generator_loss(nets["generator"], nets["student"].score, noise, self.target_score,
                                            a.weight, a.sigma_max)

    def __call__(self, power: torch.Tensor) -> dict[str, torch.Tensor]:
        for _ in range(self.args.score_step):
            score_loss = self.nets.call(self.student_loss, power)
            update(self.nets, score_loss, [("student", self.opt_s)], self.args.grad_clip)
        loss = self.nets.call(self.generator_loss, power)
        update(self.nets, loss, [("generator", self.opt_g)], self.args.grad_clip)
        return {"loss": loss.detach(), "score_loss": score_loss.detach()}


class DenoiserStep:
    """One EDM denoising update of a teacher D(x, sigma) on a minibatch of a fixed training set. Evaluation
    samples through ``generator``: EDM's Heun sampler around the denoiser (EMA'd when --ema_decay is on)."""

    eval_network = "denoiser"

    def __init__(self, denoiser: EDMDenoiser, data: torch.Tensor, args: argparse.Namespace):
        self.nets = Networks(denoiser=denoiser)
        self.data, self.args = data, args
        self.generator = HeunSampler(denoiser, args.heun_steps, args.sigma_min, args.sampler_sigma_max, args.rho)
        self.make_optimizers()

    def make_optimizers(self) -> None:
        self.opt = make_adam(self.nets.parameters("denoiser"), self.args.lr, self.data.device)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"denoiser": self.opt}

    def losses(self, nets: dict[str, nn.Module], power: torch.Tensor) -> torch.Tensor:
        a = self.args
        idx = torch.randint(0, self.data.shape[0], (a.batch_size,), device=self.data.device)
        sigma = sample_sigma(a.batch_size, a.sigma_min, a.sigma_max, 1.0, self.data.device)  # U[min, max]
        return edm_denoiser_loss(nets["denoiser"], self.data[idx], sigma, a.sigma_data)

    def __call__(self, power: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = self.nets.call(self.losses, power)
        update(self.nets, loss, [("denoiser", self.opt)], self.args.grad_clip)
        return {"loss": loss.detach()}


def stack_steps(steps: list[TrainStep]) -> TrainStep:
    """One step that trains the networks of K single-seed steps (built alike, one per seed) as K vectorised seeds:
    steps[0]'s settings, every step's initial weights, fresh optimisers over the stacked parameters."""
    if len(steps) == 1:
        return steps[0]
    step = copy.copy(steps[0])
    step.nets = Networks.stack([s.nets for s in steps])
    step.make_optimizers()
    return step


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """Names of the flags the user actually typed (parse again with every default suppressed)."""
    quiet = copy.deepcopy(parser)
    quiet._defaults = {}  # defaults from set_defaults() would otherwise count as typed
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    return set(vars(quiet.parse_args(argv)))


def resume_args(args: argparse.Namespace, typed: set[str], config: dict, script: str) -> argparse.Namespace:
    """The run's flags for a resumption: the checkpoint's config, with only RESUME_OVERRIDABLE flags replaced."""
    if config.get("script") != script:
        raise UsageError(f"--load: that checkpoint was written by {config.get('script')}, not {script}; "
                         f"resume it with {config.get('script')}")
    for name in sorted(typed - RESUME_OVERRIDABLE):
        if name in config and config[name] != getattr(args, name):
            raise UsageError(f"--{name} cannot change when resuming (the run has {config[name]!r}); "
                             "start a new run instead")
    merged = dict(vars(args))  # flags newer than the checkpoint keep their defaults
    merged.update({k: v for k, v in config.items() if k in merged})
    merged.update({k: getattr(args, k) for k in (typed & RESUME_OVERRIDABLE) | {"load"}})
    return argparse.Namespace(**merged)


def default_run_name(prefix: str, args: argparse.Namespace) -> str:
    """prefix_target[_score][_weight]_seedN, e.g. vardiu_gaussian_mog40_true_score_sigma2_seed0."""
    parts = [prefix, args.target]
    if hasattr(args, "true_score"):
        parts.append("true_score" if args.true_score else f"{args.teacher}_teacher")
    if hasattr(args, "weight"):
        parts.append(args.weight)
    return "_".join(parts + [f"seed{args.seed}"])


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


def build_seeds(build: Callable[[argparse.Namespace, torch.device, GaussianMixture], TrainStep],
                args: argparse.Namespace, device: torch.device, target: GaussianMixture, seeds: list[int]) -> TrainStep:
    """build() once per seed, each under torch.manual_seed(seed) so its networks start exactly as in a single-seed
    run of that seed, stacked into one step (``stack_steps``). Leaves args.seed = seeds[0]."""
    steps = []
    for seed in seeds:
        args.seed = seed
        torch.manual_seed(seed)
        np.random.seed(seed)
        steps.append(build(args, device, target))
    args.seed = seeds[0]
    return stack_steps(steps)


def training_iteration(step: TrainStep, power: torch.Tensor, sums: dict[str, torch.Tensor],
                       ema_params: list[torch.Tensor] | None = None, gen_params: list[torch.Tensor] | None = None,
                       ema_decay: float = 0.0) -> Callable[[], None]:
    """One training iteration as a zero-argument function: the step at the sigma-sampler power held in the
    device tensor ``power``, per-seed running sums [K] of its scalars (created on the first call, then updated in
    place) and the EMA of the evaluated network. Free of host synchronisation: capturable as one CUDA graph."""

    def iteration() -> None:
        out = step(power)
        for key, value in out.items():
            value = value.reshape(-1)
            if key in sums:
                sums[key].add_(value)
            else:
                sums[key] = value.clone()
        if ema_params is not None:
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, gen_params, 1.0 - ema_decay)

    return iteration


@dataclass
class SeedRun:
    """One seed's run folder and its logs (a vectorised run has one per seed)."""

    index: int
    seed: int
    run_dir: Path
    config: dict
    log: MetricsLog
    loggers: ExternalLoggers


PER_SEED_CONFIG = {"seed", "run_dir", "name", "load", "vectorised_seeds"}


def resumed_seeds(ckpts: list[tuple[Path, dict]]) -> list[int]:
    """Seeds of the checkpoints given to --load; several must be seeds of one run stopped at one iteration."""
    first_path, first = ckpts[0]
    shared = {k: v for k, v in first["config"].items() if k not in PER_SEED_CONFIG}
    for path, ckpt in ckpts[1:]:
        if {k: v for k, v in ckpt["config"].items() if k not in PER_SEED_CONFIG} != shared:
            raise UsageError(f"--load: {path} and {first_path} are not seeds of one run (their flags differ); "
                             "resume them separately")
        if ckpt["iteration"] != first["iteration"]:
            raise UsageError(f"--load: {path} is at iteration {ckpt['iteration']}, {first_path} at "
                             f"{first['iteration']}; seeds resumed together must be at the same iteration")
    seeds = [ckpt["config"]["seed"] for _, ckpt in ckpts]
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--load: two of these checkpoints are of the same seed ({seeds})")
    return seeds


def run_training(parser: argparse.ArgumentParser, build: Callable[[argparse.Namespace, torch.device,
                 GaussianMixture], TrainStep], script: str, run_prefix: Callable[[argparse.Namespace], str],
                 argv: list[str] | None = None) -> list[Path]:
    """Parse flags, then train, evaluate, log and checkpoint until --max_iter. Returns the run folders (one per
    seed; one unless --seeds names several).

    ``build(args, device, target)`` makes the step (networks, optimisers, score); ``script`` names the entry
    script (stored in the config, checked on resume); ``run_prefix(args)`` starts default run-folder names.
    """
    args = parser.parse_args(argv)
    typed = explicit_flags(parser, argv)
    ckpts: list[tuple[Path, dict]] = []
    if args.load:
        ckpts = [load_checkpoint(spec) for spec in args.load]
        args = resume_args(args, typed, ckpts[0][1]["config"], script)
        seeds = resumed_seeds(ckpts)
    else:
        seeds = parse_seeds(args.seeds) if getattr(args, "seeds", None) else [args.seed]
    validate_training_args(args)
    if len(seeds) > 1 and not getattr(args, "true_score", True) and args.teacher == "kde":
        raise UsageError("--seeds with --teacher kde: the KDE teacher's sample set depends on the seed, so its "
                         "seeds cannot share one score; train them one --seed at a time")
    device = resolve_device(args.device)
    torch.set_float32_matmul_precision("high" if args.tf32 else "highest")  # "high": TF32 matmuls on CUDA
    target = make_target(args.target).to(device)

    step = build_seeds(build, args, device, target, seeds)
    num_seeds = len(seeds)
    fast = device.type == "cuda" and not args.no_compile
    step.nets.compile = fast and args.compile
    gen_params = step.nets.parameters(step.eval_network)
    template = copy.deepcopy(step.generator).requires_grad_(False)  # a single-seed network to evaluate with
    ema_params = [p.detach().clone() for p in gen_params] if args.ema_decay > 0 else None

    def eval_module(index: int, source: list[torch.Tensor]) -> nn.Module:
        """The single-seed generator of seed ``index`` with the weights of ``source`` (live or EMA)."""
        if num_seeds == 1 and source is gen_params:
            return step.generator
        with torch.no_grad():
            for t, p in zip(template.parameters(), source):
                t.copy_(p[index] if num_seeds > 1 else p)
        return template

    start, wall_offset, train_time = 0, 0.0, 0.0
    if ckpts:
        try:
            for i, (_, ckpt) in enumerate(ckpts):
                for name in step.nets.modules:
                    step.nets.load_state_dict(name, ckpt["modules"][name], i)
                for name, opt in step.optimizers().items():
                    load_optimizer_state_for_seed(opt, ckpt["optimizers"][name], num_seeds, i)
                if ema_params is not None:
                    template.load_state_dict(ckpt["ema"])
                    with torch.no_grad():
                        for e, t in zip(ema_params, template.parameters()):
                            (e[i] if num_seeds > 1 else e).copy_(t)
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise UsageError(f"--load {' '.join(args.load)}: the checkpoint does not fit these networks "
                             f"({str(err).splitlines()[0]})") from None
        first = ckpts[0][1]
        set_rng_state(first["rng"], device)
        start, wall_offset, train_time = first["iteration"], first["wall_time"], first["train_time"]
        if start >= args.max_iter:
            raise UsageError(f"--load: the run is already at iteration {start}; pass --max_iter above {start} "
                             "to continue it")

    runs: list[SeedRun] = []
    for i, seed in enumerate(seeds):
        args.seed = seed
        if ckpts:
            run_dir, history = ckpts[i][0].parent.parent, ckpts[i][1]["history"]
        else:
            name = args.name if args.name and num_seeds == 1 else \
                f"{args.name}_seed{seed}" if args.name else default_run_name(run_prefix(args), args)
            run_dir, history = unique_run_dir(args.out_dir, name), []
        for sub in ("plots", "checkpoints"):
            (run_dir / sub).mkdir(exist_ok=True)
        config = dict(vars(args), seeds=None, vectorised_seeds=seeds if num_seeds > 1 else None, script=script,
                      run_dir=str(run_dir), device_resolved=str(device), torch_version=str(torch.__version__))
        write_json(run_dir / "config.json", config)
        runs.append(SeedRun(i, seed, run_dir, config, MetricsLog(run_dir, history),
                            ExternalLoggers(run_dir, config, args.tensorboard, args.wandb, args.wandb_project)))
    args.seed = seeds[0]
    evaluator = SampleEvaluator(target, args.eval_samples, seed=REFERENCE_SET_SEED)
    plotter = PlotWorker()
    where = f"{runs[0].run_dir}" if num_seeds == 1 else f"{num_seeds} folders, {runs[0].run_dir} ..."
    print(f"run folder: {where}  (device {device}, {('compiled, ' if fast and args.compile else '') + 'CUDA graph' if fast else 'eager'}"
          f"{f', {num_seeds} vectorised seeds' if num_seeds > 1 else ''})", file=sys.stderr)

    power_t = torch.zeros((), device=device)
    sums: dict[str, torch.Tensor] = {}  # per-seed sums [K] of the step's scalars since the last evaluation
    run_iteration = make_iteration_runner(
        training_iteration(step, power_t, sums, ema_params, gen_params, args.ema_decay), device, fast)
    steps_since_eval = 0
    t_start = time.perf_counter()
    last_checkpoint = {"iteration": start, "time": t_start}

    def power_at(it: int) -> float:
        """The annealed sigma-sampler power (NaN for scripts without one, such as the teacher's)."""
        if not hasattr(args, "power"):
            return math.nan
        return annealed_power(it, args.power_start, args.power_step, args.power_interval,
                              None if args.power_uncapped else args.power)

    def checkpoint(run: SeedRun, it: int) -> None:
        state = {"iteration": it, "config": run.config, "history": run.log.history, "rng": rng_state(device),
                 "modules": {k: step.nets.state_dict(k, run.index) for k in step.nets.modules},
                 "optimizers": {k: optimizer_state_for_seed(o, num_seeds, run.index)
                                for k, o in step.optimizers().items()},
                 "ema": None if ema_params is None else copy.deepcopy(eval_module(run.index, ema_params).state_dict()),
                 "wall_time": wall_offset + time.perf_counter() - t_start, "train_time": train_time}
        save_checkpoint(run.run_dir / "checkpoints" / "last.pt", state)
        if args.save_every and it % args.save_every == 0 and it > 0:
            save_checkpoint(run.run_dir / "checkpoints" / f"iter_{it:07d}.pt", state)

    def evaluate(run: SeedRun, it: int, means: dict[str, float], final: bool) -> dict:
        """Metrics of fresh samples (their own seeded stream: the training stream is untouched)."""
        g = torch.Generator(device=device).manual_seed(run.seed * 1_000_003 + it)
        with torch.no_grad():
            samples = eval_module(run.index, ema_params if ema_params is not None else gen_params).sample(
                args.eval_samples, generator=g)
        finite_samples = bool(torch.isfinite(samples).all())
        metrics = evaluator(samples) if finite_samples else \
            {"logpd": math.nan, "mmd": math.nan, "log_mmd": math.nan, "modes": 0, "near_mode": 0.0}
        row = {"iteration": it, "wall_time": round(wall_offset + time.perf_counter() - t_start, 3),
               "train_time": round(train_time, 3), **metrics,
               **{k: means.get(k, math.nan) for k in ("loss", "bound", "score_loss")},
               "power": round(power_at(max(it - 1, 0)), 6)}
        finite = finite_samples and all(math.isfinite(v) for v in means.values())
        if finite:
            samples = samples.cpu().numpy()
            np.save(run.run_dir / "samples.npy", samples)
            if final or (args.plot_every and it % (args.plot_every * args.show_iter) == 0):
                plotter.plot_samples(samples, target, run.run_dir / "plots" / f"samples_{it:07d}.png",
                                     title=f"{run.run_dir.name}\niter {it}  logpd {row['logpd']:.3f}  "
                                           f"logMMD {row['log_mmd']:.2f}")
        return row | {"_finite": finite}

    def evaluate_all(it: int, final: bool) -> None:
        """Evaluate, log and (when due) checkpoint every seed; stop the run if a seed went non-finite."""
        nonlocal steps_since_eval
        totals = {k: (v / max(steps_since_eval, 1)).tolist() for k, v in sums.items()}
        rows = [evaluate(run, it, {k: v[run.index] for k, v in totals.items()}, final) for run in runs]
        bad = [run for run, row in zip(runs, rows) if not row.pop("_finite")]
        if bad:
            last = runs[0].log.history[-1]["iteration"] if runs[0].log.history else 0
            bar.close()
            for run in bad:
                loss = rows[run.index]["loss"]
                print(f"error: training{f' of seed {run.seed}' if num_seeds > 1 else ''} became non-finite between "
                      f"iterations {last} and {it} (mean loss {loss}); stopped. The last good checkpoint is "
                      f"{run.run_dir / 'checkpoints' / 'last.pt'} (iteration {last_checkpoint['iteration']}); try "
                      "a lower --lr or --grad_clip, or resume from it with --load", file=sys.stderr)
            raise SystemExit(1)
        for run, row in zip(runs, rows):
            run.log.append(row)
            run.loggers.log(row)
        due = time.perf_counter() - last_checkpoint["time"] >= 60 * args.checkpoint_minutes
        if final or due or it == 0 or (args.save_every and it % args.save_every == 0):
            for run in runs:
                checkpoint(run, it)
            last_checkpoint.update(iteration=it, time=time.perf_counter())
        for v in sums.values():
            v.zero_()
        steps_since_eval = 0
        bar.update(it - bar.n)
        mean = {k: float(np.mean([r[k] for r in rows])) for k in ("logpd", "log_mmd", "modes", "loss")}
        bar.set_postfix(logpd=f"{mean['logpd']:.3f}", logMMD=f"{mean['log_mmd']:.2f}", modes=f"{mean['modes']:g}",
                        loss=f"{mean['loss']:.3g}", refresh=False)

    bar = tqdm(total=args.max_iter, initial=start, disable=args.no_progress, dynamic_ncols=True,
               mininterval=1.0, desc=runs[0].run_dir.name, file=sys.stderr)
    try:
        if start == 0:
            evaluate_all(0, final=False)
        t_train = time.perf_counter()
        filled = None
        for it in range(start, args.max_iter):
            power = power_at(it)
            if power != filled and not (math.isnan(power) and filled is not None and math.isnan(filled)):
                power_t.fill_(power)  # changes once per --power_interval: the graph reads it in place
                filled = power
            run_iteration()
            steps_since_eval += 1
            done = it + 1
            if done % 100 == 0:
                bar.update(done - bar.n)
            if done % args.show_iter and done != args.max_iter:
                continue
            synchronize(device)
            train_time += time.perf_counter() - t_train
            out_of_time = 0 < args.time_limit * 60 < time.perf_counter() - t_start
            evaluate_all(done, final=done == args.max_iter or out_of_time)
            if out_of_time:
                print(f"time limit of {args.time_limit} min reached at iteration {done}; continue with "
                      f"--load {' '.join(str(r.run_dir) for r in runs)}", file=sys.stderr)
                break
            t_train = time.perf_counter()
    except KeyboardInterrupt:
        print(f"\ninterrupted; the last checkpoint (iteration {last_checkpoint['iteration']}) is in "
              f"{runs[0].run_dir / 'checkpoints'}; continue with --load "
              f"{' '.join(str(r.run_dir) for r in runs)}", file=sys.stderr)
        raise SystemExit(130)
    finally:
        bar.close()
        plotter.close()
        for run in runs:
            run.loggers.close()
    reference_logpd = float(target.log_prob(evaluator.reference).mean())
    for run in runs:
        plot_metrics(run.log.history, run.run_dir / "plots" / "metrics.png", reference_logpd=reference_logpd)
        last = run.log.history[-1]
        print(f"done: iteration {last['iteration']}  logpd {last['logpd']:.3f}  log MMD {last['log_mmd']:.2f}  "
              f"modes {last['modes']}/{target.num_modes}  -> {run.run_dir}", file=sys.stderr)
    return [run.run_dir for run in runs]
