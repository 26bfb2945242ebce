"""Noise levels, noise batches and sigma weights, shared by every loss (VarDiU, Diff-Instruct, the denoisers).

Noise-level sampler (the reference repo's):  sigma = sigma_min + u^p (sigma_max - sigma_min),  u ~ U(0, 1).
The power p follows a schedule over iterations (``PowerSchedule``: start 0.1, +0.01 every 1000 iterations, capped
or not; ``ConstantPower`` for a fixed one). With p < 1 most mass sits near sigma_max; as p grows, training moves
to small sigma. p = 1 is uniform on [sigma_min, sigma_max]. ``spacing="log"`` draws log sigma uniformly instead
(equal mass per octave of noise; the power is then ignored), for denoisers that must be accurate at small sigma.

Weights are callables sigma [B] -> w [B] (``make_weight``), so that any weighting, not only powers of sigma, fits
the losses. Nothing here synchronises with the host.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

WeightFn = Callable[[torch.Tensor], torch.Tensor]
WEIGHT_POWERS = {"uniform": 0, "sigma": 1, "sigma2": 2, "sigma4": 4}


@dataclass(frozen=True)
class PowerSchedule:
    """p(iteration) = start + step * (iteration // interval), at most ``cap`` (None: uncapped)."""

    start: float = 0.1
    step: float = 0.01
    interval: int = 1000
    cap: Optional[float] = 2.0

    def __call__(self, iteration: int) -> float:
        p = self.start + self.step * (iteration // self.interval)
        return p if self.cap is None else min(p, self.cap)


@dataclass(frozen=True)
class ConstantPower:
    """p(iteration) = power for every iteration."""

    power: float

    def __call__(self, iteration: int) -> float:
        return self.power


def sample_sigma(n: int, sigma_min: float, sigma_max: float, power: torch.Tensor | float,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """sigma = sigma_min + u^p (sigma_max - sigma_min), u ~ U(0, 1). Returns [n]."""
    u = torch.rand(n, device=device, dtype=dtype)
    return sigma_min + u.pow(power) * (sigma_max - sigma_min)


def sample_log_uniform_sigma(n: int, sigma_min: float, sigma_max: float, device: torch.device | str = "cpu",
                             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """sigma = sigma_min (sigma_max / sigma_min)^u, u ~ U(0, 1): log sigma uniform, equal mass per octave. [n]."""
    u = torch.rand(n, device=device, dtype=dtype)
    return sigma_min * (sigma_max / sigma_min) ** u


SIGMA_SPACINGS = ("power", "log")


@dataclass
class NoiseBatch:
    """One batch of the student's joint: latents z [B, d], unit noise eps [B, d], noise levels sigma [B]."""

    z: torch.Tensor
    eps: torch.Tensor
    sigma: torch.Tensor


def draw_noise(batch_size: int, dim: int, sigma_min: float, sigma_max: float, power: torch.Tensor | float,
               antithetic: bool = True, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> NoiseBatch:
    """Draw (z, eps, sigma) for a batch. With ``antithetic`` the batch is B/2 pairs: rows i and i + B/2 share
    z and sigma and use eps and -eps (B must be even)."""
    n = batch_size // 2 if antithetic else batch_size
    z = torch.randn(n, dim, device=device, dtype=dtype)
    eps = torch.randn(n, dim, device=device, dtype=dtype)
    sigma = sample_sigma(n, sigma_min, sigma_max, power, device, dtype)
    if antithetic:
        z, eps, sigma = torch.cat([z, z]), torch.cat([eps, -eps]), torch.cat([sigma, sigma])
    return NoiseBatch(z, eps, sigma)


@dataclass(frozen=True)
class NoiseSampler:
    """The batch size and noise range of a training loss: ``draw(dim, power)`` gives a NoiseBatch,
    ``sigmas(power)`` noise levels alone [batch_size]. ``spacing``: "power" (``sample_sigma`` at the power) or
    "log" (``sample_log_uniform_sigma``; only for ``sigmas``, the power is ignored)."""

    batch_size: int
    sigma_min: float
    sigma_max: float
    antithetic: bool = True
    device: torch.device | str = "cpu"
    spacing: str = "power"

    def __post_init__(self):
        if self.spacing not in SIGMA_SPACINGS:
            raise ValueError(f"unknown sigma spacing {self.spacing!r}; expected one of {SIGMA_SPACINGS}")

    def draw(self, dim: int, power: torch.Tensor | float) -> NoiseBatch:
        return draw_noise(self.batch_size, dim, self.sigma_min, self.sigma_max, power, self.antithetic, self.device)

    def sigmas(self, power: torch.Tensor | float) -> torch.Tensor:
        if self.spacing == "log":
            return sample_log_uniform_sigma(self.batch_size, self.sigma_min, self.sigma_max, self.device)
        return sample_sigma(self.batch_size, self.sigma_min, self.sigma_max, power, self.device)


@dataclass(frozen=True)
class SigmaPowerWeight:
    """w(sigma) = (sigma / sigma_max)^k; k = 0 is the uniform weight 1."""

    k: int
    sigma_max: float

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(sigma) if self.k == 0 else (sigma / self.sigma_max) ** self.k


def make_weight(name: str, sigma_max: float) -> WeightFn:
    """The weight a --weight flag names: uniform, sigma, sigma2 or sigma4 (``WEIGHT_POWERS``)."""
    return SigmaPowerWeight(WEIGHT_POWERS[name], sigma_max)


def edm_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM's denoising weight lambda(sigma) = (sigma^2 + s_d^2) / (sigma s_d)^2, s_d = sigma_data. [B] -> [B]."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
