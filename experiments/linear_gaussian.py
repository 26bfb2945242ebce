"""A linear-Gaussian distillation problem where every quantity of docs/method.md (sections 1-2) is closed-form.

Generator x0 = a * z + b (diagonal, z ~ N(0, I_d)); target N(m, diag(s^2)). At noise level sigma:

    p_theta(x_t | sigma) = N(b, a^2 + sigma^2),        p_d(x_t | sigma) = N(m, s^2 + sigma^2)
    p_theta(z | x_t)     = N(a (x_t - b) / (a^2 + sigma^2), sigma^2 / (a^2 + sigma^2))      (per coordinate)

The diffusive KL integrates KL(p_theta || p_d) against the sigma sampler sigma = sigma_min + u^p (sigma_max -
sigma_min), u ~ U(0, 1), with weights w(sigma), by Gauss-Legendre quadrature in u. The exact posterior has
std proportional to sigma only through a (x_t-independent) factor, so it lies in the project's Gaussian family.
"""
from __future__ import annotations

import math

import numpy as np
import torch



def closed_form_weight(sigma: torch.Tensor, weight: str, sigma_max: float) -> torch.Tensor:
    """w(sigma) written out for the closed forms, independently of the project's ``losses.noise``, so that a wrong
    weight there cannot pass the tests that compare the two."""
    exponent = {"uniform": 0.0, "sigma": 1.0, "sigma2": 2.0, "sigma4": 4.0}[weight]
    return torch.pow(sigma / sigma_max, exponent)


