"""The one training loop shared by every entry script, and the update steps it drives (VarDiU, Diff-Instruct,
the teacher denoiser).

An entry script parses flags and passes ``run_training`` a ``build`` function that wires networks, score and
loss into a *step*: an object with ``generator`` (the network to evaluate), ``modules()`` and ``optimizers()``
(dicts that checkpoints save), and ``__call__(power) -> dict[str, Tensor]`` that performs one update and returns
detached scalars (``loss``; ``bound`` or ``score_loss`` where the method has them). The loop owns everything
else: seeding, the run folder or resumption, the power schedule, EMA, evaluation every ``--show_iter``
iterations, metrics, plots, checkpoints, the progress bar and non-finite detection. The step itself never synchronises with the host.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path
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
from utils.plotting import plot_metrics, plot_samples
from utils.run_io import ExternalLoggers, MetricsLog, load_checkpoint, save_checkpoint, unique_run_dir, write_json
from utils.targets import GaussianMixture, make_target

# Flags that may differ when a run is resumed with --load; every other flag comes from the checkpoint.
RESUME_OVERRIDABLE = {"max_iter", "device", "show_iter", "plot_every", "save_every", "eval_samples", "load",
                      "time_limit", "tensorboard", "wandb", "wandb_project", "no_progress"}
REFERENCE_SET_SEED = 12345  # seed of the fixed target sample set that MMD is measured against


class TrainStep(Protocol):
    generator: nn.Module

    def modules(self) -> dict[str, nn.Module]: ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def __call__(self, power: torch.Tensor) -> dict[str, torch.Tensor]: ...


def clip_and_step(loss: torch.Tensor, pairs: list[tuple[nn.Module, torch.optim.Optimizer]], clip: float) -> None:
    """Backpropagate loss, clip each network's gradient norm separately (no host sync), and step its optimiser."""
    for _, opt in pairs:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for net, opt in pairs:
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip, foreach=True)
        opt.step()


class VarDiUStep:
    """One VarDiU update: draw (z, eps, sigma), the surrogate loss of ``losses.vardiu``, one Adam step for the
    generator and one for the posterior (same backward pass; gradients clipped per network)."""

    def __init__(self, generator: nn.Module, posterior: nn.Module, target_score: ScoreFn,
                 target_log_prob: Optional[LogProbFn], args: argparse.Namespace, device: torch.device,
                 control_variate: bool = False):
        self.generator, self.posterior = generator, posterior
        self.target_score, self.target_log_prob = target_score, target_log_prob
        self.args, self.device = args, device
        self.control_variate = control_variate
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=args.lr)
        self.opt_q = torch.optim.Adam(posterior.parameters(), lr=args.posterior_lr or args.lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "posterior": self.posterior}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "posterior": self.opt_q}

    def __call__(self, power: torch.Tensor) -> dict[str, torch.Tensor]:
        a = self.args
        noise = draw_noise(a.batch_size, self.generator.dim, a.sigma_min, a.sigma_max, power,
                           antithetic=not a.no_antithetic, device=self.device)
        out = vardiu_loss(self.generator, self.posterior, noise, self.target_score, a.weight, a.sigma_max,
                          self.target_log_prob, control_variate=self.control_variate)
        clip_and_step(out.loss, [(self.generator, self.opt_g), (self.posterior, self.opt_q)], a.grad_clip)
        scalars = {"loss": out.loss.detach()}
        if out.bound is not None:
            scalars["bound"] = out.bound
        return scalars


class DiffInstructStep:
    """One Diff-Instruct update: ``score_step`` denoising-score-matching steps of the student denoiser on fresh
    generator samples (sigma from the same annealed sampler), then one generator step along
    (student score - target score), as in ``losses.diff_instruct``."""

    def __init__(self, generator: nn.Module, student: EDMDenoiser, target_score: ScoreFn,
                 args: argparse.Namespace, device: torch.device):
        self.generator, self.student, self.target_score = generator, student, target_score
        self.args, self.device = args, device
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=args.lr)
        self.opt_s = torch.optim.Adam(student.parameters(), lr=args.score_lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "student": self.student}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "student": self.opt_s}

    def __call__(self, power: torch.Tensor) -> dict[str, torch.Tensor]:
        a = self.args
        for _ in range(a.score_step):
            with torch.no_grad():
                x0 = self.generator(torch.randn(a.batch_size, self.generator.dim, device=self.device))
            sigma = sample_sigma(a.batch_size, a.sigma_min, a.sigma_max, power, self.device)
            score_loss = edm_denoiser_loss(self.student, x0, sigma, a.sigma_data)
            clip_and_step(score_loss, [(self.student, self.opt_s)], a.grad_clip)
        noise = draw_noise(a.batch_size, self.generator.dim, a.sigma_min, a.sigma_max, power,
                           antithetic=not a.no_antithetic, device=self.device)
        loss = diff_instruct_generator_loss(self.generator, self.student.score, noise, self.target_score,
                                            a.weight, a.sigma_max)
        clip_and_step(loss, [(self.generator, self.opt_g)], a.grad_clip)
        return {"loss": loss.detach(), "score_loss": score_loss.detach()}


