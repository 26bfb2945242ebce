"""VarDiU with a Gaussian posterior q(z | x_t, sigma) on a 2-D mixture target.

    python train_upper_diffusion.py -true_score --sigma_min 0.1 --sigma_max 20 --power 2.0 --weight sigma2 --seed 0

Parses flags and wires the parts together; the loop lives in utils/trainer.py.
"""
from __future__ import annotations

import argparse

import torch

from models import GaussianPosterior, Generator
from utils.cli import add_vardiu_flags, exit_on_usage_error, training_parser
from utils.targets import GaussianMixture
from utils.teachers import target_score, use_control_variate
from utils.trainer import VarDiUStep, run_training


def build_parser() -> argparse.ArgumentParser:
    parser = training_parser(__doc__.split("\n\n")[0])
    add_vardiu_flags(parser)
    return parser


def build(args: argparse.Namespace, device: torch.device, target: GaussianMixture) -> VarDiUStep:
    generator = Generator(target.dim, args.width, args.depth).to(device)
    posterior = GaussianPosterior(target.dim, args.width, args.depth).to(device)
    return VarDiUStep(generator, posterior, target_score(args, target, device), target.log_prob, args, device,
                      control_variate=use_control_variate(args))


@exit_on_usage_error
def main(argv: list[str] | None = None):
    return run_training(build_parser(), build, script="train_upper_diffusion.py",
                        run_prefix=lambda a: "vardiu_gaussian", argv=argv)


if __name__ == "__main__":
    main()
