"""The central claim, checked exactly on a linear-Gaussian problem (experiments/linear_gaussian.py):
VarDiU's bound and gradient are unbiased for U (tight, = the diffusive KL, with the exact posterior), and
Diff-Instruct's gradient is off by exactly the error of its student score. Each check compares a Monte-Carlo mean
of the project's real loss functions with a closed form, within 5 standard errors of that mean."""
import pytest
import torch

from experiments.linear_gaussian import (DiagonalLinearGenerator, LinearGaussianPosterior, diff_instruct_bias,
                                         diffusive_kl, gaussian_log_prob, gaussian_score)
from losses.diff_instruct import diff_instruct_generator_loss
from losses.vardiu import draw_noise, vardiu_loss

A, B = torch.tensor([1.5, 0.7], dtype=torch.float64), torch.tensor([0.3, -0.4], dtype=torch.float64)
M, S = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([1.2, 0.9], dtype=torch.float64)
SIGMA_MIN, SIGMA_MAX, POWER, WEIGHT = 0.1, 5.0, 2.0, "sigma"
BATCHES, BATCH = 300, 2048
PERTURBED = dict(alpha=0.8, beta=0.3, kappa=1.5)


def analytic(posterior=None):
    """U (or the diffusive KL) and its gradient [2, d] (rows d/da, d/db) from the closed form."""
    a, b = A.clone().requires_grad_(True), B.clone().requires_grad_(True)
    value = diffusive_kl(a, b, M, S, SIGMA_MIN, SIGMA_MAX, POWER, WEIGHT, posterior)
    return value.detach(), torch.stack(torch.autograd.grad(value, [a, b]))


def monte_carlo(loss_fn):
    """Per-batch values and gradients [K, 2, d] of a loss built by loss_fn(generator, noise)."""
    torch.manual_seed(0)
    gen = DiagonalLinearGenerator(A, B)
    values, grads = [], []
    for _ in range(BATCHES):
        noise = draw_noise(BATCH, 2, SIGMA_MIN, SIGMA_MAX, POWER, antithetic=False, dtype=torch.float64)
        gen.zero_grad()
        loss, value = loss_fn(gen, noise)
        loss.backward()
        values.append(value)
        grads.append(torch.stack([gen.a.grad, gen.b.grad]).clone())
    return torch.stack(values), torch.stack(grads)


def assert_mean_close(samples, expected):
    mean, se = samples.mean(0), samples.std(0) / BATCHES**0.5
    assert torch.all((mean - expected).abs() < 5 * se), (mean, expected, se)


def vardiu(posterior):
    def loss_fn(gen, noise):
        out = vardiu_loss(gen, posterior, noise, gaussian_score(M, S), WEIGHT, SIGMA_MAX, gaussian_log_prob(M, S))
        return out.loss, out.bound
    return loss_fn


@pytest.mark.parametrize("perturbed", [False, True])
def test_vardiu_bound_and_gradient_are_unbiased(perturbed):
    posterior = LinearGaussianPosterior(A, B, **(PERTURBED if perturbed else {}))
    bounds, grads = monte_carlo(vardiu(posterior))
    u, grad_u = analytic(posterior)
    assert_mean_close(bounds, u)
    assert_mean_close(grads, grad_u)
    dkl, grad_dkl = analytic()
    if perturbed:  # larger than the diffusive KL by the expected posterior gap, and the gradient moves with it
        assert float(u - dkl) > 10 * float(bounds.std() / BATCHES**0.5)
        assert float((grad_u - grad_dkl).abs().max()) > 10 * float(grads.std(0).max() / BATCHES**0.5)
    else:  # tight: the exact posterior makes U the diffusive KL itself
        assert torch.allclose(u, dkl) and torch.allclose(grad_u, grad_dkl)


@pytest.mark.parametrize("student", ["exact", "perturbed"])
def test_diff_instruct_gradient_is_off_by_its_student_score_error(student):
    a_s, b_s = (A, B) if student == "exact" else (A * 1.3, B + 0.5)  # exact score of another generator

    def loss_fn(gen, noise):
        loss = diff_instruct_generator_loss(gen, gaussian_score(b_s, a_s.abs()), noise, gaussian_score(M, S),
                                            WEIGHT, SIGMA_MAX)
        return loss, loss.detach()

    _, grads = monte_carlo(loss_fn)
    _, grad_dkl = analytic()
    bias = diff_instruct_bias(A, B, a_s, b_s, SIGMA_MIN, SIGMA_MAX, POWER, WEIGHT)
    assert_mean_close(grads, grad_dkl + bias)
    if student == "exact":
        assert torch.allclose(bias, torch.zeros_like(bias))
    else:
        assert float(bias.abs().max()) > 10 * float(grads.std(0).max() / BATCHES**0.5)
