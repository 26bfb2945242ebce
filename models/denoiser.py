"""EDM-style denoiser D(x, sigma) (Karras et al. 2022) and its deterministic Heun sampler.

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))
    c_skip = s_d^2 / (sigma^2 + s_d^2),  c_out = sigma s_d / sqrt(sigma^2 + s_d^2),
    c_in = 1 / sqrt(sigma^2 + s_d^2),    c_noise = log(sigma) / 4,        s_d = sigma_data

F is the project's MLP on (c_in x, c_noise). The diffused score it implies is (D(x, sigma) - x) / sigma^2.
``ReferenceDenoiser`` is the authors' teacher network (no preconditioning), for their teacher file.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from models.networks import MLP


class Denoiser(nn.Module):
    """A denoiser D(x, sigma): x [B, d], sigma [B] (or a scalar tensor) -> denoised x [B, d], and its score."""

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The diffused score the denoiser implies, (D(x, sigma) - x) / sigma^2. [B, d]."""
        return (self(x, sigma) - x) / sigma.to(x.dtype).reshape(-1, 1) ** 2


class EDMDenoiser(Denoiser):
    """D(x, sigma): x [B, d], sigma [B] (or a scalar tensor) -> denoised x [B, d]."""

    def __init__(self, dim: int = 2, width: int = 400, depth: int = 4, sigma_data: float = 10.0):
        super().__init__()
        self.dim, self.width, self.depth, self.sigma_data = dim, width, depth, float(sigma_data)
        self.net = MLP(dim + 1, dim, width, depth)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.to(x.dtype).reshape(-1, 1).expand(x.shape[0], 1)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data / (sigma**2 + sd2).sqrt()
        c_in = 1 / (sigma**2 + sd2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip * x + c_out * self.net(torch.cat([c_in * x, c_noise], dim=-1))


class ReferenceDenoiser(Denoiser):
    """The authors' teacher network (``ScoreNet`` of Leyangw/VarDiU at bf35f42, file ``edm_network.pth``):
    D(x, sigma) = F([x, sigma 1_d]), the project's MLP on x and sigma repeated d times (2d inputs), with no EDM
    preconditioning; their EDM loss (sigma_data 10) trained F to give the denoised point directly. Its state dict
    loads as is (``net.0`` ... ``net.8``). x [B, d], sigma [B] (or a scalar tensor) -> [B, d]."""

    def __init__(self, dim: int = 2, width: int = 400, depth: int = 4):
        super().__init__()
        self.dim, self.width, self.depth = dim, width, depth
        self.net = MLP(2 * dim, dim, width, depth)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.to(x.dtype).reshape(-1, 1).expand(x.shape[0], x.shape[-1])
        return self.net(torch.cat([x, sigma], dim=-1))


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """EDM's noise levels sigma_i = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho, then 0. [N+1]."""
    i = torch.arange(num_steps, dtype=torch.float64, device=device)
    sig = (sigma_max ** (1 / rho) + i / max(num_steps - 1, 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sig, torch.zeros(1, dtype=torch.float64, device=device)])


@torch.no_grad()
def heun_sample(denoiser: nn.Module, n: int, num_steps: int = 100, sigma_min: float = 0.1, sigma_max: float = 40.0,
                rho: float = 7.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """EDM's deterministic 2nd-order sampler (Algorithm 1): x ~ N(0, sigma_max^2 I), Heun steps down the Karras
    schedule, an Euler step for the last one (to sigma = 0). Returns [n, d]."""
    p = next(denoiser.parameters())
    sigmas = karras_sigmas(num_steps, sigma_min, sigma_max, rho).tolist()
    x = torch.randn(n, denoiser.dim, device=p.device, dtype=p.dtype, generator=generator) * sigmas[0]
    for s_cur, s_next in zip(sigmas[:-1], sigmas[1:]):
        d_cur = (x - denoiser(x, torch.full((n,), s_cur, device=x.device, dtype=x.dtype))) / s_cur
        x_next = x + (s_next - s_cur) * d_cur
        if s_next > 0:
            d_next = (x_next - denoiser(x_next, torch.full((n,), s_next, device=x.device, dtype=x.dtype))) / s_next
            x_next = x + (s_next - s_cur) * 0.5 * (d_cur + d_next)
        x = x_next
    return x


@dataclass(frozen=True)
class HeunSampler:
    """``heun_sample`` with fixed settings, called like the training loop's samplers: (denoiser, n, generator)."""

    num_steps: int = 100
    sigma_min: float = 0.1
    sigma_max: float = 40.0
    rho: float = 7.0

    def __call__(self, denoiser: nn.Module, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return heun_sample(denoiser, n, self.num_steps, self.sigma_min, self.sigma_max, self.rho, generator=generator)
