"""The VarDiU objective: noise sampling, sigma weights, and the surrogate loss whose gradient is unbiased.

With x_t = g_theta(z) + sigma * eps, the bound (DESIGN.md section 1) is

    U(theta, phi) = E_{sigma, z, eps} w(sigma) [ log p(z) + log N(sigma eps; 0, sigma^2 I)
                                                 - log q_phi(z | x_t, sigma) - log p_d(x_t | sigma) ]

and the surrogate

    L = -mean( w * [ log q_phi(z | x_t, sigma) + stopgrad(s_d(x_t, sigma)) . x0 ] )

has autograd gradients  dL/dphi = -E[w grad_phi log q]  and
dL/dtheta = -E[w (grad_{x_t} log q + s_d)^T dg/dtheta], the unbiased gradients of U.
Every function here is free of host synchronisations (no .item(), no validating distributions).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from models.networks import LOG_2PI

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LogProbFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

WEIGHT_POWERS = {"uniform": 0, "sigma": 1, "sigma2": 2, "sigma4": 4}
WEIGHT_REDUCTIONS = ("sample", "batch")


@dataclass
class NoiseBatch:
    """One batch of the student's joint: latents z [B, d], unit noise eps [B, d], noise levels sigma [B]."""

    z: torch.Tensor
    eps: torch.Tensor
    sigma: torch.Tensor


def annealed_power(iteration: int, start: float = 0.1, step: float = 0.01, interval: int = 1000,
                   cap: Optional[float] = 2.0) -> float:
    """Power p of the sigma sampler at an iteration: start + step * (iteration // interval), at most cap
    (None: uncapped). With p < 1 most mass sits near sigma_max; p grows so training moves to small sigma."""
    p = start + step * (iteration // interval)
    return p if cap is None else min(p, cap)


def sample_sigma(n: int, sigma_min: float, sigma_max: float, power: torch.Tensor | float,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """sigma = sigma_min + u^p (sigma_max - sigma_min), u ~ U(0, 1). Returns [n]."""
    u = torch.rand(n, device=device, dtype=dtype)
    return sigma_min + u.pow(power) * (sigma_max - sigma_min)


def sigma_weight(sigma: torch.Tensor, weight: str, sigma_max: float) -> torch.Tensor:
    """w(sigma) = (sigma / sigma_max)^k with k = 0, 1, 2, 4 for uniform, sigma, sigma2, sigma4. [B] -> [B]."""
    k = WEIGHT_POWERS[weight]
    return torch.ones_like(sigma) if k == 0 else (sigma / sigma_max) ** k


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


def weighted_mean(w: torch.Tensor, values: torch.Tensor, reduction: str = "sample") -> torch.Tensor:
    """Reduce per-sample values [B] with weights [B] to a scalar.

    sample: mean_i w_i v_i, the paper's estimator of E[w(sigma) v].
    batch:  mean_i w_i * mean_j v_j, what the authors' scripts compute: their weight has shape [B, 1] and the
            values [B], so ``(w * v).mean()`` broadcasts to the [B, B] matrix w_i v_j, whose mean factorises.
            Every sample then carries the same weight, the batch-mean weight.
    """
    if reduction == "sample":
        return (w * values).mean()
    if reduction == "batch":
        return w.mean() * values.mean()
    raise ValueError(f"unknown weight reduction {reduction!r}; expected one of {WEIGHT_REDUCTIONS}")


@dataclass
class LossOutput:
    """loss: the scalar to backpropagate; bound: the Monte-Carlo value of U (None if log p_d is unknown)."""

    loss: torch.Tensor
    bound: Optional[torch.Tensor]


def vardiu_bound_terms(noise: NoiseBatch, log_q: torch.Tensor, log_p_target: torch.Tensor) -> torch.Tensor:
    """Per-sample bound integrand  log p(z) + log N(sigma eps; 0, sigma^2 I) - log q - log p_d(x_t | sigma)  [B]."""
    d = noise.z.shape[-1]
    log_prior = -0.5 * noise.z.pow(2).sum(-1) - 0.5 * d * LOG_2PI
    log_noise = -0.5 * noise.eps.pow(2).sum(-1) - d * torch.log(noise.sigma) - 0.5 * d * LOG_2PI
    return log_prior + log_noise - log_q - log_p_target


def vardiu_loss(generator: torch.nn.Module, posterior: torch.nn.Module, noise: NoiseBatch, target_score: ScoreFn,
                weight: str, sigma_max: float, target_log_prob: Optional[LogProbFn] = None,
                control_variate: bool = False, reduction: str = "sample") -> LossOutput:
    """The VarDiU surrogate for one batch.

    Args:
        generator: z [B, d] -> x0 [B, d].
        posterior: has ``log_prob(z, x_t, sigma) -> [B]``.
        noise: the batch's (z, eps, sigma).
        target_score: s_d(x_t, sigma) -> [B, d], called without gradient.
        weight: one of ``WEIGHT_POWERS``.
        target_log_prob: log p_d(x_t | sigma) -> [B], when known: the bound's value is then returned too.
        control_variate: use s_d + eps / sigma, i.e. (D(x_t, sigma) - x0) / sigma^2 for a denoiser D, in place of
            s_d. eps is independent of z, so the added term has zero expected gradient; it cancels exactly
            within antithetic pairs. Without pairs it lowers the variance when the posterior is tight (it then
            cancels the -eps / sigma that grad_{x_t} log q carries); with a poor posterior it can raise it.
        reduction: how the weights meet the per-sample terms (``weighted_mean``): ``sample`` (the paper) or
            ``batch`` (the authors' code, -mean(w) * mean(L)); the bound's value is reduced the same way.
    """
    x0 = generator(noise.z)
    sigma = noise.sigma
    x_t = x0 + sigma.unsqueeze(-1) * noise.eps
    w = sigma_weight(sigma, weight, sigma_max)
    log_q = posterior.log_prob(noise.z, x_t, sigma)
    with torch.no_grad():
        score = target_score(x_t.detach(), sigma)
        if control_variate:
            score = score + noise.eps / sigma.unsqueeze(-1)
    loss = -weighted_mean(w, log_q + (score * x0).sum(-1), reduction)
    bound = None
    if target_log_prob is not None:
        with torch.no_grad():
            terms = vardiu_bound_terms(noise, log_q.detach(), target_log_prob(x_t.detach(), sigma))
            bound = weighted_mean(w, terms, reduction)
    return LossOutput(loss, bound)
