"""Diff-Instruct (integral KL), the paper's baseline: a student score network chases the generator's diffused
distribution by denoising score matching, and the generator follows the difference of the two scores.

    student:    min_psi  E lambda(sigma) |D_psi(x0 + sigma n, sigma) - x0|^2,   x0 = stopgrad(g_theta(z))
    generator:  grad_theta = E[ w(sigma) (s_psi(x_t, sigma) - s_d(x_t, sigma))^T dx0/dtheta ],  x_t = x0 + sigma eps

The generator gradient is unbiased only if s_psi is the student's exact diffused score; otherwise it is biased
by the error of s_psi (the bias VarDiU removes).
"""
from __future__ import annotations

import torch

from losses.vardiu import NoiseBatch, ScoreFn, sigma_weight


def diff_instruct_generator_loss(generator: torch.nn.Module, student_score: ScoreFn, noise: NoiseBatch,
                                 target_score: ScoreFn, weight: str, sigma_max: float) -> torch.Tensor:
    """Surrogate whose gradient is E[w (s_student - s_target)^T dx0/dtheta]; both scores are taken without
    gradient at x_t = g(z) + sigma eps. Returns a scalar."""
    x0 = generator(noise.z)
    sigma = noise.sigma
    with torch.no_grad():
        x_t = x0 + sigma.unsqueeze(-1) * noise.eps
        direction = student_score(x_t, sigma) - target_score(x_t, sigma)
    return (sigma_weight(sigma, weight, sigma_max) * (direction * x0).sum(-1)).mean()