class DenoiserStep:
    """One EDM denoising update of a teacher D(x, sigma) on a minibatch of a fixed training set. Evaluation
    samples through ``generator``: EDM's Heun sampler around the denoiser (EMA'd when --ema_decay is on)."""

    def __init__(self, denoiser: EDMDenoiser, data: torch.Tensor, args: argparse.Namespace):
        self.denoiser, self.data, self.args = denoiser, data, args
        self.generator = HeunSampler(denoiser, args.heun_steps, args.sigma_min, args.sampler_sigma_max, args.rho)
        self.opt = torch.optim.Adam(denoiser.parameters(), lr=args.lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"denoiser": self.denoiser}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"denoiser": self.opt}

    def __call__(self, power: torch.Tensor) -> dict[str, torch.Tensor]:
        a = self.args
        idx = torch.randint(0, self.data.shape[0], (a.batch_size,), device=self.data.device)
        sigma = sample_sigma(a.batch_size, a.sigma_min, a.sigma_max, 1.0, self.data.device)  # U[min, max]
        loss = edm_denoiser_loss(self.denoiser, self.data[idx], sigma, a.sigma_data)
        clip_and_step(loss, [(self.denoiser, self.opt)], a.grad_clip)
        return {"loss": loss.detach()}


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
    merged = {k: v for k, v in config.items() if k in vars(args)}
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


