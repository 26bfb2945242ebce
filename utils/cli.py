"""Command-line flags shared by every training script, their validation, and one-line errors (exit code 2)."""
from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path
from typing import Callable


from losses.noise import WEIGHT_POWERS
from losses.vardiu import PRIOR_PROPOSALS_GRADS, WEIGHT_REDUCTIONS
from models.networks import HIDDEN_DTYPES, THIN_LAYER_GRADS
from utils import interrupt
from utils.errors import RunIOError, UsageError
from utils.registry import TARGETS
from utils.resume import Flags, resume_flags, resumed_seeds, typed_flags
from utils.run_io import load_checkpoint
from utils.seeds import parse_seeds


RUN_MODES = ("fast", "exact", "eager")


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (what is wrong and what to do) with exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def exit_on_usage_error(main: Callable[..., int | None]) -> Callable[..., int | None]:
    """Decorator for entry points: a UsageError (bad input) becomes one line on stderr and exit code 2, a
    RunIOError (a run-time I/O failure) one line and exit code 1, a stop signal before the training loop takes
    signals over (utils/interrupt.py) one line and exit code 128 + its number."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        prog = sys.argv[0].rsplit("/", 1)[-1] or "vardiu"
        try:
            with interrupt.started():
                return main(*args, **kwargs)
        except (UsageError, RunIOError) as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            raise SystemExit(2 if isinstance(err, UsageError) else 1)
        except interrupt.Interrupted as stop:  # before the training loop took over: nothing was written
            print(f"{prog}: {stop.name} received before training started: stopped, no run folder was written",
                  file=sys.stderr)
            raise SystemExit(128 + stop.signum)

    return wrapped


def training_parser(description: str, distillation: bool = True) -> Parser:
    """Flags common to all training scripts. Defaults follow the reference repo (docs/method.md, section 5).

    ``distillation`` adds the flags of the one-step distillation scripts (score source, sigma weighting and
    annealing, antithetic pairs); the teacher script leaves them out.
    """
    p = Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("target and score")
    g.add_argument("--target", default="mog40", choices=sorted(TARGETS), help="target distribution")
    g.add_argument("--dim", type=int, default=2,
                   help="dimension of the target (mog40: any, the same seeded construction; 2 is the paper's MoG40)")
    if distillation:
        g.add_argument("--true_score", "-true_score", action="store_true",
                       help="use the target's analytic diffused score instead of a teacher")
        g.add_argument("--teacher", default="edm", choices=["edm", "kde", "authors"],
                       help="without --true_score: edm = the denoiser in --teacher_ckpt; kde = the exact score of "
                            "the diffused empirical distribution of --kde_samples target samples; authors = the "
                            "authors' teacher, a copy of their edm_network.pth (Leyangw/VarDiU) in --teacher_ckpt")
        g.add_argument("--teacher_ckpt", default=None,
                       help="teacher checkpoint made by train_teacher.py (default: the shipped one for --target), "
                            "or with --teacher authors the path of the authors' edm_network.pth")
        g.add_argument("--kde_samples", type=int, default=20_480, help="target samples of the KDE teacher")
        g.add_argument("--control_variate", default="auto", choices=["auto", "on", "off"],
                       help="use (D(x_t) - x0) / sigma^2 = score + eps / sigma in the generator gradient "
                            "(same expectation; lower variance once the posterior is tight); auto: on with a teacher, "
                            "off with --true_score")

    g = p.add_argument_group("noise levels and weighting")
    g.add_argument("--sigma_min", type=float, default=0.1, help="smallest noise level")
    g.add_argument("--sigma_max", type=float, default=20.0, help="largest noise level")
    if not distillation:
        return _add_common_flags(p)
    g.add_argument("--weight", default="sigma2", choices=list(WEIGHT_POWERS),
                   help="w(sigma) = (sigma/sigma_max)^k, k = 1, 2, 4; or 1 everywhere (uniform)")
    g.add_argument("--power", type=float, default=2.0,
                   help="cap of the annealed power p in sigma = sigma_min + u^p (sigma_max - sigma_min)")
    g.add_argument("--power_start", type=float, default=0.1, help="power p at iteration 0")
    g.add_argument("--power_step", type=float, default=0.01, help="increase of p every --power_interval iterations")
    g.add_argument("--power_interval", type=int, default=1000, help="iterations between increases of p")
    g.add_argument("--power_uncapped", action="store_true", help="let p grow without the --power cap")
    g.add_argument("--no_antithetic", action="store_true",
                   help="draw independent eps for every sample instead of (eps, -eps) pairs")
    return _add_common_flags(p, vectorised_seeds=True)


def _add_common_flags(p: Parser, vectorised_seeds: bool = False) -> Parser:
    """Optimisation, evaluation, output and logging flags shared by every training script."""
    g = p.add_argument_group("optimisation")
    g.add_argument("--max_iter", type=int, default=1_000_000, help="training iterations")
    g.add_argument("--batch_size", type=int, default=1024, help="samples per iteration (pairs x 2 when antithetic)")
    g.add_argument("--lr", type=float, default=1e-4, help="learning rate of the trained network (Adam)")
    g.add_argument("--grad_clip", type=float, default=10.0, help="gradient-norm clip per network (0: off)")
    g.add_argument("--ema_decay", type=float, default=0.0,
                   help="EMA decay of the evaluated network (0: off); when on, evaluation uses the EMA weights")
    g.add_argument("--width", type=int, default=400, help="hidden units of every MLP")
    g.add_argument("--depth", type=int, default=4, help="hidden layers of every MLP")
    g.add_argument("--seed", type=int, default=0, help="random seed")
    if vectorised_seeds:
        g.add_argument("--seeds", default=None, metavar="LIST",
                       help="train several seeds at once, vectorised (e.g. 0-9 or 0,3,7): one process, one run folder "
                            "per seed, each seed initialised as a --seed run of it (replaces --seed)")
    g.add_argument("--device", default=None,
                   help="torch device, e.g. cpu, cuda, cuda:0 (default: cuda if available, else cpu)")
    g.add_argument("--mode", default="fast", choices=RUN_MODES,
                   help="on CUDA: fast = each iteration one CUDA graph of torch.compile'd kernels, the width x width "
                        "hidden products in TF32 (coordinates, first and last layers, scores and metrics stay float32); "
                        "exact = one CUDA graph of the eager kernels, all float32 (the same numbers as eager); eager = "
                        "kernels launched one by one. The CPU always runs eager, float32")
    g.add_argument("--thin_layer_grad", default="exact", choices=THIN_LAYER_GRADS,
                   help="how every network's first and last layer (coordinates in or out) is differentiated: exact = "
                        "through its float32 products and sums, like its value; matmul = through a matrix product "
                        "(TF32 under --mode fast), the value still exact; --iw_samples 8 at d = 8 then steps in 3.1 ms "
                        "instead of 5.1 (5 seeds, H200; docs/speed.md)")
    g.add_argument("--hidden_dtype", default="float32", choices=HIDDEN_DTYPES,
                   help="the width x width hidden layers and their activations in float32 (TF32 products under "
                        "--mode fast) or bfloat16; the first and last layer stay float32 either way")

    g = p.add_argument_group("evaluation, outputs and logging")
    g.add_argument("--show_iter", type=int, default=1000, help="iterations between evaluations")
    g.add_argument("--eval_samples", type=int, default=10_000, help="generator and target samples per evaluation")
    g.add_argument("--plot_every", type=int, default=10,
                   help="plot samples every this many evaluations (0: only the final one)")
    g.add_argument("--save_every", type=int, default=100_000,
                   help="keep a numbered checkpoint every this many iterations (0: only the latest)")
    g.add_argument("--checkpoint_minutes", type=float, default=5.0,
                   help="rewrite checkpoints/last.pt at the first evaluation after this many minutes, and at the "
                        "end (0: at every evaluation)")
    g.add_argument("--out_dir", default="runs", help="folder that holds run folders")
    g.add_argument("--name", default=None, help="run folder name (default: built from the method and flags); "
                   "an existing folder is never overwritten: a suffix _1, _2, ... is added")
    g.add_argument("--time_limit", type=float, default=0.0, metavar="MINUTES",
                   help="end the run at the first evaluation after this many minutes (0: no limit); "
                        "continue it later with --load and a --max_iter")
    g.add_argument("--recipe", default=None,
                   help="name of the run_grid.py recipe this run belongs to (recorded in config.json and used by "
                        "plot_results.py to group runs; no effect on training)")
    g.add_argument("--load", default=None, nargs="+", metavar="CKPT",
                   help="resume from a checkpoint file or a run folder (continues that run in its folder); "
                        "several: the seeds of one vectorised run, resumed together")
    g.add_argument("--rewind", action="store_true",
                   help="with --load of a checkpoint older than the run folder's latest: go back to it, cutting "
                        "metrics.csv and lists/ there (without it such a --load is refused)")
    g.add_argument("--tensorboard", action="store_true", help="also write TensorBoard scalars to the run folder")
    g.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (needs wandb installed)")
    g.add_argument("--wandb_project", default="vardiu", help="Weights & Biases project name")
    g.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p


def add_vardiu_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of the VarDiU scripts only: the posterior's learning rate and how the weights enter the loss."""
    g = parser.add_argument_group("VarDiU")
    g.add_argument("--posterior_lr", type=float, default=None, help="posterior learning rate (Adam; default: --lr)")
    g.add_argument("--precondition", action="store_true",
                   help="scale the posterior's inputs by their noise-dependent spread (x_t / sqrt(s^2 + sigma^2), "
                        "log(sigma) / 4, s the target's spread) and its outputs to a linear generator's exact "
                        "posterior: stable at any --sigma_max and --dim (off: the authors' posterior, the paper recipe)")
    g.add_argument("--iw_samples", type=int, default=0, metavar="K",
                   help="K extra posterior draws per x_t: the generator follows the tighter K-sample bound U_K "
                        "(importance weights p(z) N(x_t; g(z), sigma^2) / q(z | x_t)), the posterior keeps its "
                        "maximum-likelihood loss; about K + 1 times the generator's cost. 0 (default): the paper's "
                        "bound. Gaussian and NSF posteriors only")
    g.add_argument("--prior_proposals_sigma", type=float, default=0.0, metavar="S",
                   help="at noise levels sigma >= S the generator's bound takes the batch's other draws of z (prior "
                        "samples: B/2 - 1 with antithetic pairs) as its importance proposals in place of the "
                        "posterior's, at no extra generator pass; below S, --iw_samples as given; the posterior's "
                        "loss is unchanged. 0 (default): off")
    g.add_argument("--prior_proposals_grad", default="bound", choices=PRIOR_PROPOSALS_GRADS,
                   help="the generator's gradient on the --prior_proposals_sigma rows. bound (default): the bound's, "
                        "through x_t and through every draw of the batch's pool; pathwise: through x_t only, the pool "
                        "held fixed (the pool's kernel score in place of the generator's: lower variance, not a "
                        "bound's gradient; docs/high-dimensional.md)")
    g.add_argument("--weight_reduction", default="sample", choices=WEIGHT_REDUCTIONS,
                   help="sample: loss -mean(w * L), each sample weighted by its own w(sigma) (the paper); batch: "
                        "-mean(w) * mean(L), what the authors' scripts compute (their [B, 1] weight broadcasts "
                        "against the [B] terms), i.e. uniform weighting scaled by the batch-mean weight")


