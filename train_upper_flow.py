"""VarDiU with a normalising-flow posterior q(z | x_t, sigma) (NSF splines or planar flows) on a mixture
target (MoG40 in --dim dimensions).

    python train_upper_flow.py -true_score --sigma_min 0.1 --sigma_max 20 --power 2.0 --weight sigma2 --seed 0 --flow_type NSF --flow_length 4

The same loss, loop, evaluation and outputs as train_upper_diffusion.py; only the posterior differs
(models/flows.py). Parses flags and wires the parts together.
"""
from __future__ import annotations

from utils import interrupt

if __name__ == "__main__":  # before the imports below (seconds): a stop signal from here on ends with one line
    interrupt.install()

import argparse

import torch

from models import Generator
from models.flows import FLOW_TYPES
from utils.cli import UsageError, add_vardiu_flags, exit_on_usage_error, parse_flags, require_positive, training_parser
from utils.loop import run_training
from utils.methods import vardiu_method
from utils.registry import POSTERIORS
from utils.step import Method
from utils.targets import GaussianMixture

SCRIPT = "train_upper_flow.py"


def build_parser() -> argparse.ArgumentParser:
    parser = training_parser(__doc__.split("\n\n")[0])
    add_vardiu_flags(parser)
    g = parser.add_argument_group("flow posterior")
    g.add_argument("--flow_type", type=str.upper, default="NSF", choices=FLOW_TYPES,
                   help="NSF: conditional rational-quadratic spline autoregressive flow; PLF: conditional planar flow")
    g.add_argument("--flow_length", type=int, default=4, help="number of flow layers")
    g.add_argument("--flow_hidden", type=int, default=64, help="hidden units of each spline layer's MADE")
    g.add_argument("--flow_bins", type=int, default=8, help="spline bins (NSF)")
    g.add_argument("--flow_tail_bound", type=float, default=5.0,
                   help="splines act on [-B, B] in the Gaussian's standardised coordinates, identity outside (NSF)")
    g.add_argument("--flow_context", type=int, default=32, help="context features from (x_t, sigma) to the flow")
    return parser


def validate_flow_args(flags: argparse.Namespace) -> None:
    require_positive(flags, ["flow_length", "flow_hidden", "flow_bins", "flow_context"], integer=True)
    require_positive(flags, ["flow_tail_bound"])
    if flags.flow_bins * 1e-3 >= 1:
        raise UsageError(f"--flow_bins {flags.flow_bins} is too many (at most 999)")


def build(flags: argparse.Namespace, device: torch.device, target: GaussianMixture) -> Method:
    validate_flow_args(flags)
    generator = Generator(target.dim, flags.width, flags.depth).to(device)
    posterior = POSTERIORS[flags.flow_type].build(
        target.dim, flags.width, flags.depth, flow_length=flags.flow_length, context_features=flags.flow_context,
        flow_hidden=flags.flow_hidden, num_bins=flags.flow_bins, tail_bound=flags.flow_tail_bound,
        data_std=target.data_std if flags.precondition else None).to(device)
    return vardiu_method(generator, posterior, flags, device, target)


@exit_on_usage_error
def main(argv: list[str] | None = None):
    flags = parse_flags(build_parser(), argv, SCRIPT)
    return run_training(build, flags, SCRIPT, run_prefix=f"vardiu_{flags.values.flow_type.lower()}")


if __name__ == "__main__":
    main()
