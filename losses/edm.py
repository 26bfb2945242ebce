"""Denoising score matching with EDM weighting: trains the teacher and Diff-Instruct's student score.

    L = E_{x0, sigma, n} lambda(sigma) |D(x0 + sigma n, sigma) - x0|^2,   lambda = (sigma^2 + s_d^2) / (sigma s_d)^2
"""
from __future__ import annotations

import torch
import torch.nn as nn


def edm_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + s_d^2) / (sigma s_d)^2. [B] -> [B]."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_denoiser_loss(denoiser: nn.Module, x0: torch.Tensor, sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM-weighted denoising loss of clean samples x0 [B, d] at noise levels sigma [B]."""
    x_t = x0 + sigma[:, None] * torch.randn_like(x0)
    err = (denoiser(x_t, sigma) - x0).pow(2).sum(-1)
    return (edm_weight(sigma, sigma_data) * err).mean()
