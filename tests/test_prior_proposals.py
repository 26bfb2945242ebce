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


def loss(gen, posterior, noise, k, threshold, grad="bound"):
    return vardiu_loss(gen, posterior, noise, gaussian_score(M, S), make_weight(WEIGHT, SIGMA_MAX),
                       gaussian_log_prob(M, S), iw_samples=k, prior_proposals_sigma=threshold,
                       distinct=noise.z.shape[0] // 2, prior_proposals_grad=grad)


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


def generator_gradient(n, seed, grad):
    """The linear generator's gradient in (a, b) [4] on a batch of n antithetic pairs, every row above the
    threshold: the loss's with ``grad`` ("bound" / "pathwise"), or "exact": the divergence's on the same noise,
    mean(w (s_theta(x_t) - s_d(x_t)) . dx_t/dtheta), with the generator's blurred score s_theta in closed form
    (x0 = a z + b: N(b, a^2 + sigma^2))."""
    gen, posterior = DiagonalLinearGenerator(A, B), LinearGaussianPosterior(A, B, **PERTURBED)
    noise = noise_batch(2 * n, seed, power=1.0)
    if grad == "exact":
        x0 = gen(noise.z)
        x_t = x0 + noise.sigma[:, None] * noise.eps
        force = gaussian_score(B, A.abs())(x_t, noise.sigma) - gaussian_score(M, S)(x_t, noise.sigma)
        (make_weight(WEIGHT, SIGMA_MAX)(noise.sigma) * (force.detach() * x0).sum(-1)).mean().backward()
    else:
        loss(gen, posterior, noise, 0, SIGMA_MIN / 2, grad).loss.backward()
    return torch.cat([gen.a.grad, gen.b.grad])


def test_the_pathwise_gradient_is_closer_to_the_divergences_than_the_bounds():
    """Root mean square over 20 batches of |gradient - exact gradient|: the pathwise one below the bound's at every
    n, both falling with n, the pathwise one within a tenth of the exact gradient's size at n = 1024."""
    errors = {}
    for n in (64, 256, 1024):
        exact = torch.stack([generator_gradient(n, seed, "exact") for seed in range(20)])
        for grad in ("bound", "pathwise"):
            got = torch.stack([generator_gradient(n, seed, grad) for seed in range(20)])
            errors[grad, n] = float((got - exact).pow(2).sum(-1).mean().sqrt())
        signal = float(exact.pow(2).sum(-1).mean().sqrt())
        assert errors["pathwise", n] < 0.85 * errors["bound", n], errors
    for grad in ("bound", "pathwise"):
        assert errors[grad, 1024] < errors[grad, 256] < errors[grad, 64], errors
    assert errors["pathwise", 1024] < 0.1 * signal, (errors, signal)


@pytest.mark.parametrize("k", [0, 4])
def test_the_pathwise_gradient_keeps_the_bounds_value_and_the_posteriors_gradient(k):
    posterior = LinearGaussianPosterior(A, B, **PERTURBED)
    noise = noise_batch(256, 6, power=1.0)
    outs = {}
    for grad in ("bound", "pathwise"):
        torch.manual_seed(7)  # the same posterior draws for K = 4
        outs[grad] = loss(DiagonalLinearGenerator(A, B), posterior, noise, k, 2.5, grad)
    torch.testing.assert_close(outs["pathwise"].loss, outs["bound"].loss, rtol=0, atol=0)
    torch.testing.assert_close(outs["pathwise"].bound, outs["bound"].bound, rtol=0, atol=0)
    gen = DiagonalLinearGenerator(A, B)
    assert_posterior_gradient_is_its_likelihood_term(gen, posterior, noise, loss(gen, posterior, noise, k, 2.5,
                                                                                 "pathwise"),
                                                     make_weight(WEIGHT, SIGMA_MAX))
    with pytest.raises(ValueError, match="prior_proposals_grad"):
        loss(gen, posterior, noise, k, 2.5, "pool")


def test_training_with_pathwise_prior_proposals_stays_finite_and_moves_both_networks():
    flags = ["--true_score", "--width", "32", "--depth", "2", "--batch_size", "64", "--dim", "8", "--sigma_max", "150",
             "--precondition", "--prior_proposals_sigma", "5", "--prior_proposals_grad", "pathwise"]
    trainer = assert_training_stays_finite_and_moves_every_network("vardiu_gaussian", flags)
    assert trainer.method.updates[0].loss_fn.prior_proposals_grad == "pathwise"
