"""Networks: the MLP trunk, the one-step generator and the Gaussian posterior q(z | x_t, sigma).

Reference sizes (DESIGN.md section 3): width 400, 4 hidden layers, SiLU.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


class MLP(nn.Sequential):
    """in_dim -> [Linear(width) -> SiLU] x depth -> Linear(out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, width: int = 400, depth: int = 4):
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.SiLU()]
            d = width
        layers.append(nn.Linear(d, out_dim))
        super().__init__(*layers)


class Generator(nn.Module):
    """One-step generator x0 = g_theta(z), z ~ N(0, I_d). z [B, d] -> x0 [B, d]."""

    def __init__(self, dim: int = 2, width: int = 400, depth: int = 4):
        super().__init__()
        self.dim = dim
        self.net = MLP(dim, dim, width, depth)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n generator samples [n, d] (draws z from the given torch.Generator, or the global one)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.dim, device=device, generator=generator)
        return self(z)


def posterior_context(x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Network input for a posterior: concat(x_t [B, d], sigma [B, 1]) -> [B, d + 1]."""
    return torch.cat([x_t, sigma.reshape(-1, 1).to(x_t.dtype)], dim=-1)


def diagonal_normal_log_prob(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag(std^2)) summed over the last dim, as a plain formula (no argument validation,
    hence no host synchronisation). All [B, d] -> [B]."""
    return (-0.5 * ((z - mean) / std) ** 2 - torch.log(std) - 0.5 * LOG_2PI).sum(-1)


class GaussianPosterior(nn.Module):
    """q_phi(z | x_t, sigma) = N(mu(x_t, sigma), diag(softplus(rho(x_t, sigma)) * sigma)^2).

    The standard deviation is proportional to sigma, so the posterior narrows as the noise level falls.
    Shapes: z, x_t [B, d]; sigma [B] -> log q [B].
    """

    def __init__(self, dim: int = 2, width: int = 400, depth: int = 4):
        super().__init__()
        self.dim = dim
        self.net = MLP(dim + 1, 2 * dim, width, depth)

    def mean_std(self, x_t: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation, each [B, d]."""
        mean, rho = self.net(posterior_context(x_t, sigma)).chunk(2, dim=-1)
        return mean, F.softplus(rho) * sigma.reshape(-1, 1)

    def log_prob(self, z: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log q_phi(z | x_t, sigma) [B]."""
        mean, std = self.mean_std(x_t, sigma)
        return diagonal_normal_log_prob(z, mean, std)

    def sample(self, x_t: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One z [B, d] per context row."""
        mean, std = self.mean_std(x_t, sigma)
        return mean + std * torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
