"""experiments/bound_gap.py against a linear generator, whose posterior and diffused density are Gaussian in closed
form: x0 = s z, x_t = x0 + sigma eps  =>  p(z | x_t) = N(s x_t / (s^2 + sigma^2), sigma^2 / (s^2 + sigma^2) I) and
grad log p_theta(x_t) = -x_t / (s^2 + sigma^2)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from experiments.bound_gap import band_statistics
from models.networks import diagonal_normal_log_prob

SCALE, SIGMA, DIM = 3.0, 2.0, 2


class LinearGenerator(nn.Module):
    dim = DIM

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return SCALE * z


class ScaledExactPosterior(nn.Module):
    """The exact posterior of LinearGenerator with its std multiplied by ``std_factor`` (1: exact)."""

    def __init__(self, std_factor: float = 1.0):
        super().__init__()
        self.std_factor = std_factor

    def mean_std(self, x_t: torch.Tensor, sigma: torch.Tensor):
        v = SCALE ** 2 + sigma.unsqueeze(-1) ** 2
        return SCALE * x_t / v, self.std_factor * sigma.unsqueeze(-1) / v.sqrt()

    def log_prob(self, z, x_t, sigma):
        mean, std = self.mean_std(x_t, sigma)
        return diagonal_normal_log_prob(z, mean, std)

    def sample(self, x_t, sigma, generator=None):
        mean, std = self.mean_std(x_t, sigma)
        return mean + std * torch.randn(mean.shape, generator=generator)


def model_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return -x / (SCALE ** 2 + sigma.unsqueeze(-1) ** 2)


def statistics(std_factor: float) -> dict:
    torch.manual_seed(0)
    return band_statistics(LinearGenerator(), ScaledExactPosterior(std_factor), model_score, SIGMA, samples=400,
                           proposals=4096, chunk=50, device=torch.device("cpu"))


def test_exact_posterior_has_no_gap_and_the_model_score_is_exact():
    r = statistics(1.0)
    assert abs(r["gap"]) < 0.05 and abs(r["reverse_gap"]) < 1e-4
    assert r["ess"] == pytest.approx(1.0, abs=1e-4)
    # the target here is the model itself: the KL gradient vanishes up to the self-normalised estimate's noise
    # (about s * posterior std / (sigma^2 sqrt(K)) = 0.0065 per coordinate) and the model score is the closed form
    assert r["kl_grad"] < 0.05 * r["model_score"]
    expected_norm = math.sqrt(math.pi / 2) / math.sqrt(SCALE ** 2 + SIGMA ** 2)  # E|x| / v for x ~ N(0, v I_2)
    assert r["model_score"] == pytest.approx(expected_norm, rel=0.05)
    assert r["gap_grad"] < 0.02


@pytest.mark.parametrize("factor", [1.5, 3.0])
def test_too_wide_posterior_gap_is_the_gaussian_kl(factor: float):
    """KL(N(m, s^2) || N(m, c^2 s^2)) = log c + 1 / (2 c^2) - 1/2 per dimension."""
    r = statistics(factor)
    kl = DIM * (math.log(factor) + 1 / (2 * factor ** 2) - 0.5)
    assert r["gap"] == pytest.approx(kl, rel=0.1, abs=0.02)
    assert r["ess"] < 0.95
    # the proposals still weight to the exact posterior: the self-normalised model score stays close
    assert r["kl_grad"] < 0.1 * r["model_score"]