class DiagonalLinearGenerator(torch.nn.Module):
    """x0 = a * z + b with trainable a, b [d] (float64)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.dim = len(a)
        self.a = torch.nn.Parameter(a.clone().double())
        self.b = torch.nn.Parameter(b.clone().double())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.a * z + self.b

    def draw(self, z: torch.Tensor) -> torch.Tensor:
        """The generator as used for sampling (models.networks.Generator's protocol): the same function."""
        return self(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self(torch.randn(n, self.dim, dtype=torch.float64, generator=generator))


class LinearGaussianPosterior(torch.nn.Module):
    """q(z | x_t, sigma) = N(alpha * mu*(x_t) + beta, kappa * v*) around the exact posterior N(mu*, v*) of the
    generator with parameters (a0, b0), which are held fixed (no gradient reaches them). alpha = kappa = 1 and
    beta = 0 give the exact posterior. alpha, beta, kappa are the posterior's trainable parameters (scalars)."""

    def __init__(self, a0: torch.Tensor, b0: torch.Tensor, alpha: float = 1.0, beta: float = 0.0,
                 kappa: float = 1.0):
        super().__init__()
        self.a0, self.b0 = a0.detach().clone().double(), b0.detach().clone().double()
        self.alpha, self.beta, self.kappa = (torch.nn.Parameter(torch.tensor(v, dtype=torch.float64))
                                             for v in (alpha, beta, kappa))

    def mean_var(self, x_t: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s2 = sigma.reshape(-1, 1) ** 2
        mean = self.alpha * self.a0 * (x_t - self.b0) / (self.a0**2 + s2) + self.beta
        return mean, self.kappa * s2 / (self.a0**2 + s2)

    def log_prob(self, z: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        mean, var = self.mean_var(x_t, sigma)
        return (-0.5 * (z - mean) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)).sum(-1)

    def log_prob_and_draws(self, z: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor, k: int):
        """log q(z | x_t) [B] and k reparameterised draws z' [k, B, d] with their log q [k, B] (the posteriors'
        protocol for ``--iw_samples``)."""
        mean, var = self.mean_var(x_t, sigma)
        draws = mean + var.sqrt() * torch.randn(k, *mean.shape, dtype=mean.dtype, device=mean.device)
        return self.log_prob(z, x_t, sigma), draws, self.log_prob(draws, x_t, sigma)  # broadcasts: [k, B]

    forward = log_prob_and_draws

    def expected_gap(self, a: torch.Tensor, b: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """E_{x_t ~ p_theta} KL(p_theta(z | x_t) || q(z | x_t)) for the generator (a, b), closed form, at each
        sigma [S] -> [S]. Differentiable in (a, b) and in the posterior's parameters."""
        s2 = sigma.reshape(-1, 1) ** 2
        v_star, v_q = s2 / (a**2 + s2), self.kappa * s2 / (self.a0**2 + s2)
        c = self.alpha * self.a0 / (self.a0**2 + s2)
        # mu* - mu_q = (a / (a^2 + s2) - c)(x_t - b) - c (b - b0) - beta,  x_t - b ~ N(0, a^2 + s2)
        mean_sq = (a / (a**2 + s2) - c) ** 2 * (a**2 + s2) + (c * (b - self.b0) + self.beta) ** 2
        return (0.5 * (v_star / v_q + mean_sq / v_q - 1 + torch.log(v_q / v_star))).sum(-1)


def gaussian_score(mean: torch.Tensor, std: torch.Tensor):
    """Diffused score of N(mean, diag(std^2)): (x, sigma) -> -(x - mean) / (std^2 + sigma^2)."""
    return lambda x, sigma: -(x - mean) / (std**2 + sigma.reshape(-1, 1) ** 2)


def gaussian_log_prob(mean: torch.Tensor, std: torch.Tensor):
    """Diffused log density of N(mean, diag(std^2)): (x, sigma) -> [B]."""
    def log_prob(x, sigma):
        var = std**2 + sigma.reshape(-1, 1) ** 2
        return (-0.5 * (x - mean) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)).sum(-1)
    return log_prob


def sigma_quadrature(sigma_min: float, sigma_max: float, power: float, n: int = 64
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes sigma_j and probabilities pi_j (summing to 1) of sigma = sigma_min + u^p (sigma_max - sigma_min)."""
    x, w = np.polynomial.legendre.leggauss(n)
    u = torch.from_numpy((x + 1) / 2)
    return sigma_min + u**power * (sigma_max - sigma_min), torch.from_numpy(w / 2)


def gaussian_kl(mean_p, var_p, mean_q, var_q) -> torch.Tensor:
    """KL(N(mean_p, var_p) || N(mean_q, var_q)) for diagonal Gaussians, summed over the last dim."""
    return 0.5 * (var_p / var_q + (mean_p - mean_q) ** 2 / var_q - 1 + torch.log(var_q / var_p)).sum(-1)


def diffusive_kl(a, b, m, s, sigma_min, sigma_max, power, weight, posterior=None, n: int = 64) -> torch.Tensor:
    """E_sigma w(sigma) KL(p_theta(. | sigma) || p_d(. | sigma)), plus w(sigma) times the posterior's expected gap
    when ``posterior`` is given (then it is the VarDiU bound U). Differentiable in (a, b)."""
    sigmas, probs = sigma_quadrature(sigma_min, sigma_max, power, n)
    s2 = sigmas[:, None] ** 2
    kl = gaussian_kl(b, a**2 + s2, m, s**2 + s2)
    if posterior is not None:
        kl = kl + posterior.expected_gap(a, b, sigmas)
    return (probs * closed_form_weight(sigmas, weight, sigma_max) * kl).sum()


def diff_instruct_bias(a, b, a_s, b_s, sigma_min, sigma_max, power, weight, n: int = 64) -> torch.Tensor:
    """The predicted error of Diff-Instruct's gradient when its student score is the exact diffused score of the
    generator (a_s, b_s) instead of (a, b): E w (s_student - s_theta)^T dx0/dtheta, returned as [2, d] (rows:
    d/da, d/db). With s(x) = -(x - b) / (a^2 + sigma^2), s_student - s_theta = k x_t + c is linear, so
    E[(k x_t + c) z] = k a and E[k x_t + c] = k b + c."""
    sigmas, probs = sigma_quadrature(sigma_min, sigma_max, power, n)
    s2 = sigmas[:, None] ** 2
    k = 1 / (a**2 + s2) - 1 / (a_s**2 + s2)
    c = b_s / (a_s**2 + s2) - b / (a**2 + s2)
    pw = (probs * closed_form_weight(sigmas, weight, sigma_max))[:, None]
    return torch.stack([(pw * k * a).sum(0), (pw * (k * b + c)).sum(0)])
