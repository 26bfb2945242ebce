"""Denoising score matching with EDM weighting: trains the teacher and Diff-Instruct's student score.

    L = E_{x0, sigma, n} lambda(sigma) |D(x0 + sigma n, sigma) - x0|^2,   lambda = (sigma^2 + s_d^2) / (sigma s_d)^2
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from losses.noise import NoiseSampler, edm_weight


def edm_denoiser_loss(denoiser: nn.Module, x0: torch.Tensor, sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM-weighted denoising loss of clean samples x0 [B, d] at noise levels sigma [B]."""
    x_t = x0 + sigma[:, None] * torch.randn_like(x0)
    err = (denoiser(x_t, sigma) - x0).pow(2).sum(-1)
    return (edm_weight(sigma, sigma_data) * err).mean()


@dataclass
class DenoiserLoss:
    """The training loop's loss for a teacher: ``loss_fn(nets, power) -> {"loss"}``, the EDM denoising loss of
    ``nets["denoiser"]`` on a random minibatch of a fixed training set ``data`` [N, d], with noise levels from
    ``noise`` at the sigma-sampler power (the teacher script holds it at 1: sigma uniform on its range)."""

    data: torch.Tensor
    noise: NoiseSampler
    sigma_data: float
    terms: ClassVar[tuple[str, ...]] = ("loss",)

    def __call__(self, nets: dict[str, nn.Module], power: torch.Tensor) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.data.shape[0], (self.noise.batch_size,), device=self.data.device)
        return {"loss": edm_denoiser_loss(nets["denoiser"], self.data[idx], self.noise.sigmas(power), self.sigma_data)}
