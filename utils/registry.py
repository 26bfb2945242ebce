"""Targets, posteriors and methods by name: the one place where a new one is added.

    TARGETS     name -> constructor of the target (a ``GaussianMixture``): ``--target``
    POSTERIORS  name -> the posterior's class and its options: ``train_upper_diffusion.py --posterior``,
                ``train_upper_flow.py --flow_type``
    METHODS     name -> the entry script that trains it and the flags that select it there (recipes, benchmarks
                and tests build their commands and trainers from this table)

A posterior is any ``nn.Module`` with

    log_prob(z [B, d], x_t [B, d], sigma [B]) -> [B]      log q_phi(z | x_t, sigma), differentiable in z, x_t, phi
    sample(x_t [B, d], sigma [B], generator=None) -> [B, d]

and, for ``--iw_samples``, ``log_prob_and_draws(z, x_t, sigma, k) -> (log q(z) [B], k draws [k, B, d], their
log q [k, B])`` with draws reparameterised (differentiable in x_t), also as ``forward``
(``losses.vardiu.importance_log_weights``); a posterior whose draws are not says ``reparameterised_draws = False``,

built as ``make(dim, width, depth, **options)``. Adding one is one entry here (see the README's example).
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from models.flows import FlowPosterior
from models.networks import GaussianPosterior
from utils.errors import UsageError
from utils.step import Trainer, build_trainer
from utils.targets import GaussianMixture, mog9, mog40

TARGETS: dict[str, Callable[..., GaussianMixture]] = {"mog40": mog40, "mog9": mog9}  # name -> make(dim)


def make_target(name: str, dim: int = 2) -> GaussianMixture:
    """The target called ``name`` in TARGETS, in ``dim`` dimensions (a target that has no such dimension is a
    UsageError)."""
    try:
        return TARGETS[name](dim)
    except ValueError as err:
        raise UsageError(f"--target {name} --dim {dim}: {err}") from None


@dataclass(frozen=True)
class Posterior:
    """How to build a posterior: ``make(dim, width, depth, **options)``; ``options`` maps each option to its
    default (a script that exposes an option as a flag passes the flag's value instead)."""

    make: Callable[..., nn.Module]
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, dim: int, width: int, depth: int, **given: Any) -> nn.Module:
        return self.make(dim, width=width, depth=depth,
                         **{name: given.get(name, default) for name, default in self.options.items()})


# The flow posteriors' options: the flags of train_upper_flow.py of the same names, with their defaults.
# data_std: the target's spread when --precondition scales the posterior's inputs and outputs (None: off).
FLOW_OPTIONS = {"flow_length": 4, "context_features": 32, "flow_hidden": 64, "num_bins": 8, "tail_bound": 5.0,
                "data_std": None}

POSTERIORS: dict[str, Posterior] = {
    "gaussian": Posterior(GaussianPosterior, {"data_std": None}),
    "NSF": Posterior(functools.partial(FlowPosterior, flow_type="NSF"), FLOW_OPTIONS),
    "PLF": Posterior(functools.partial(FlowPosterior, flow_type="PLF"), FLOW_OPTIONS),
}


@dataclass(frozen=True)
class MethodEntry:
    """A method: the entry script that trains it, the flags that select it there, and its label in figures."""

    script: str
    flags: tuple[str, ...]
    label: str


METHODS: dict[str, MethodEntry] = {
    "vardiu_gaussian": MethodEntry("train_upper_diffusion.py", (), "VarDiU Gaussian"),
    "vardiu_nsf": MethodEntry("train_upper_flow.py", ("--flow_type", "NSF", "--flow_length", "4"), "VarDiU NSF"),
    "vardiu_plf": MethodEntry("train_upper_flow.py", ("--flow_type", "PLF", "--flow_length", "4"), "VarDiU PLF"),
    "diff_instruct": MethodEntry("train_diff_instruct.py", (), "Diff-Instruct"),
    "teacher": MethodEntry("train_teacher.py", (), "EDM teacher"),
}


def entry_script(script: str):
    """The entry script ``script`` (e.g. "train_upper_flow.py") as a module: its ``build_parser`` and ``build``."""
    return importlib.import_module(Path(script).stem)


def method_trainer(method: str, flags: list[str], seeds: list[int], device: torch.device) -> Trainer:
    """The Trainer that ``method``'s entry script builds for ``flags`` (after the method's own flags) and ``seeds``
    on ``device``: what benchmarks and tests time and check, built exactly as a training run builds it."""
    entry = METHODS[method]
    module = entry_script(entry.script)
    values = module.build_parser().parse_args([*entry.flags, *flags, "--device", str(device)])
    return build_trainer(module.build, values, seeds, device, make_target(values.target, values.dim).to(device))
