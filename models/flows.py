"""Flow posteriors q(z | x_t, sigma): a conditional Gaussian refined by a conditional normalising flow.

    e = (z - mu(c)) / std(c),   std(c) = softplus(rho(c)) * sigma,   c = (x_t, sigma)
    u = T_c(e)                  (NSF: rational-quadratic spline autoregressive layers with permutations;
                                 PLF: planar layers)
    log q(z | c) = log N(u; 0, I) + log|det dT_c/de| - sum log std(c)

Equivalently: a conditional diagonal Gaussian base N(mu, diag(std)^2), exactly the Gaussian posterior's, pushed
through spline or planar maps that act in its standardised coordinates. Acting there matters: the spline's bins
cover a fixed interval [-B, B], which in raw z would be far too coarse for the narrow posteriors at small sigma.
Every layer starts as the identity, so at initialisation the flow *is* the Gaussian posterior and training
refines it. Every Jacobian term is counted, so log q is a normalised density (the tests integrate it on a grid);
the reference repo's flow mixes z with x_t through a non-invertible layer and is not.

Sampling (for diagnostics) runs the layers backwards: analytically for splines, by a fixed-count bisection for
planar layers (whose inverse has no closed form). Nothing here synchronises with the host.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from nflows.transforms.autoregressive import MaskedPiecewiseRationalQuadraticAutoregressiveTransform
from nflows.transforms.base import CompositeTransform, Transform
from nflows.transforms.permutations import ReversePermutation

from models.networks import MLP, diagonal_normal_log_prob, posterior_context, posterior_mean_std

FLOW_TYPES = ("NSF", "PLF")


def rq_spline_linear_tails(inputs: torch.Tensor, unnormalized_widths: torch.Tensor,
                           unnormalized_heights: torch.Tensor, unnormalized_derivatives: torch.Tensor,
                           inverse: bool = False, tail_bound: float = 5.0, min_bin_width: float = 1e-3,
                           min_bin_height: float = 1e-3, min_derivative: float = 1e-3
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotone rational-quadratic spline on [-B, B], identity outside (Durkan et al. 2019).

    The same function as nflows' ``unconstrained_rational_quadratic_spline`` with linear tails, written without
    boolean-mask indexing, ``torch.any`` or domain asserts, so it never synchronises with the host: the spline is
    evaluated on clamped inputs everywhere and ``torch.where`` keeps the identity outside the interval.

    Shapes: inputs [...]; widths, heights [..., K]; derivatives [..., K - 1] (the two boundary derivatives are 1).
    Returns (outputs [...], log|d outputs / d inputs| [...]).
    """
    num_bins = unnormalized_widths.shape[-1]
    inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
    x = inputs.clamp(-tail_bound, tail_bound)

    boundary = math.log(math.expm1(1 - min_derivative))  # softplus^-1(1 - min_derivative): derivative 1 at +-B
    unnormalized_derivatives = F.pad(unnormalized_derivatives, (1, 1), value=boundary)
    derivatives = min_derivative + F.softplus(unnormalized_derivatives)

    def knots(unnormalized: torch.Tensor, min_size: float) -> tuple[torch.Tensor, torch.Tensor]:
        sizes = min_size + (1 - min_size * num_bins) * F.softmax(unnormalized, dim=-1)
        cum = F.pad(torch.cumsum(sizes, dim=-1), (1, 0))
        cum = 2 * tail_bound * cum - tail_bound
        cum = torch.cat([torch.full_like(cum[..., :1], -tail_bound), cum[..., 1:-1],
                         torch.full_like(cum[..., :1], tail_bound)], dim=-1)
        return cum, cum[..., 1:] - cum[..., :-1]

    cumwidths, widths = knots(unnormalized_widths, min_bin_width)
    cumheights, heights = knots(unnormalized_heights, min_bin_height)

    locations = cumheights if inverse else cumwidths
    # Bin index by counting knots at or below x (the last knot nudged up so x = B falls in the last bin).
    upper = torch.cat([locations[..., :-1], locations[..., -1:] + 1e-6], dim=-1)
    idx = ((x[..., None] >= upper).sum(dim=-1) - 1).clamp(0, num_bins - 1)[..., None]

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t.gather(-1, idx)[..., 0]

    in_cumwidths, in_widths = pick(cumwidths), pick(widths)
    in_cumheights, in_heights = pick(cumheights), pick(heights)
    in_delta = pick(heights / widths)
    d0, d1 = pick(derivatives), pick(derivatives[..., 1:])
    slope_sum = d0 + d1 - 2 * in_delta

    if inverse:
        dy = x - in_cumheights
        a = dy * slope_sum + in_heights * (in_delta - d0)
        b = in_heights * d0 - dy * slope_sum
        c = -in_delta * dy
        discriminant = (b.pow(2) - 4 * a * c).clamp_min(0)
        theta = (2 * c) / (-b - torch.sqrt(discriminant))
        out = theta * in_widths + in_cumwidths
    else:
        theta = (x - in_cumwidths) / in_widths
        out = in_cumheights + in_heights * (in_delta * theta.pow(2) + d0 * theta * (1 - theta)) / (
            in_delta + slope_sum * theta * (1 - theta))
    theta_1m = theta * (1 - theta)
    denominator = in_delta + slope_sum * theta_1m
    numerator = in_delta.pow(2) * (d1 * theta.pow(2) + 2 * in_delta * theta_1m + d0 * (1 - theta).pow(2))
    logabsdet = torch.log(numerator) - 2 * torch.log(denominator)
    if inverse:
        logabsdet = -logabsdet
    return torch.where(inside, out, inputs), torch.where(inside, logabsdet, torch.zeros_like(logabsdet))


