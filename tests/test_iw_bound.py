"""The K-sample bound (--iw_samples), checked on the linear-Gaussian problem (experiments/linear_gaussian.py):
with the exact posterior every importance weight is the student's marginal density, so U_K is the diffusive KL
for every K and its generator gradient the KL's; with a perturbed posterior U_K lies between the diffusive KL and
U, falling with K; the surrogate's generator gradient is the pathwise derivative of the bound's Monte-Carlo value
(checked against central differences with the same random numbers), and the posterior's gradient is that of its
maximum-likelihood term alone."""
from __future__ import annotations

import pytest
import torch

from conftest import (assert_pathwise_gradient, assert_posterior_gradient_is_its_likelihood_term,
                      assert_training_stays_finite_and_moves_every_network)

from experiments.linear_gaussian import (DiagonalLinearGenerator, LinearGaussianPosterior, diffusive_kl,
                                         gaussian_log_prob, gaussian_score)
from losses.noise import draw_noise, make_weight
from losses.vardiu import importance_log_weights, vardiu_loss

A, B = torch.tensor([1.5, 0.7], dtype=torch.float64), torch.tensor([0.3, -0.4], dtype=torch.float64)
M, S = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([1.2, 0.9], dtype=torch.float64)
SIGMA_MIN, SIGMA_MAX, POWER, WEIGHT = 0.1, 5.0, 2.0, "sigma"
PERTURBED = dict(alpha=0.8, beta=0.3, kappa=1.5)


def loss(gen, posterior, noise, k):
    return vardiu_loss(gen, posterior, noise, gaussian_score(M, S), make_weight(WEIGHT, SIGMA_MAX),
                       gaussian_log_prob(M, S), iw_samples=k)


def noise_batch(n, seed):
    torch.manual_seed(seed)
    return draw_noise(n, 2, SIGMA_MIN, SIGMA_MAX, POWER, antithetic=True, dtype=torch.float64)


def test_with_the_exact_posterior_every_weight_is_the_marginal_density():
    gen, exact = DiagonalLinearGenerator(A, B), LinearGaussianPosterior(A, B)
    noise = noise_batch(512, 0)
    x0 = gen(noise.z)
    x_t = x0 + noise.sigma[:, None] * noise.eps
    log_w = importance_log_weights(gen, exact, noise, x0, x_t, 5)
    assert log_w.shape == (6, 512)
    marginal = gaussian_log_prob(B, A.abs())(x_t, noise.sigma)  # p_theta(x_t | sigma) = N(b, a^2 + sigma^2)
    torch.testing.assert_close(log_w.detach(), marginal.detach().expand(6, -1), rtol=0, atol=1e-10)


def test_the_k_sample_bound_falls_from_u_towards_the_diffusive_kl():
    gen, posterior = DiagonalLinearGenerator(A, B), LinearGaussianPosterior(A, B, **PERTURBED)
    dkl = float(diffusive_kl(A, B, M, S, SIGMA_MIN, SIGMA_MAX, POWER, WEIGHT))
    u = float(diffusive_kl(A, B, M, S, SIGMA_MIN, SIGMA_MAX, POWER, WEIGHT, posterior).detach())
    means = {}
    for k in (0, 4, 32):
        values = torch.stack([loss(gen, posterior, noise_batch(4096, seed), k).bound for seed in range(20)])
        means[k], se = float(values.mean()), float(values.std() / 20**0.5)
        if k == 0:
            assert abs(means[0] - u) < 5 * se  # K = 0 is the paper's bound
    se = 2e-3  # above every standard error of these means (0.5e-3 to 1e-3)
    assert u - se > means[4] > means[32] > dkl + se, (dkl, means, u)


@pytest.mark.parametrize("posterior_kwargs", [{}, PERTURBED])
def test_the_generator_gradient_is_the_pathwise_derivative_of_the_bound(posterior_kwargs):
    """autograd of the surrogate in (a, b) against central differences of the bound's Monte-Carlo value, both on
    the same noise and the same posterior draws: equal to rounding, for the exact and a perturbed posterior."""
    posterior = LinearGaussianPosterior(A, B, **posterior_kwargs)
    noise = noise_batch(256, 3)

    def run(a, b):
        gen = DiagonalLinearGenerator(a, b)
        torch.manual_seed(7)  # the posterior's draws
        return gen, loss(gen, posterior, noise, 4)

    assert_pathwise_gradient(run, A, B)


def test_the_posterior_gradient_is_its_maximum_likelihood_term():
    gen, posterior = DiagonalLinearGenerator(A, B), LinearGaussianPosterior(A, B, **PERTURBED)
    noise = noise_batch(256, 4)
    assert_posterior_gradient_is_its_likelihood_term(gen, posterior, noise, loss(gen, posterior, noise, 4),
                                                     make_weight(WEIGHT, SIGMA_MAX))


@pytest.mark.parametrize("method,extra", [("vardiu_gaussian", []), ("vardiu_nsf", ["--flow_hidden", "16"])])
def test_training_with_k_samples_at_d8_stays_finite_and_moves_both_networks(method, extra):
    flags = ["--true_score", "--width", "32", "--depth", "2", "--batch_size", "64", "--dim", "8", "--sigma_max", "150",
             "--precondition", "--iw_samples", "4", *extra]
    assert_training_stays_finite_and_moves_every_network(method, flags)
