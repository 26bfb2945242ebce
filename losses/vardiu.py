"""The VarDiU objective: the surrogate loss whose gradient is unbiased, and the training loss built on it.

With x_t = g_theta(z) + sigma * eps, the bound (docs/method.md, section 1) is

    U(theta, phi) = E_{sigma, z, eps} w(sigma) [ log p(z) + log N(sigma eps; 0, sigma^2 I)
                                                 - log q_phi(z | x_t, sigma) - log p_d(x_t | sigma) ]

and the surrogate

    L = -mean( w * [ log q_phi(z | x_t, sigma) + stopgrad(s_d(x_t, sigma)) . x0 ] )

has autograd gradients  dL/dphi = -E[w grad_phi log q]  and
dL/dtheta = -E[w (grad_{x_t} log q + s_d)^T dg/dtheta], the unbiased gradients of U.
With K >= 1 extra draws z_1..z_K ~ q_phi(. | x_t, sigma) per x_t (``iw_samples``), the generator follows the
tighter K-sample bound (docs/method.md, section 2)

    U_K = E w(sigma) [ log (1/(K+1)) sum_{k=0..K} p(z_k) N(x_t; g_theta(z_k), sigma^2 I) / q_phi(z_k | x_t, sigma)
                       - log p_d(x_t | sigma) ],     DKL <= U_K <= U_{K-1} <= ... <= U_0 = U,

(z_0 = z, the draw that made x_t, is an exact posterior sample), and the posterior keeps its maximum-likelihood
objective on z_0. Above a noise level S (``prior_proposals_sigma``) the proposals can instead be the batch's other
draws of z, prior samples that cost no generator pass (``prior_log_average``): U_{n-1} with the prior as proposal.
Its generator gradient there can instead be the pathwise one (``prior_proposals_grad="pathwise"``): the pool of
draws held fixed, so the generator follows grad_x log phat(x_t) - s_d(x_t), phat the pool's kernel average, and
drops the pool's own term, whose mean is zero for the exact density (E_x grad_theta log p_theta(x) = 0; Roeder et
al. 2017's "sticking the landing"); the bound's value is unchanged.
Every function here is free of host synchronisations (no .item(), no validating distributions).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn
from torch.func import functional_call

from losses.noise import NoiseBatch, NoiseSampler, WeightFn
from models.networks import LOG_2PI, diagonal_normal_log_prob

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LogProbFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
WEIGHT_REDUCTIONS = ("sample", "batch")
PRIOR_PROPOSALS_GRADS = ("bound", "pathwise")


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


def frozen(module: nn.Module, *args: torch.Tensor):
    """``module(*args)`` with its parameters detached: gradients reach the inputs, not the parameters."""
    return functional_call(module, {name: p.detach() for name, p in module.named_parameters()}, args)


def importance_log_weights(generator: nn.Module, posterior: nn.Module, noise: NoiseBatch, x0: torch.Tensor,
                           x_t: torch.Tensor, k: int) -> torch.Tensor:
    """log w_j = log p(z_j) + log N(x_t; g(z_j), sigma^2 I) - log q_phi(z_j | x_t, sigma) for j = 0..k: [k + 1, B].

    z_0 = noise.z made x_t (x0 = g(z_0)); z_1..z_k are reparameterised draws from q_phi(. | x_t, sigma), so each
    weight is differentiable in theta through x_t, through the draws and through g(z_j). The posterior's parameters
    are detached here (``frozen``): only the generator follows U_k. The posterior's ``log_prob_and_draws(z, x_t,
    sigma, k)`` conditions on each x_t once; the generator runs on the k B draws."""
    b, d = x_t.shape
    log_q_given, draws, log_q_draws = frozen(posterior, noise.z, x_t, noise.sigma, k)
    draws = draws.reshape(k * b, d)
    z = torch.cat([noise.z, draws])
    log_q = torch.cat([log_q_given, log_q_draws.reshape(k * b)])
    x_z = torch.cat([x0, generator(draws)])
    # log N(x_t; g(z_j), sigma^2 I); for j = 0, x_t - g(z_0) = sigma eps carries no gradient
    log_lik = diagonal_normal_log_prob(x_t.repeat(k + 1, 1), x_z, noise.sigma.repeat(k + 1).unsqueeze(-1))
    return (diagonal_normal_log_prob(z) + log_lik - log_q).reshape(k + 1, b)


def pairwise_log_likelihood(x0: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log N(x_t^i; x0_j, sigma_i^2 I) up to its normaliser, -|x_t^i - x0_j|^2 / (2 sigma_i^2), for every row i of
    x_t [B, d] (sigma [B]) and every x0_j of x0 [n, d]: [B, n]. The prior proposals' log-weights.

    The squared distances are |x_t^i|^2 + |x0_j|^2 - 2 x_t^i . x0_j in float64, so that forward and backward hold
    [B, n] values rather than the [B, n, d] differences: float64 keeps the cancellation error near 1e-16 |x|^2
    (float32 would lose all digits of a distance small against |x|), and a float64 product is never TF32."""
    a, b = x_t.double(), x0.double()
    squared = a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(-2) - 2 * a @ b.transpose(-1, -2)
    return (-0.5 * squared / sigma.double().pow(2).unsqueeze(-1)).to(x_t.dtype)


