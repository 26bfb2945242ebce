"""Diff-Instruct, the paper's baseline, on a mixture target (MoG40 in --dim dimensions): the same flags,
loop and outputs as VarDiU.

    python train_diff_instruct.py -true_score --sigma_min 0.1 --sigma_max 20 --power 2.0 --weight sigma2 --score_step 10 --seed 0

The student score network is a denoiser of the teacher's architecture initialised from --teacher_ckpt (also with
--true_score, which only replaces the target score of the generator update; with --teacher authors it is the
authors' network, as in their baseline). As in the reference baseline the sigma-sampler power stays fixed at
--power; --anneal_power uses VarDiU's annealing for a matched comparison.
"""
from __future__ import annotations

from utils import interrupt

if __name__ == "__main__":  # before the imports below (seconds): a stop signal from here on ends with one line
    interrupt.install()

import argparse
import copy

import torch

from losses.diff_instruct import GeneratorLoss, StudentScoreLoss
from losses.noise import ConstantPower, make_weight
from models import Generator
from models.networks import ReferenceDiffInstructGenerator
from utils.cli import exit_on_usage_error, parse_flags, require_positive, training_parser
from utils.loop import run_training
from utils.methods import distillation_notes, noise_sampler, power_schedule, score_source
from utils.step import Method, Update
from utils.targets import GaussianMixture
from utils.teachers import teacher_network

SCRIPT = "train_diff_instruct.py"


def build_parser() -> argparse.ArgumentParser:
    parser = training_parser(__doc__.split("\n\n")[0])
    g = parser.add_argument_group("Diff-Instruct")
    g.add_argument("--score_step", type=int, default=1, help="student score updates per generator update")
    g.add_argument("--score_lr", type=float, default=5e-5, help="student score learning rate (Adam)")
    g.add_argument("--g_lr", dest="lr", type=float, default=argparse.SUPPRESS,
                   help="generator learning rate (another name for --lr)")
    g.add_argument("--sigma_data", type=float, default=10.0, help="EDM weighting of the student's DSM loss")
    g.add_argument("--anneal_power", action="store_true",
                   help="anneal the sigma-sampler power as the VarDiU scripts do (default: fixed at --power)")
    g.add_argument("--reference_generator_input", action="store_true",
                   help="reproduce the authors' baseline exactly: a generator MLP on [z, c] (2 d inputs) updated with "
                        "c = 0 but sampled with c = 1 for the student's data, evaluation and samples.npy "
                        "(train_dikl.py at commit bf35f42)")
    return parser


def build(flags: argparse.Namespace, device: torch.device, target: GaussianMixture) -> Method:
    """The student first learns (--score_step DSM updates on fresh generator samples), then the generator follows
    (student score - target score); both draw sigma from the same sampler."""
    require_positive(flags, ["score_step"], integer=True)
    require_positive(flags, ["score_lr", "sigma_data"])
    student = copy.deepcopy(teacher_network(flags.teacher, flags.teacher_ckpt, target, device))
    student.requires_grad_(True).train()
    make_generator = ReferenceDiffInstructGenerator if flags.reference_generator_input else Generator
    generator = make_generator(target.dim, flags.width, flags.depth).to(device)
    noise = noise_sampler(flags, device)
    generator_loss = GeneratorLoss(noise, make_weight(flags.weight, flags.sigma_max), score_source(flags, target, device))
    return Method(networks={"generator": generator, "student": student},
                  learning_rates={"generator": flags.lr, "student": flags.score_lr},
                  updates=[Update(StudentScoreLoss(noise, flags.sigma_data), ("student",), objective="score_loss",
                                  repeats=flags.score_step),
                           Update(generator_loss, ("generator",), objective="loss")],
                  # the reference baseline: p fixed at --power from the first iteration
                  power_schedule=power_schedule(flags) if flags.anneal_power else ConstantPower(flags.power),
                  notes=distillation_notes(flags, target))


@exit_on_usage_error
def main(argv: list[str] | None = None):
    flags = parse_flags(build_parser(), argv, SCRIPT)
    return run_training(build, flags, SCRIPT, run_prefix=f"diff_instruct_ss{flags.values.score_step}")


if __name__ == "__main__":
    main()
