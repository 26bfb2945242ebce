"""Diff-Instruct (integral KL), the paper's baseline: a student score network chases the generator's diffused
distribution by denoising score matching, and the generator follows the difference of the two scores.

    student:    min_psi  E lambda(sigma) |D_psi(x0 + sigma n, sigma) - x0|^2,   x0 = stopgrad(g_theta(z))
    generator:  grad_theta = E[ w(sigma) (s_psi(x_t, sigma) - s_d(x_t, sigma))^T dx0/dtheta ],  x_t = x0 + sigma eps

The generator gradient is unbiased only if s_psi is the student's exact diffused score; otherwise it is biased
by the error of s_psi (the bias VarDiU removes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from losses.edm import edm_denoiser_loss
from losses.noise import NoiseBatch, NoiseSampler, WeightFn
from losses.vardiu import ScoreFn


def diff_instruct_generator_loss(generator: nn.Module, student_score: ScoreFn, noise: NoiseBatch,
                                 target_score: ScoreFn, weight: WeightFn) -> torch.Tensor:
    """Surrogate whose gradient is E[w (s_student - s_target)^T dx0/dtheta]; both scores are taken without
    gradient at x_t = g(z) + sigma eps. Returns a scalar."""
    x0 = generator(noise.z)
    sigma = noise.sigma
    with torch.no_grad():
        x_t = x0 + sigma.unsqueeze(-1) * noise.eps
        direction = student_score(x_t, sigma) - target_score(x_t, sigma)
    return (weight(sigma) * (direction * x0).sum(-1)).mean()


@dataclass
class StudentScoreLoss:
    """``loss_fn(nets, power) -> {"score_loss"}``: the student denoiser's EDM loss on fresh generator samples
    (drawn without gradient through ``generator.draw``, the generator as used for sampling)."""

    noise: NoiseSampler
    sigma_data: float
    terms: ClassVar[tuple[str, ...]] = ("score_loss",)

    def __call__(self, nets: dict[str, nn.Module], power: torch.Tensor) -> dict[str, torch.Tensor]:
        generator = nets["generator"]
        with torch.no_grad():
            x0 = generator.draw(torch.randn(self.noise.batch_size, generator.dim, device=self.noise.device))
        return {"score_loss": edm_denoiser_loss(nets["student"], x0, self.noise.sigmas(power), self.sigma_data)}


@dataclass
class GeneratorLoss:
    """``loss_fn(nets, power) -> {"loss"}``: the generator surrogate along (student score - target score)."""

    noise: NoiseSampler
    weight: WeightFn
    target_score: ScoreFn
    terms: ClassVar[tuple[str, ...]] = ("loss",)

    def __call__(self, nets: dict[str, nn.Module], power: torch.Tensor) -> dict[str, torch.Tensor]:
        generator = nets["generator"]
        return {"loss": diff_instruct_generator_loss(generator, nets["student"].score,
                                                     self.noise.draw(generator.dim, power), self.target_score,
                                                     self.weight)}
