"""VarDiU with a Gaussian posterior q(z | x_t, sigma) on a 2-D mixture target.

    python train_upper_diffusion.py -true_score --sigma_min 0.1 --sigma_max 20 --power 2.0 --weight sigma2 --seed 0

Parses flags and wires the parts together; the loop lives in utils/trainer.py.
"""
from __future__ import annotations

import argparse

import torch

from models import GaussianPosterior, Generator
from utils.cli import add_vardiu_flags, exit_on_usage_error, training_parser
from utils.methods import vardiu_method
from utils.targets import GaussianMixture
from utils.trainer import Method, parse_flags, run_training

SCRIPT = "train_upper_diffusion.py"


def build_parser() -> argparse.ArgumentParser:
    parser = training_parser(__doc__.split("\n\n")[0])
    add_vardiu_flags(parser)
    return parser


def build(flags: argparse.Namespace, device: torch.device, target: GaussianMixture) -> Method:
    generator = Generator(target.dim, flags.width, flags.depth).to(device)
    posterior = GaussianPosterior(target.dim, flags.width, flags.depth).to(device)
    return vardiu_method(generator, posterior, flags, device, target)


@exit_on_usage_error
def main(argv: list[str] | None = None):
    return run_training(build, parse_flags(build_parser(), argv, SCRIPT), SCRIPT, run_prefix="vardiu_gaussian")


if __name__ == "__main__":
    main()