class SplineAutoregressiveTransform(MaskedPiecewiseRationalQuadraticAutoregressiveTransform):
    """nflows' conditional RQ-spline autoregressive transform (MADE conditioner, linear tails) evaluated with the
    host-sync-free ``rq_spline_linear_tails`` and initialised to the identity map."""

    def __init__(self, features: int, hidden_features: int, context_features: int, num_bins: int,
                 tail_bound: float, num_blocks: int = 2):
        super().__init__(features=features, hidden_features=hidden_features, context_features=context_features,
                         num_bins=num_bins, tails="linear", tail_bound=tail_bound, num_blocks=num_blocks,
                         use_residual_blocks=True)
        final = self.autoregressive_net.final_layer
        with torch.no_grad():  # zero output -> equal bins; derivative logits -> slope 1: the identity
            final.weight.zero_()
            bias = final.bias.view(features, self._output_dim_multiplier())
            bias.zero_()
            bias[:, 2 * num_bins:] = math.log(math.expm1(1 - self.min_derivative))

    def _elementwise(self, inputs, autoregressive_params, inverse=False):
        batch_size, features = inputs.shape
        params = autoregressive_params.view(batch_size, features, self._output_dim_multiplier())
        outputs, logabsdet = rq_spline_linear_tails(
            inputs, params[..., :self.num_bins], params[..., self.num_bins:2 * self.num_bins],
            params[..., 2 * self.num_bins:], inverse=inverse, tail_bound=self.tail_bound,
            min_bin_width=self.min_bin_width, min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative)
        return outputs, logabsdet.sum(-1)