def require_positive(args: argparse.Namespace, names: list[str], integer: bool = False) -> None:
    """UsageError for the first of these flags (those the script has, and not None) that is not a positive
    integer (``integer``) or a positive finite number."""
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        if integer and value <= 0:
            raise UsageError(f"--{name} must be a positive integer, got {value}")
        if not integer and not 0 < value < float("inf"):
            raise UsageError(f"--{name} must be a positive finite number, got {value}")


def validate_folder_name(name: str | None, flag: str = "--name") -> None:
    """A run name must be one folder name: not empty, no path separators, not '.' or '..'."""
    if name is None:
        return
    if not name or "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise UsageError(f"{flag} {name!r} must be a single folder name (no '/', not '.' or '..'); "
                         "use --out_dir to choose where run folders go")


def validate_output_folder(path: str, flag: str = "--out_dir") -> None:
    """An output folder may not exist yet, but nothing on its way may be a file."""
    for part in [Path(path), *Path(path).parents]:
        if part.exists() and not part.is_dir():
            raise UsageError(f"{flag} {path}: {part} is a file, not a folder; pass a folder")


def validate_training_args(args: argparse.Namespace) -> None:
    """Raise UsageError with one clear sentence for impossible settings. Every float flag of every script is
    checked here for NaN and infinity first."""
    for name, value in sorted(vars(args).items()):
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--{name} must be a finite number, got {value}")
    if args.seed < 0:
        raise UsageError(f"--seed must be 0 or a positive integer, got {args.seed}")
    validate_folder_name(args.name)
    validate_output_folder(args.out_dir)
    require_positive(args, ["max_iter", "batch_size", "show_iter", "eval_samples", "power_interval", "width",
                            "depth", "kde_samples", "dim"], integer=True)
    for name in ["plot_every", "save_every"]:
        if getattr(args, name) < 0:
            raise UsageError(f"--{name} must be 0 or positive, got {getattr(args, name)}")
    require_positive(args, ["sigma_min", "sigma_max", "lr", "power", "power_start", "posterior_lr"])
    if args.checkpoint_minutes < 0:
        raise UsageError(f"--checkpoint_minutes must be 0 (every evaluation) or positive, got {args.checkpoint_minutes}")
    if args.time_limit < 0:
        raise UsageError(f"--time_limit must be 0 (none) or positive minutes, got {args.time_limit}")
    if getattr(args, "power_step", 0) < 0:
        raise UsageError(f"--power_step must be 0 or positive, got {args.power_step}")
    if getattr(args, "prior_proposals_grad", "bound") != "bound" and not args.prior_proposals_sigma:
        raise UsageError("--prior_proposals_grad pathwise acts on the --prior_proposals_sigma rows; give "
                         "--prior_proposals_sigma S > 0 too, or drop it")
    if getattr(args, "prior_proposals_sigma", 0.0) < 0:
        raise UsageError(f"--prior_proposals_sigma must be 0 (off) or a positive noise level, got "
                         f"{args.prior_proposals_sigma}")
    if getattr(args, "iw_samples", 0) < 0:
        raise UsageError(f"--iw_samples must be 0 (the paper's bound) or a positive integer, got {args.iw_samples}")
    if args.sigma_min >= args.sigma_max:
        raise UsageError(f"--sigma_min ({args.sigma_min}) must be smaller than --sigma_max ({args.sigma_max})")
    if args.grad_clip < 0:
        raise UsageError(f"--grad_clip must be 0 (off) or positive, got {args.grad_clip}")
    if not 0.0 <= args.ema_decay < 1.0:
        raise UsageError(f"--ema_decay must be in [0, 1), got {args.ema_decay}")
    if not getattr(args, "no_antithetic", True) and args.batch_size % 2:
        raise UsageError(f"--batch_size must be even for antithetic (eps, -eps) pairs, got {args.batch_size}; "
                         "use an even size or pass --no_antithetic")



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