def run_training(parser: argparse.ArgumentParser, build: Callable[[argparse.Namespace, torch.device,
                 GaussianMixture], TrainStep], script: str, run_prefix: Callable[[argparse.Namespace], str],
                 argv: list[str] | None = None) -> Path:
    """Parse flags, then train, evaluate, log and checkpoint until --max_iter. Returns the run folder.

    ``build(args, device, target)`` makes the step (networks, optimisers, score); ``script`` names the entry
    script (stored in the config, checked on resume); ``run_prefix(args)`` starts default run-folder names.
    """
    args = parser.parse_args(argv)
    typed = explicit_flags(parser, argv)
    ckpt = None
    if args.load:
        ckpt_file, ckpt = load_checkpoint(args.load)
        args = resume_args(args, typed, ckpt["config"], script)
    validate_training_args(args)
    device = resolve_device(args.device)
    target = make_target(args.target).to(device)

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    step = build(args, device, target)
    generator = step.generator
    ema = copy.deepcopy(generator).requires_grad_(False) if args.ema_decay > 0 else None

    start, wall_offset, train_time = 0, 0.0, 0.0
    if ckpt is not None:
        run_dir = ckpt_file.parent.parent
        try:
            for name, module in step.modules().items():
                module.load_state_dict(ckpt["modules"][name])
            for name, opt in step.optimizers().items():
                opt.load_state_dict(ckpt["optimizers"][name])
            if ema is not None:
                ema.load_state_dict(ckpt["ema"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise UsageError(f"--load {args.load}: the checkpoint does not fit these networks "
                             f"({str(err).splitlines()[0]})") from None
        set_rng_state(ckpt["rng"], device)
        start, wall_offset, train_time = ckpt["iteration"], ckpt["wall_time"], ckpt["train_time"]
        if start >= args.max_iter:
            raise UsageError(f"--load: the run is already at iteration {start}; pass --max_iter above {start} "
                             "to continue it")
        history = ckpt["history"]
    else:
        run_dir = unique_run_dir(args.out_dir, args.name or default_run_name(run_prefix(args), args))
        history = []
    for sub in ("plots", "checkpoints"):
        (run_dir / sub).mkdir(exist_ok=True)

    config = dict(vars(args), script=script, run_dir=str(run_dir), device_resolved=str(device),
                  torch_version=str(torch.__version__))
    write_json(run_dir / "config.json", config)
    log = MetricsLog(run_dir, history)
    loggers = ExternalLoggers(run_dir, config, args.tensorboard, args.wandb, args.wandb_project)
    evaluator = SampleEvaluator(target, args.eval_samples, seed=REFERENCE_SET_SEED)
    eval_net = ema if ema is not None else generator
    print(f"run folder: {run_dir}  (device {device})", file=sys.stderr)

    power_t = torch.zeros((), device=device)
    if ema is not None:
        ema_params, gen_params = list(ema.parameters()), list(generator.parameters())
    sums: dict[str, torch.Tensor] = {}
    steps_since_eval = 0
    t_start = time.perf_counter()

    def power_at(iteration: int) -> float:
        """The annealed sigma-sampler power (NaN for scripts without one, such as the teacher's)."""
        if not hasattr(args, "power"):
            return math.nan
        return annealed_power(iteration, args.power_start, args.power_step, args.power_interval,
                              None if args.power_uncapped else args.power)

    def checkpoint(iteration: int) -> None:
        state = {"iteration": iteration, "config": config, "history": log.history, "rng": rng_state(device),
                 "modules": {k: m.state_dict() for k, m in step.modules().items()},
                 "optimizers": {k: o.state_dict() for k, o in step.optimizers().items()},
                 "ema": ema.state_dict() if ema is not None else None,
                 "wall_time": wall_offset + time.perf_counter() - t_start, "train_time": train_time}
        save_checkpoint(run_dir / "checkpoints" / "last.pt", state)
        if args.save_every and iteration % args.save_every == 0 and iteration > 0:
            save_checkpoint(run_dir / "checkpoints" / f"iter_{iteration:07d}.pt", state)

    def evaluate(iteration: int, final: bool) -> dict:
        """Metrics of fresh samples (their own seeded stream: the training stream is untouched)."""
        g = torch.Generator(device=device).manual_seed(args.seed * 1_000_003 + iteration)
        with torch.no_grad():
            samples = eval_net.sample(args.eval_samples, generator=g)
        finite_samples = bool(torch.isfinite(samples).all())
        metrics = evaluator(samples) if finite_samples else \
            {"logpd": math.nan, "mmd": math.nan, "log_mmd": math.nan, "modes": 0, "near_mode": 0.0}
        means = {k: float(v) / max(steps_since_eval, 1) for k, v in sums.items()}
        row = {"iteration": iteration, "wall_time": round(wall_offset + time.perf_counter() - t_start, 3),
               "train_time": round(train_time, 3), **metrics,
               **{k: means.get(k, math.nan) for k in ("loss", "bound", "score_loss")},
               "power": round(power_at(max(iteration - 1, 0)), 6)}
        finite = finite_samples and all(math.isfinite(v) for v in means.values())
        if finite:
            np.save(run_dir / "samples.npy", samples.cpu().numpy())
            if final or (args.plot_every and iteration % (args.plot_every * args.show_iter) == 0):
                plot_samples(samples, target, run_dir / "plots" / f"samples_{iteration:07d}.png",
                             title=f"{run_dir.name}\niter {iteration}  logpd {row['logpd']:.3f}  "
                                   f"logMMD {row['log_mmd']:.2f}")
        return row | {"_finite": finite}

    bar = tqdm(total=args.max_iter, initial=start, disable=args.no_progress, dynamic_ncols=True,
               mininterval=1.0, desc=run_dir.name, file=sys.stderr)
    try:
        if start == 0:
            row = evaluate(0, final=False)
            row.pop("_finite")
            log.append(row)
            loggers.log(row)
            checkpoint(0)
        t_train = time.perf_counter()
        for it in range(start, args.max_iter):
            power_t.fill_(power_at(it))
            out = step(power_t)
            for key, value in out.items():
                if key in sums:
                    sums[key] += value
                else:
                    sums[key] = value.clone()
            if ema is not None:
                torch._foreach_lerp_(ema_params, gen_params, 1.0 - args.ema_decay)
            steps_since_eval += 1
            done = it + 1
            if done % 100 == 0:
                bar.update(done - bar.n)
            if done % args.show_iter and done != args.max_iter:
                continue
            synchronize(device)
            train_time += time.perf_counter() - t_train
            out_of_time = 0 < args.time_limit * 60 < time.perf_counter() - t_start
            row = evaluate(done, final=done == args.max_iter or out_of_time)
            if not row.pop("_finite"):
                last = log.history[-1]["iteration"] if log.history else 0
                bar.close()
                print(f"error: training became non-finite between iterations {last} and {done} "
                      f"(mean loss {row['loss']}); stopped. The last good checkpoint is "
                      f"{run_dir / 'checkpoints' / 'last.pt'} (iteration {last}); try a lower --lr or "
                      "--grad_clip, or resume from it with --load", file=sys.stderr)
                raise SystemExit(1)
            log.append(row)
            loggers.log(row)
            checkpoint(done)
            bar.update(done - bar.n)
            bar.set_postfix(logpd=f"{row['logpd']:.3f}", logMMD=f"{row['log_mmd']:.2f}", modes=row["modes"],
                            loss=f"{row['loss']:.3g}", refresh=False)
            sums, steps_since_eval = {}, 0
            if out_of_time:
                print(f"time limit of {args.time_limit} min reached at iteration {done}; continue with "
                      f"--load {run_dir}", file=sys.stderr)
                break
            t_train = time.perf_counter()
    except KeyboardInterrupt:
        last = log.history[-1]["iteration"] if log.history else 0
        print(f"\ninterrupted; the last checkpoint (iteration {last}) is in {run_dir / 'checkpoints'}; "
              f"continue with --load {run_dir}", file=sys.stderr)
        raise SystemExit(130)
    finally:
        bar.close()
        loggers.close()
    plot_metrics(log.history, run_dir / "plots" / "metrics.png",
                 reference_logpd=float(target.log_prob(evaluator.reference).mean()))
    last = log.history[-1]
    print(f"done: iteration {last['iteration']}  logpd {last['logpd']:.3f}  log MMD {last['log_mmd']:.2f}  "
          f"modes {last['modes']}/{target.num_modes}  -> {run_dir}", file=sys.stderr)
    return run_dir