class ConditionalPlanarTransform(Transform):
    """Planar map u = e + u_hat(c) tanh(w(c)^T e + b(c)) with context-dependent (u, w, b) (Rezende & Mohamed).

    Invertibility: u_hat = u + (m(w^T u) - w^T u) w / |w|^2 with m(a) = -1 + c + (1 - c) softplus(a + log(e - 1)),
    so w^T u_hat = m(w^T u) >= -1 + c (margin c = 1e-3 keeps the Jacobian away from 0 in floating point; the
    shift makes m(0) = 0, hence u = 0 gives u_hat = 0)
    and the map is monotone along w. log|det| = log|1 + tanh'(w^T e + b) w^T u_hat|. Starts as the identity
    (u = 0). The inverse solves the scalar equation a + (w^T u_hat) tanh(a + b) = w^T u by bisection (a fixed
    number of steps: no host synchronisation) and one Newton step, through which gradients flow.
    """

    SHIFT = math.log(math.e - 1)
    MARGIN = 1e-3

    def __init__(self, features: int, context_features: int, bisection_steps: int = 60):
        super().__init__()
        self.features = features
        self.bisection_steps = bisection_steps
        self.params = nn.Linear(context_features, 2 * features + 1)
        with torch.no_grad():
            self.params.weight[:features].zero_()  # u = 0: the identity map at initialisation
            self.params.bias[:features].zero_()

    def _uwb(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u, w, b = self.params(context).split([self.features, self.features, 1], dim=-1)
        wu = (w * u).sum(-1, keepdim=True)
        m = self.MARGIN - 1 + (1 - self.MARGIN) * F.softplus(wu + self.SHIFT)  # m >= -1 + margin, m(0) = 0
        u_hat = u + (m - wu) * w / (w.pow(2).sum(-1, keepdim=True) + 1e-8)
        return u_hat, w, b

    def forward(self, inputs, context=None):
        u_hat, w, b = self._uwb(context)
        pre = (w * inputs).sum(-1, keepdim=True) + b
        h = torch.tanh(pre)
        outputs = inputs + u_hat * h
        det = 1 + (1 - h.pow(2)) * (w * u_hat).sum(-1, keepdim=True)
        return outputs, torch.log(det.abs().clamp_min(1e-12)).squeeze(-1)

    def inverse(self, inputs, context=None):
        u_hat, w, b = self._uwb(context)
        target = (w * inputs).sum(-1, keepdim=True)
        wu = (w * u_hat).sum(-1, keepdim=True)
        lo, hi = target - wu.abs() - 1e-6, target + wu.abs() + 1e-6  # |a - w^T u| <= |w^T u_hat|
        for _ in range(self.bisection_steps):
            mid = 0.5 * (lo + hi)
            below = mid + wu * torch.tanh(mid + b) < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        a = 0.5 * (lo + hi).detach()
        # One Newton step from the bisection's root: the same value, and gradients by the implicit function theorem.
        h = torch.tanh(a + b)
        a = a - (a + wu * h - target) / (1 + wu * (1 - h.pow(2)))
        outputs = inputs - u_hat * torch.tanh(a + b)
        _, logabsdet = self.forward(outputs, context)
        return outputs, -logabsdet


class FlowPosterior(nn.Module):
    """q_phi(z | x_t, sigma): the Gaussian posterior refined by a conditional flow (see the module docstring).

    One MLP trunk on (x_t, sigma) gives the Gaussian's mean and scale and the flow's context features.
    Shapes: z, x_t [B, d]; sigma [B] -> log q [B].
    """

    def __init__(self, dim: int = 2, flow_type: str = "NSF", flow_length: int = 4, width: int = 400,
                 depth: int = 4, context_features: int = 32, flow_hidden: int = 64, num_bins: int = 8,
                 tail_bound: float = 5.0, data_std: float | None = None):
        super().__init__()
        if flow_type not in FLOW_TYPES:
            raise ValueError(f"flow_type must be one of {FLOW_TYPES}, got {flow_type!r}")
        self.dim, self.flow_type, self.data_std = dim, flow_type, data_std
        # --iw_samples needs draws differentiable in x_t: the spline's are; planar layers invert by bisection
        self.reparameterised_draws = flow_type == "NSF"
        self.context_features = context_features
        self.trunk = MLP(dim + 1, 2 * dim + context_features, width, depth)
        layers: list[Transform] = []
        for _ in range(flow_length):
            if flow_type == "NSF":
                layers += [SplineAutoregressiveTransform(dim, flow_hidden, context_features, num_bins, tail_bound),
                           ReversePermutation(dim)]
            else:
                layers.append(ConditionalPlanarTransform(dim, context_features))
        self.transform = CompositeTransform(layers)

    def _condition(self, x_t: torch.Tensor, sigma: torch.Tensor):
        out = self.trunk(posterior_context(x_t, sigma, self.data_std))
        mean, rho, features = out.split([self.dim, self.dim, self.context_features], dim=-1)
        return (*posterior_mean_std(mean, rho, sigma, self.data_std), features)

    def log_prob(self, z: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log q_phi(z | x_t, sigma) [B]."""
        mean, std, features = self._condition(x_t, sigma)
        u, logabsdet = self.transform((z - mean) / std, context=features)
        log_base = diagonal_normal_log_prob(u)
        return log_base + logabsdet - torch.log(std).sum(-1)

    def sample_with_log_prob(self, x_t: torch.Tensor, sigma: torch.Tensor,
                             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One z [B, d] per context row, with its log q [B] from the inverse pass."""
        mean, std, features = self._condition(x_t, sigma)
        u = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        e, inv_logabsdet = self.transform.inverse(u, context=features)
        log_base = diagonal_normal_log_prob(u)
        return mean + std * e, log_base - inv_logabsdet - torch.log(std).sum(-1)

    def sample(self, x_t: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample_with_log_prob(x_t, sigma, generator)[0]

    def log_prob_and_draws(self, z: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor,
                           k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log q(z | x_t, sigma) [B], and k fresh draws z' [k, B, d] with log q(z' | x_t, sigma) [k, B]; the trunk
        runs once over the B rows, the flow over B + k B (``losses.vardiu.importance_log_weights``). The spline
        flow's draws are reparameterised (differentiable in x_t); planar layers invert by bisection, whose output
        carries no usable gradient."""
        mean, std, features = self._condition(x_t, sigma)
        u, logabsdet = self.transform((z - mean) / std, context=features)
        log_std = torch.log(std).sum(-1)
        b, d = mean.shape
        noise = torch.randn(k * b, d, device=mean.device, dtype=mean.dtype)
        e, inv_logabsdet = self.transform.inverse(noise, context=features.repeat(k, 1))
        draws = mean + std * e.reshape(k, b, d)
        log_q_draws = (diagonal_normal_log_prob(noise) - inv_logabsdet).reshape(k, b) - log_std
        return diagonal_normal_log_prob(u) + logabsdet - log_std, draws, log_q_draws

    forward = log_prob_and_draws  # what torch.func.functional_call runs
