"""Sample-quality metrics (docs/method.md, section 6): log density, multi-bandwidth MMD, mode coverage."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from utils.targets import GaussianMixture

MMD_BANDWIDTHS = (0.25, 0.5, 1.0, 2.0, 4.0)


def mean_log_density(samples: torch.Tensor, target: GaussianMixture) -> torch.Tensor:
    """Mean of log p_target(x) over samples [N, d] -> scalar tensor."""
    return target.log_prob(samples).mean()


def _kernel_sum(d2: torch.Tensor, bandwidths: Sequence[float]) -> torch.Tensor:
    """sum_h exp(-d2 / (2 h^2)) for a block of squared distances, overwriting d2.

    With bandwidths in descending order, exp(-d2 / (2 h'^2)) = exp(-d2 / (2 h^2))^((h / h')^2); when that ratio is
    a power of two the next kernel is a few in-place squarings of the previous one instead of a new exp (about
    4x faster on the CPU for the default bandwidths, same float32 accuracy).
    """
    hs = sorted(bandwidths, reverse=True)
    e = d2.mul_(-0.5 / hs[0] ** 2).exp_()
    acc = e.clone()
    for h_prev, h in zip(hs, hs[1:]):
        squarings = math.log2((h_prev / h) ** 2)
        if squarings.is_integer() and squarings >= 0:
            for _ in range(int(squarings)):
                e.mul_(e)
        else:
            e = torch.exp(torch.log(e) * (h_prev / h) ** 2)
        acc.add_(e)
    return acc


def mean_kernel(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = MMD_BANDWIDTHS,
                chunk: int | None = None) -> torch.Tensor:
    """mean_{i,j} k(x_i, y_j) with k(a, b) = mean_h exp(-|a - b|^2 / (2 h^2)). x [N, d], y [M, d] -> scalar.

    Computed in row chunks (default 256 rows on the CPU, 2048 on a GPU, where fewer launches matter more than
    buffer size); accumulated in float64.
    """
    chunk = chunk or (2048 if x.is_cuda else 256)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        # Squared distances by direct differences: exact and bit-reproducible (a BLAS x @ y.T form can round
        # differently from run to run), which keeps resumed runs' metrics identical to uninterrupted ones.
        d2 = (x[start:start + chunk, None, :] - y[None]).pow_(2).sum(-1)
        total += _kernel_sum(d2, bandwidths).sum(dtype=torch.float64)
    return total / (len(bandwidths) * x.shape[0] * y.shape[0])


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = MMD_BANDWIDTHS,
        kyy: torch.Tensor | None = None) -> torch.Tensor:
    """Biased (V-statistic) squared MMD between x [N, d] and y [M, d], Gaussian kernel averaged over bandwidths.

    MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y).  ``kyy`` may pass a cached mean k(y, y').
    """
    if kyy is None:
        kyy = mean_kernel(y, y, bandwidths)
    value = mean_kernel(x, x, bandwidths) + kyy - 2 * mean_kernel(x, y, bandwidths)
    return value.clamp_min(0)


def mode_coverage(samples: torch.Tensor, target: GaussianMixture, radius: float = 3.0,
                  min_share: float = 0.2) -> tuple[int, float]:
    """How many modes hold a fair share of the samples, and the fraction of samples near any mode.

    A sample belongs to its nearest mode if it lies within ``radius`` component stds of it. A mode is covered
    when it holds at least ``min_share`` times the N / K samples it would hold under the target.
    Returns (modes covered, fraction of samples within ``radius`` stds of a mode).
    """
    idx, dist = target.nearest_mode(samples)
    near = dist <= radius
    counts = torch.bincount(idx[near], minlength=target.num_modes)
    fair = min_share * samples.shape[0] / target.num_modes
    return int((counts >= fair).sum()), float(near.float().mean())


class SampleEvaluator:
    """Evaluates generator samples against a fixed set of target samples (drawn once, seeded).

    The target-target kernel mean is cached, so each evaluation costs two kernel passes, not three.
    """

    def __init__(self, target: GaussianMixture, num_samples: int, seed: int = 12345):
        self.target = target
        self.reference = target.sample(num_samples, generator=torch.Generator().manual_seed(seed))
        self.kyy = mean_kernel(self.reference, self.reference)

    @torch.no_grad()
    def __call__(self, samples: torch.Tensor) -> dict[str, float]:
        """Metrics of samples [N, d]: logpd, mmd, log_mmd, modes, near_mode."""
        samples = samples.to(self.reference.device).float()
        logpd = float(mean_log_density(samples, self.target))
        value = float(mmd(samples, self.reference, kyy=self.kyy))
        modes, near = mode_coverage(samples, self.target)
        return {"logpd": logpd, "mmd": value, "log_mmd": math.log(value) if value > 0 else float("-inf"),
                "modes": modes, "near_mode": near}
