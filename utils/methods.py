"""Flags -> training parts, shared by the entry scripts: the one place that reads the flags namespace on a build.
Every part it makes (sampler, schedule, score, losses) receives explicit values."""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn

from losses.noise import NoiseSampler, PowerSchedule, make_weight
from losses.vardiu import ScoreFn, VarDiULoss
from utils.errors import UsageError
from utils.step import Method, Update
from utils.targets import GaussianMixture
from utils.teachers import target_score, teacher_notes, teacher_training_range, use_control_variate


def power_schedule(flags: argparse.Namespace) -> PowerSchedule:
    """--power_start, --power_step every --power_interval iterations, capped at --power unless --power_uncapped."""
    return PowerSchedule(flags.power_start, flags.power_step, flags.power_interval,
                         None if flags.power_uncapped else flags.power)


def noise_sampler(flags: argparse.Namespace, device: torch.device) -> NoiseSampler:
    """--batch_size samples (antithetic pairs unless --no_antithetic) with sigma in [--sigma_min, --sigma_max]."""
    return NoiseSampler(flags.batch_size, flags.sigma_min, flags.sigma_max, not flags.no_antithetic, device)


def score_source(flags: argparse.Namespace, target: GaussianMixture, device: torch.device) -> ScoreFn:
    """The score s_d the generator follows, as --true_score / --teacher / --teacher_ckpt / --kde_samples say."""
    return target_score(target, device, flags.true_score, flags.teacher, flags.teacher_ckpt, flags.kde_samples,
                        flags.seed)


def vardiu_method(generator: nn.Module, posterior: nn.Module, flags: argparse.Namespace, device: torch.device,
                  target: GaussianMixture) -> Method:
    """VarDiU: one update of generator and posterior per iteration on the surrogate of ``losses.vardiu``."""
    if flags.iw_samples and not hasattr(posterior, "log_prob_and_draws"):
        raise UsageError(f"--iw_samples needs a posterior with log_prob_and_draws(z, x_t, sigma, k) (utils/registry.py"
                         f" says what it returns); {type(posterior).__name__} has none: give it one, or drop "
                         f"--iw_samples")
    if flags.iw_samples and not getattr(posterior, "reparameterised_draws", True):
        raise UsageError("--iw_samples needs reparameterised posterior draws, and this posterior's carry no usable "
                         "gradient (the planar flow, PLF, inverts by bisection); use --flow_type NSF or "
                         "train_upper_diffusion.py")
    loss = VarDiULoss(noise_sampler(flags, device), make_weight(flags.weight, flags.sigma_max),
                      score_source(flags, target, device), target.log_prob,
                      use_control_variate(flags.control_variate, flags.true_score), flags.weight_reduction,
                      flags.iw_samples, flags.prior_proposals_sigma, flags.prior_proposals_grad)
    return Method(networks={"generator": generator, "posterior": posterior},
                  learning_rates={"generator": flags.lr, "posterior": flags.posterior_lr or flags.lr},
                  updates=[Update(loss, ("generator", "posterior"), objective="loss")],
                  power_schedule=power_schedule(flags), notes=distillation_notes(flags, target))


def distillation_notes(flags: argparse.Namespace, target: GaussianMixture) -> tuple[str, ...]:
    """What a distillation run says once at its start about its score source (``utils.teachers.teacher_notes``)."""
    trained = None if flags.true_score else teacher_training_range(flags.teacher, flags.teacher_ckpt, target)
    return teacher_notes(flags.true_score, flags.sigma_min, flags.sigma_max, trained)
