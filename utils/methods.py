"""Flags -> training parts shared by the entry scripts: the sigma sampler, its power schedule, and the VarDiU method
(the same for the Gaussian and the flow posterior; only the posterior network differs)."""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn

from losses.noise import NoiseSampler, PowerSchedule, make_weight
from losses.vardiu import VarDiULoss
from utils.targets import GaussianMixture
from utils.teachers import target_score, teacher_notes, use_control_variate
from utils.trainer import Method, Update


def power_schedule(flags: argparse.Namespace) -> PowerSchedule:
    """--power_start, --power_step every --power_interval iterations, capped at --power unless --power_uncapped."""
    return PowerSchedule(flags.power_start, flags.power_step, flags.power_interval,
                         None if flags.power_uncapped else flags.power)


def noise_sampler(flags: argparse.Namespace, device: torch.device) -> NoiseSampler:
    """--batch_size samples (antithetic pairs unless --no_antithetic) with sigma in [--sigma_min, --sigma_max]."""
    return NoiseSampler(flags.batch_size, flags.sigma_min, flags.sigma_max, not flags.no_antithetic, device)


def vardiu_method(generator: nn.Module, posterior: nn.Module, flags: argparse.Namespace, device: torch.device,
                  target: GaussianMixture) -> Method:
    """VarDiU: one update of generator and posterior per iteration on the surrogate of ``losses.vardiu``."""
    loss = VarDiULoss(noise_sampler(flags, device), make_weight(flags.weight, flags.sigma_max),
                      target_score(flags, target, device), target.log_prob, use_control_variate(flags),
                      flags.weight_reduction)
    return Method(networks={"generator": generator, "posterior": posterior},
                  learning_rates={"generator": flags.lr, "posterior": flags.posterior_lr or flags.lr},
                  updates=[Update(loss, ("generator", "posterior"))], power_schedule=power_schedule(flags),
                  notes=teacher_notes(flags))