def prior_log_average(x0: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor, distinct: int) -> torch.Tensor:
    """log (1/n) sum_j N(x_t; g(z_j), sigma^2 I) over the batch's n = ``distinct`` distinct draws z_j ~ N(0, I)
    (x0[:n]; with antithetic pairs rows i and i + n share z_i): [B].

    For row i the draw that made x_t^i is one of the n (the exact posterior draw z_0) and the other n - 1 are prior
    draws independent of it, so this is the estimate inside U_{n-1} with the prior as proposal (p(z) / r(z) = 1):
    E log of it >= log p_theta(x_t^i) whatever the other rows are. Where sigma is large the prior is close to the
    posterior and n - 1 proposals cost no generator pass. x0 [B, d], x_t [B, d], sigma [B] -> [B]."""
    d = x_t.shape[-1]
    log_lik = pairwise_log_likelihood(x0[:distinct], x_t, sigma)  # [B, n]
    return torch.logsumexp(log_lik, -1) - math.log(distinct) - d * torch.log(sigma) - 0.5 * d * LOG_2PI


def vardiu_loss(generator: nn.Module, posterior: nn.Module, noise: NoiseBatch, target_score: ScoreFn,
                weight: WeightFn, target_log_prob: Optional[LogProbFn] = None, control_variate: bool = False,
                reduction: str = "sample", iw_samples: int = 0, prior_proposals_sigma: float = 0.0,
                distinct: int | None = None, prior_proposals_grad: str = "bound") -> LossOutput:
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
        iw_samples: K. 0: the bound U above. K >= 1: the generator's surrogate is
            mean(w * [logsumexp_j log w_j - stopgrad(s_d) . x0]) (``importance_log_weights``), whose theta-gradient
            is that of U_K; the posterior's is -mean(w * log q_phi(z | stopgrad(x_t), sigma)), maximum likelihood as
            for K = 0; the bound's value is U_K's. The posterior must have ``log_prob_and_draws`` with
            reparameterised draws.
        prior_proposals_sigma: S > 0: rows with sigma >= S take the batch's ``distinct`` draws as their proposals
            (``prior_log_average``) in place of the posterior's K (any K >= 0); the posterior's loss is unchanged.
            Each row's term is an upper bound of its own, so the total is one. 0: off.
        distinct: how many leading rows of the batch hold distinct z (B / 2 with antithetic pairs, else B).
        prior_proposals_grad: the generator's gradient on those rows. ``bound``: the bound's, through x_t and
            through the pool g(z_j) (each row's own draw cancels: x_t - g(z_i) = sigma eps). ``pathwise``: through
            x_t only, the pool detached: sum_j softmax_j(-|x_t - g(z_j)|^2 / 2 sigma^2) (g(z_j) - x_t) / sigma^2,
            the pool's kernel score, in place of the generator's score; consistent as the pool grows, not a
            bound's gradient (``experiments/prior_force.py`` measures both against the divergence's).
    """
    if prior_proposals_grad not in PRIOR_PROPOSALS_GRADS:
        raise ValueError(f"unknown prior_proposals_grad {prior_proposals_grad!r}; expected one of {PRIOR_PROPOSALS_GRADS}")
    x0 = generator(noise.z)
    sigma = noise.sigma
    x_t = x0 + sigma.unsqueeze(-1) * noise.eps
    w = weight(sigma)
    with torch.no_grad():
        score = target_score(x_t.detach(), sigma)
        if control_variate:
            score = score + noise.eps / sigma.unsqueeze(-1)
    prior_rows = sigma >= prior_proposals_sigma if prior_proposals_sigma else None  # [B], or None: off
    if prior_rows is not None:
        pool = x0.detach() if prior_proposals_grad == "pathwise" else x0
        prior_avg = prior_log_average(pool, x_t, sigma, distinct or x0.shape[0])
    if iw_samples == 0 and prior_rows is None:
        log_q = posterior.log_prob(noise.z, x_t, sigma)
        loss = -weighted_mean(w, log_q + (score * x0).sum(-1), reduction)
    elif iw_samples == 0:
        # U's surrogate, except that rows taking the prior's proposals keep x_t out of log q: their generator term
        # is prior_avg, their posterior term the same maximum likelihood
        log_q = posterior.log_prob(noise.z, torch.where(prior_rows.unsqueeze(-1), x_t.detach(), x_t), sigma)
        loss = weighted_mean(w, torch.where(prior_rows, prior_avg, 0.0) - log_q - (score * x0).sum(-1), reduction)
    else:
        log_avg = torch.logsumexp(importance_log_weights(generator, posterior, noise, x0, x_t, iw_samples), 0)
        log_avg = log_avg - math.log(iw_samples + 1)
        if prior_rows is not None:
            log_avg = torch.where(prior_rows, prior_avg, log_avg)
        log_q = posterior.log_prob(noise.z, x_t.detach(), sigma)
        loss = weighted_mean(w, log_avg - (score * x0).sum(-1), reduction) - weighted_mean(w, log_q, reduction)
    bound = None
    if target_log_prob is not None:
        with torch.no_grad():
            log_p_target = target_log_prob(x_t.detach(), sigma)
            if iw_samples == 0:
                terms = vardiu_bound_terms(noise, log_q.detach(), log_p_target)
                if prior_rows is not None:
                    terms = torch.where(prior_rows, prior_avg.detach() - log_p_target, terms)
            else:
                terms = log_avg.detach() - log_p_target
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
    iw_samples: int = 0
    prior_proposals_sigma: float = 0.0
    prior_proposals_grad: str = "bound"

    @property
    def terms(self) -> tuple[str, ...]:
        """What ``__call__`` returns: the surrogate ``loss``, and the bound's value when log p_d is known."""
        return ("loss",) if self.target_log_prob is None else ("loss", "bound")

    def __call__(self, nets: dict[str, nn.Module], power: torch.Tensor) -> dict[str, torch.Tensor]:
        generator, posterior = nets["generator"], nets["posterior"]
        out = vardiu_loss(generator, posterior, self.noise.draw(generator.dim, power), self.target_score,
                          self.weight, self.target_log_prob, self.control_variate, self.reduction, self.iw_samples,
                          self.prior_proposals_sigma, self.noise.batch_size // 2 if self.noise.antithetic else None,
                          self.prior_proposals_grad)
        return {"loss": out.loss} if out.bound is None else {"loss": out.loss, "bound": out.bound}
