"""Networks: the MLP trunk, the one-step generator and the Gaussian posterior q(z | x_t, sigma).

Reference sizes (docs/method.md, section 5): width 400, 4 hidden layers, SiLU.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


THIN_LAYER_GRADS = ("exact", "matmul")
HIDDEN_DTYPES = ("float32", "bfloat16")
_precision = {"thin_layer_grad": "exact", "hidden_dtype": "float32"}


def set_network_precision(thin_layer_grad: str = "exact", hidden_dtype: str = "float32") -> None:
    """How every MLP computes, for the whole process (like torch's float32 matmul precision, which it complements;
    set by ``utils.step.prepare`` from --thin_layer_grad and --hidden_dtype).

    thin_layer_grad: how ``exact_linear`` (the first and last layer) differentiates: ``exact`` = through its
        float32 products and sums; ``matmul`` = through a matrix product of the same layer (TF32 under --mode
        fast), while the value stays the exact one.
    hidden_dtype: ``float32``, or ``bfloat16`` = the width x width hidden layers and their activations in bfloat16
        (autocast), the first and last layer in float32 as before."""
    if thin_layer_grad not in THIN_LAYER_GRADS:
        raise ValueError(f"unknown thin-layer gradient {thin_layer_grad!r}; expected one of {THIN_LAYER_GRADS}")
    if hidden_dtype not in HIDDEN_DTYPES:
        raise ValueError(f"unknown hidden dtype {hidden_dtype!r}; expected one of {HIDDEN_DTYPES}")
    _precision.update(thin_layer_grad=thin_layer_grad, hidden_dtype=hidden_dtype)


def exact_linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``layer(x)`` as float32 products and sums, never a matrix product: a TF32 matrix product (--mode fast) rounds
    its inputs to a 10-bit mantissa, which for coordinates of size 40 is an error of about 0.02, a fifth of the noise
    at sigma = 0.1. Meant for thin layers (few inputs or outputs), where the value costs little.
    [..., in] -> [..., out].

    Its gradient costs more: the weight's is a reduction over every row, which compiles to slow kernels (half the
    K-sample step at d = 8). Under ``set_network_precision("matmul")`` the value is  P + stopgrad(V - P), with V the
    exact value and P = ``F.linear(x, layer)``: V itself (up to float32 rounding), differentiated as the matrix
    product P, whose relative error in TF32 is that of every hidden layer's gradient."""
    value = (x.unsqueeze(-2) * layer.weight).sum(-1) + layer.bias
    if _precision["thin_layer_grad"] == "exact":
        return value
    product = F.linear(x, layer.weight, layer.bias)
    return product + (value - product).detach()


class MLP(nn.Sequential):
    """in_dim -> [Linear(width) -> SiLU] x depth -> Linear(out_dim).

    The first and the last layer, which take coordinates in (z, x_t, sigma) and give coordinates out (x0, a mean),
    are computed with ``exact_linear``; only the width x width hidden products may use TF32 (--mode fast), or
    bfloat16 with their activations (``set_network_precision``), the last hidden activation then cast back to the
    input's dtype before the last layer."""

    def __init__(self, in_dim: int, out_dim: int, width: int = 400, depth: int = 4):
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.SiLU()]
            d = width
        layers.append(nn.Linear(d, out_dim))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers, dtype = list(self), x.dtype
        x = exact_linear(x, layers[0])
        if len(layers) == 1:
            return x
        hidden = (contextlib.nullcontext() if _precision["hidden_dtype"] == "float32"
                  else torch.autocast(x.device.type, dtype=torch.bfloat16))
        with hidden:
            for layer in layers[1:-1]:
                x = layer(x)
        return exact_linear(x.to(dtype), layers[-1])  # a no-op unless the hidden layers ran in bfloat16


class Generator(nn.Module):
    """One-step generator x0 = g_theta(z), z ~ N(0, I_d). z [B, d] -> x0 [B, d].

    ``sample`` draws z and returns ``draw(z)``: the generator as used to produce samples (evaluation, and the
    samples Diff-Instruct's student learns from). For this class ``draw`` is ``forward``.
    """

    def __init__(self, dim: int = 2, width: int = 400, depth: int = 4, in_dim: int | None = None):
        super().__init__()
        self.dim = dim
        self.net = MLP(in_dim or dim, dim, width, depth)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def draw(self, z: torch.Tensor) -> torch.Tensor:
        """x0 for sampling (as opposed to the training update's ``forward``). [B, d] -> [B, d]."""
        return self(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n generator samples [n, d] (draws z from the given torch.Generator, or the global one)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.dim, device=device, generator=generator)
        return self.draw(z)


class ReferenceDiffInstructGenerator(Generator):
    """The generator of the authors' Diff-Instruct baseline (``train_dikl.py`` at commit bf35f42), kept for exact
    reproduction: an MLP with 2 d inputs, [z, c], where c is a constant the caller does not choose consistently.
    Their generator update calls it with c = 0 (``decoder(z)``: ScoreNet fills a missing sigma with zeros), while
    the samples the student learns from and the evaluated samples use c = 1 (``decoder(x=z, sigma=ones)``).
    So the trained function (c = 0) is not the one the student chases or the one that is evaluated (c = 1).
    ``forward`` (the update) appends zeros; ``draw`` (sampling) appends ones.
    """

    def __init__(self, dim: int = 2, width: int = 400, depth: int = 4):
        super().__init__(dim, width, depth, in_dim=2 * dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, torch.zeros_like(z)], dim=-1))

    def draw(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, torch.ones_like(z)], dim=-1))


