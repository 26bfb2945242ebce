"""VarDiU with a Gaussian posterior q(z | x_t, sigma) on a mixture target (MoG40 in --dim dimensions).

    python train_upper_diffusion.py -true_score --sigma_min 0.1 --sigma_max 20 --power 2.0 --weight sigma2 --seed 0

Parses flags and wires the parts together; the loop lives in utils/loop.py. ``--posterior`` picks another
posterior from utils/registry.py (its options at their defaults; train_upper_flow.py exposes the flows' options).
"""
from __future__ import annotations

from utils import interrupt

if __name__ == "__main__":  # before the imports below (seconds): a stop signal from here on ends with one line
    interrupt.install()

import argparse

import torch

from models import Generator
from utils.cli import add_vardiu_flags, exit_on_usage_error, parse_flags, training_parser
from utils.loop import run_training
from utils.methods import vardiu_method
from utils.registry import POSTERIORS
from utils.step import Method
from utils.targets import GaussianMixture

SCRIPT = "train_upper_diffusion.py"


def build_parser() -> argparse.ArgumentParser:
    parser = training_parser(__doc__.split("\n\n")[0])
    add_vardiu_flags(parser)
    parser.add_argument_group("VarDiU").add_argument(
        "--posterior", default="gaussian", choices=list(POSTERIORS),
        help="the posterior q(z | x_t, sigma), by its name in utils/registry.py")
    return parser


def build(flags: argparse.Namespace, device: torch.device, target: GaussianMixture) -> Method:
    generator = Generator(target.dim, flags.width, flags.depth).to(device)
    posterior = POSTERIORS[flags.posterior].build(target.dim, flags.width, flags.depth,
                                                  data_std=target.data_std if flags.precondition else None).to(device)
    return vardiu_method(generator, posterior, flags, device, target)


@exit_on_usage_error
def main(argv: list[str] | None = None):
    flags = parse_flags(build_parser(), argv, SCRIPT)
    return run_training(build, flags, SCRIPT, run_prefix=f"vardiu_{flags.values.posterior.lower()}")


if __name__ == "__main__":
    main()
