"""Target distributions: isotropic Gaussian mixtures (MoG40, MoG9) and their diffused scores.

A target is an equal-weight mixture of K isotropic Gaussians in d dimensions,

    p(x) = (1/K) sum_k N(x; m_k, s^2 I).

Under variance-exploding noise x_t = x + sigma * eps its diffused marginal is the same mixture with
variance s^2 + sigma^2, so the log density and the score ("true score") are analytic at every sigma:

    log p(x_t | sigma) = logsumexp_k [ -|x_t - m_k|^2 / (2 v) ] - log K - (d/2) log(2 pi v),  v = s^2 + sigma^2
    grad log p(x_t | sigma) = sum_k r_k(x_t) (m_k - x_t) / v,  r = softmax_k(-|x_t - m_k|^2 / (2 v)).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

_DATA = Path(__file__).resolve().parent / "data"


def mog40_means_from_seed(dim: int = 2) -> torch.Tensor:
    """The MoG40 means as first constructed (FAB / DiKL): uniform in [-40, 40]^dim from a torch generator seeded 0
    ([40, dim]; the same construction with ``dim`` columns in any dimension)."""
    g = torch.Generator().manual_seed(0)
    return (torch.rand(40, dim, generator=g) - 0.5) * 2 * 40


def mog40_means() -> torch.Tensor:
    """The 40 MoG40 means as stored in the repo (``utils/data/mog40_means.txt``), shape [40, 2], float32."""
    return torch.from_numpy(np.loadtxt(_DATA / "mog40_means.txt", dtype=np.float32))


class GaussianMixture:
    """Equal-weight isotropic Gaussian mixture with analytic diffused log density and score.

    Args:
        means: [K, d] component means.
        std: per-coordinate standard deviation s of every component.
        name: short name used in run folders and plots.
    """

    def __init__(self, means: torch.Tensor, std: float, name: str = "mixture"):
        self.means = means.float()
        self.std = float(std)
        self.name = name

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_modes(self) -> int:
        return self.means.shape[0]

    @property
    def data_std(self) -> float:
        """The target's spread: sqrt of the per-coordinate variance averaged over coordinates,
        sqrt(mean_j Var(m_kj) + s^2), the scale preconditioned networks divide by."""
        return float((self.means.double().var(0, unbiased=False).mean() + self.std ** 2).sqrt())

    def to(self, device: torch.device | str) -> "GaussianMixture":
        self.means = self.means.to(device)
        return self

    def _sq_dist(self, x: torch.Tensor) -> torch.Tensor:
        """|x - m_k|^2 for x [N, d] -> [N, K] (direct difference: exact and stable for any scale)."""
        means = self.means.to(x.dtype)
        return (x.unsqueeze(-2) - means).pow(2).sum(-1)

    def _variance(self, sigma: torch.Tensor | float | None) -> torch.Tensor | float:
        """v = s^2 + sigma^2: a float for a scalar sigma, else a [N, 1] tensor. (No torch.as_tensor of a Python
        number: on CUDA that is a host-to-device copy, i.e. a synchronisation inside the training step.)"""
        if sigma is None:
            return self.std**2
        if not torch.is_tensor(sigma):
            return self.std**2 + float(sigma) ** 2
        return self.std**2 + sigma.reshape(-1, 1) ** 2

    def log_prob(self, x: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """log p(x | sigma) of the diffused mixture (sigma None or 0: the clean target). x [N, d] -> [N]."""
        v = self._variance(sigma)
        logits = -self._sq_dist(x) / (2 * v)
        log_v = torch.log(v).squeeze(-1) if torch.is_tensor(v) else math.log(v)
        log_norm = -math.log(self.num_modes) - 0.5 * self.dim * (math.log(2 * math.pi) + log_v)
        return torch.logsumexp(logits, dim=-1) + log_norm

    def score(self, x: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """Diffused score grad_x log p(x | sigma), analytic. x [N, d], sigma [N] or scalar -> [N, d]."""
        v = self._variance(sigma)
        resp = F.softmax(-self._sq_dist(x) / (2 * v), dim=-1)  # [N, K]
        mean = (resp.unsqueeze(-1) * self.means.to(x.dtype)).sum(-2)  # float32 products, not a (TF32) matmul
        return (mean - x) / v

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples [n, d] from the clean mixture, drawn on the generator's device (so a CPU generator gives the
        same samples whatever device the mixture lives on), returned on the mixture's device."""
        draw_on = generator.device if generator is not None else self.means.device
        idx = torch.randint(0, self.num_modes, (n,), generator=generator, device=draw_on)
        noise = torch.randn(n, self.dim, generator=generator, device=draw_on)
        means = self.means.to(draw_on)
        return (means[idx] + self.std * noise).to(self.means.device)

    def nearest_mode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Index of the nearest mean [N] and the distance to it in units of the component std [N]."""
        d2 = self._sq_dist(x)
        best, idx = d2.min(dim=-1)
        return idx, best.sqrt() / self.std


def mog40(dim: int = 2) -> GaussianMixture:
    """MoG40: 40 modes uniform in [-40, 40]^dim, component std softplus(1) ~= 1.3133 (docs/method.md, section 5).
    ``dim`` 2 is the benchmark's MoG40 (the stored means); other dimensions use the same seeded construction."""
    means = mog40_means() if dim == 2 else mog40_means_from_seed(dim)
    name = "mog40" if dim == 2 else f"mog40_d{dim}"
    return GaussianMixture(means, std=F.softplus(torch.tensor(1.0)).item(), name=name)


def mog9(dim: int = 2) -> GaussianMixture:
    """MoG9: a 3 x 3 grid of modes at {-5, 0, 5}^2 with std 0.5, for quick checks (2-D only)."""
    if dim != 2:
        raise ValueError(f"mog9 is a 2-D target, not {dim}-D")
    grid = torch.tensor([-5.0, 0.0, 5.0])
    means = torch.cartesian_prod(grid, grid)
    return GaussianMixture(means, std=0.5, name="mog9")