SOFTPLUS_INV_ONE = math.log(math.e - 1)  # softplus of this is 1


def posterior_context(x_t: torch.Tensor, sigma: torch.Tensor, data_std: float | None = None) -> torch.Tensor:
    """Network input for a posterior [B, d + 1]: concat(x_t [B, d], sigma [B, 1]) as the paper's code has it; with
    ``data_std`` s (``--precondition``) concat(x_t / sqrt(s^2 + sigma^2), log(sigma) / 4), inputs of unit scale at
    every noise level (EDM's c_in and c_noise), so that no sigma_max or dimension drives the network to extremes."""
    sigma = sigma.reshape(-1, 1).to(x_t.dtype)
    if data_std is None:
        return torch.cat([x_t, sigma], dim=-1)
    return torch.cat([x_t * torch.rsqrt(data_std ** 2 + sigma ** 2), torch.log(sigma) / 4], dim=-1)


def posterior_mean_std(mean: torch.Tensor, rho: torch.Tensor, sigma: torch.Tensor,
                       data_std: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A posterior network's raw outputs [B, d] as the mean and std of z given (x_t, sigma). The paper's code:
    (mean, softplus(rho) sigma). With ``data_std`` s: the form of the exact posterior of a linear generator
    x0 = s z, whose mean is s x_t / (s^2 + sigma^2) and std sigma / sqrt(s^2 + sigma^2):

        mean = s / sqrt(s^2 + sigma^2) * mean_raw,   std = softplus(rho + softplus^-1(1)) * sigma / sqrt(s^2 + sigma^2)

    so that at initialisation (outputs near 0) q is near that posterior at every sigma, narrow for small sigma and
    the prior N(0, I) for large sigma, instead of a std proportional to sigma alone (about sigma_max at sigma_max)."""
    sigma = sigma.reshape(-1, 1).to(mean.dtype)
    if data_std is None:
        return mean, F.softplus(rho) * sigma
    scale = torch.rsqrt(data_std ** 2 + sigma ** 2)
    return data_std * scale * mean, F.softplus(rho + SOFTPLUS_INV_ONE) * sigma * scale


def diagonal_normal_log_prob(z: torch.Tensor, mean: torch.Tensor | None = None,
                             std: torch.Tensor | None = None) -> torch.Tensor:
    """log N(z; mean, diag(std^2)) summed over the last dim; N(0, I) when mean and std are None. A plain formula:
    no argument validation, hence no host synchronisation. [..., d] -> [...]."""
    if mean is None and std is None:
        return -0.5 * z.pow(2).sum(-1) - 0.5 * z.shape[-1] * LOG_2PI
    return (-0.5 * ((z - mean) / std) ** 2 - torch.log(std) - 0.5 * LOG_2PI).sum(-1)


class GaussianPosterior(nn.Module):
    """q_phi(z | x_t, sigma) = N(mu(x_t, sigma), diag(softplus(rho(x_t, sigma)) * sigma)^2).

    The standard deviation is proportional to sigma, so the posterior narrows as the noise level falls. With
    ``data_std`` (``--precondition``) inputs and outputs are scaled as ``posterior_context`` and
    ``posterior_mean_std`` say. Shapes: z, x_t [B, d]; sigma [B] -> log q [B].
    """

    def __init__(self, dim: int = 2, width: int = 400, depth: int = 4, data_std: float | None = None):
        super().__init__()
        self.dim, self.data_std = dim, data_std
        self.net = MLP(dim + 1, 2 * dim, width, depth)

    def mean_std(self, x_t: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation, each [B, d]."""
        mean, rho = self.net(posterior_context(x_t, sigma, self.data_std)).chunk(2, dim=-1)
        return posterior_mean_std(mean, rho, sigma, self.data_std)

    def log_prob(self, z: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log q_phi(z | x_t, sigma) [B]."""
        mean, std = self.mean_std(x_t, sigma)
        return diagonal_normal_log_prob(z, mean, std)

    def sample(self, x_t: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One z [B, d] per context row."""
        mean, std = self.mean_std(x_t, sigma)
        return mean + std * torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)

    def log_prob_and_draws(self, z: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor,
                           k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log q(z | x_t, sigma) [B], and k fresh reparameterised draws z' [k, B, d] with log q(z' | x_t, sigma)
        [k, B], from one pass of the network over the B rows (``losses.vardiu.importance_log_weights``)."""
        mean, std = self.mean_std(x_t, sigma)
        u = torch.randn(k, *mean.shape, device=mean.device, dtype=mean.dtype)
        log_std = torch.log(std).sum(-1)
        return diagonal_normal_log_prob(z, mean, std), mean + std * u, diagonal_normal_log_prob(u) - log_std

    forward = log_prob_and_draws  # what torch.func.functional_call runs
