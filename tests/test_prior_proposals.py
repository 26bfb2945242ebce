"""--prior_proposals_sigma: above a noise level the generator's bound takes the batch's other draws of z as prior
importance proposals (losses.vardiu.prior_log_average). Checked by hand on a small batch, and on the
linear-Gaussian problem (experiments/linear_gaussian.py): the estimate's mean lies above log p_theta(x_t) and falls
towards it with the number of draws; a threshold above every sigma changes nothing; the surrogate's generator
gradient is the pathwise derivative of the bound's Monte-Carlo value; the posterior's gradient stays its
maximum-likelihood term."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import (assert_pathwise_gradient, assert_posterior_gradient_is_its_likelihood_term,
                      assert_training_stays_finite_and_moves_every_network)

from experiments.linear_gaussian import (DiagonalLinearGenerator, LinearGaussianPosterior, gaussian_log_prob,
                                         gaussian_score)
from losses.noise import draw_noise, make_weight
from losses.vardiu import pairwise_log_likelihood, prior_log_average, vardiu_loss

A, B = torch.tensor([1.5, 0.7], dtype=torch.float64), torch.tensor([0.3, -0.4], dtype=torch.float64)
M, S = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([1.2, 0.9], dtype=torch.float64)
SIGMA_MIN, SIGMA_MAX, POWER, WEIGHT = 0.1, 5.0, 2.0, "sigma"
PERTURBED = dict(alpha=0.8, beta=0.3, kappa=1.5)


def noise_batch(n, seed, power=POWER):
    torch.manual_seed(seed)
    return draw_noise(n, 2, SIGMA_MIN, SIGMA_MAX, power, antithetic=True, dtype=torch.float64)


def loss(gen, posterior, noise, k, threshold):
    return vardiu_loss(gen, posterior, noise, gaussian_score(M, S), make_weight(WEIGHT, SIGMA_MAX),
                       gaussian_log_prob(M, S), iw_samples=k, prior_proposals_sigma=threshold,
                       distinct=noise.z.shape[0] // 2)


def test_the_average_runs_over_the_distinct_draws_by_hand():
    torch.manual_seed(0)
    x0 = torch.randn(3, 2, dtype=torch.float64) * 3
    x0 = torch.cat([x0, x0])  # antithetic layout: rows i and i + 3 share a draw
    sigma = torch.tensor([0.5, 2.0, 4.0, 0.5, 2.0, 4.0], dtype=torch.float64)
    x_t = x0 + sigma[:, None] * torch.randn(6, 2, dtype=torch.float64)
    got = prior_log_average(x0, x_t, sigma, distinct=3)
    for i in range(6):
        normal = torch.distributions.Normal(x0[:3], sigma[i])
        expected = torch.logsumexp(normal.log_prob(x_t[i]).sum(-1), 0) - math.log(3)
        torch.testing.assert_close(got[i], expected, rtol=0, atol=1e-12)


def test_float32_log_weights_keep_the_digits_of_short_distances_far_from_the_origin():
    """pairwise_log_likelihood expands |x_t - x0|^2 = |x_t|^2 + |x0|^2 - 2 x_t . x0; points near 1000 at distances
    near 0.01 are where a float32 expansion would lose every digit of the distance (1000^2 * 6e-8 = 0.06)."""
    torch.manual_seed(0)
    x0 = 1000 + torch.randn(4, 8)
    x_t = x0[torch.tensor([1, 0, 3, 2])] + 0.01 * torch.randn(4, 8)
    sigma = torch.full((4,), 0.01)
    got = pairwise_log_likelihood(x0, x_t, sigma)
    diff = x_t.double().unsqueeze(1) - x0.double().unsqueeze(0)
    expected = (-0.5 * diff.pow(2).sum(-1) / 0.01 ** 2).float()
    assert got.dtype == torch.float32 and got.shape == (4, 4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-3)


def test_the_estimate_lies_above_log_p_and_falls_with_the_number_of_draws():
    """Mean over rows of the estimate minus log p_theta(x_t | sigma) = log N(x_t; b, a^2 + sigma^2): at or above 0
    for every n (within the Monte-Carlo error) and falling as n grows."""
    gen = DiagonalLinearGenerator(A, B)
    gaps = {}
    for n in (2, 16, 256):
        values = []
        for seed in range(40):
            torch.manual_seed(seed)
            z = torch.randn(n, 2, dtype=torch.float64)
            x0 = gen(torch.cat([z, z])).detach()
            sigma = torch.full((2 * n,), 2.0, dtype=torch.float64)
            x_t = x0 + 2.0 * torch.randn(2 * n, 2, dtype=torch.float64)
            marginal = gaussian_log_prob(B, A.abs())(x_t, sigma)
            values.append((prior_log_average(x0, x_t, sigma, n) - marginal).mean())
        values = torch.stack(values)
        gaps[n] = float(values.mean())
        assert gaps[n] > -3 * float(values.std() / 40 ** 0.5), (n, gaps)
    assert gaps[2] > gaps[16] > gaps[256] > 0, gaps
    assert gaps[256] < 0.05, gaps


@pytest.mark.parametrize("k", [0, 4])
def test_a_threshold_above_every_sigma_changes_nothing(k):
    posterior = LinearGaussianPosterior(A, B, **PERTURBED)
    results = []
    for threshold in (0.0, 1e9):
        gen = DiagonalLinearGenerator(A, B)
        torch.manual_seed(7)
        out = loss(gen, posterior, noise_batch(256, 1), k, threshold)
        out.loss.backward()
        results.append((out.loss.detach(), out.bound, gen.a.grad.clone(), gen.b.grad.clone()))
    for plain, thresholded in zip(*results):
        torch.testing.assert_close(thresholded, plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [0, 4])
def test_the_generator_gradient_is_the_pathwise_derivative_of_the_bound(k):
    """autograd of the surrogate in (a, b) against central differences of the bound's Monte-Carlo value, with the
    threshold inside the noise range (rows on both sides), the same noise and the same posterior draws."""
    posterior = LinearGaussianPosterior(A, B, **PERTURBED)
    noise = noise_batch(256, 3, power=1.0)
    assert 0.2 < float((noise.sigma >= 2.5).double().mean()) < 0.8

    def run(a, b):
        gen = DiagonalLinearGenerator(a, b)
        torch.manual_seed(7)
        return gen, loss(gen, posterior, noise, k, 2.5)

    assert_pathwise_gradient(run, A, B)


@pytest.mark.parametrize("k", [0, 4])
def test_the_posterior_gradient_stays_its_maximum_likelihood_term(k):
    gen, posterior = DiagonalLinearGenerator(A, B), LinearGaussianPosterior(A, B, **PERTURBED)
    noise = noise_batch(256, 4, power=1.0)
    assert_posterior_gradient_is_its_likelihood_term(gen, posterior, noise, loss(gen, posterior, noise, k, 2.5),
                                                     make_weight(WEIGHT, SIGMA_MAX))


def test_training_with_prior_proposals_at_d8_stays_finite_and_moves_both_networks():
    flags = ["--true_score", "--width", "32", "--depth", "2", "--batch_size", "64", "--dim", "8", "--sigma_max", "150",
             "--precondition", "--prior_proposals_sigma", "20"]
    trainer = assert_training_stays_finite_and_moves_every_network("vardiu_gaussian", flags)
    assert trainer.method.updates[0].loss_fn.prior_proposals_sigma == 20


@pytest.mark.parametrize("k", [0, 4])
def test_a_threshold_below_every_sigma_gives_the_prior_bound_alone(k):
    gen, posterior = DiagonalLinearGenerator(A, B), LinearGaussianPosterior(A, B, **PERTURBED)
    noise = noise_batch(256, 5)
    out = loss(gen, posterior, noise, k, SIGMA_MIN / 2)
    x0 = gen(noise.z)
    x_t = x0 + noise.sigma[:, None] * noise.eps
    terms = prior_log_average(x0, x_t, noise.sigma, 128) - gaussian_log_prob(M, S)(x_t, noise.sigma)
    expected = (make_weight(WEIGHT, SIGMA_MAX)(noise.sigma) * terms).mean()
    torch.testing.assert_close(out.bound, expected.detach(), rtol=1e-12, atol=1e-12)
