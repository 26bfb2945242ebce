"""The VarDiU objective: the surrogate loss whose gradient is unbiased, and the training loss built on it.

With x_t = g_theta(z) + sigma * eps, the bound (docs/method.md, section 1) is

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
import torch.nn as nn

from losses.noise import NoiseBatch, NoiseSampler, WeightFn
from models.networks import LOG_2PI, diagonal_normal_log_prob

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LogProbFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
WEIGHT_REDUCTIONS = ("sample", "batch")


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
    log_prior = diagonal_normal_log_prob(noise.z)
    log_noise = -0.5 * noise.eps.pow(2).sum(-1) - d * torch.log(noise.sigma) - 0.5 * d * LOG_2PI  # at x = sigma eps
    return log_prior + log_noise - log_q - log_p_target


def vardiu_loss(generator: nn.Module, posterior: nn.Module, noise: NoiseBatch, target_score: ScoreFn,
                weight: WeightFn, target_log_prob: Optional[LogProbFn] = None, control_variate: bool = False,
                reduction: str = "sample") -> LossOutput:
    """The VarDiU surrogate for one batch.

    Args:
        generator: z [B, d] -> x0 [B, d].
        posterior: has ``log_prob(z, x_t, sigma) -> [B]``.
        noise: the batch's (z, eps, sigma).
        target_score: s_d(x_t, sigma) -> [B, d], called without gradient.
        weight: w(sigma) [B] -> [B] (``losses.noise.make_weight``).
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
    w = weight(sigma)
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


@dataclass
class VarDiULoss:
    """The training loop's loss for VarDiU: ``loss_fn(nets, power) -> {"loss", "bound"}`` draws a batch of the
    student's joint at the sigma-sampler power and returns the surrogate (backpropagated into generator and
    posterior) and the bound's Monte-Carlo value (logged; only when the target's log density is known)."""

    noise: NoiseSampler
    weight: WeightFn
    target_score: ScoreFn
    target_log_prob: Optional[LogProbFn] = None
    control_variate: bool = False
    reduction: str = "sample"

    @property
    def terms(self) -> tuple[str, ...]:
        """What ``__call__`` returns: the surrogate ``loss``, and the bound's value when log p_d is known."""
        return ("loss",) if self.target_log_prob is None else ("loss", "bound")

    def __call__(self, nets: dict[str, nn.Module], power: torch.Tensor) -> dict[str, torch.Tensor]:
        generator, posterior = nets["generator"], nets["posterior"]
        out = vardiu_loss(generator, posterior, self.noise.draw(generator.dim, power), self.target_score,
                          self.weight, self.target_log_prob, self.control_variate, self.reduction)
        return {"loss": out.loss} if out.bound is None else {"loss": out.loss, "bound": out.bound}
