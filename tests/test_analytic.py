"""The central claim, checked exactly on a linear-Gaussian problem (experiments/linear_gaussian.py):
VarDiU's bound and gradients (generator and posterior) are unbiased for U (tight, = the diffusive KL, with the exact
posterior), with or without antithetic pairs and the control variate, and Diff-Instruct's gradient is off by exactly
the error of its student score. Each check compares a Monte-Carlo mean of the project's real loss functions with a
closed form, within 5 standard errors of that mean."""
import pytest
import torch

from experiments.linear_gaussian import (DiagonalLinearGenerator, LinearGaussianPosterior, diff_instruct_bias,
                                         diffusive_kl, gaussian_log_prob, gaussian_score)
from losses.diff_instruct import diff_instruct_generator_loss
from losses.noise import draw_noise, make_weight
from losses.vardiu import vardiu_loss

A, B = torch.tensor([1.5, 0.7], dtype=torch.float64), torch.tensor([0.3, -0.4], dtype=torch.float64)
M, S = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([1.2, 0.9], dtype=torch.float64)
SIGMA_MIN, SIGMA_MAX, POWER, WEIGHT = 0.1, 5.0, 2.0, "sigma"
BATCHES, BATCH = 300, 2048
PERTURBED = dict(alpha=0.8, beta=0.3, kappa=1.5)


def analytic(posterior=None):
    """U (or the diffusive KL) and its gradients: [2, d] in the generator (rows d/da, d/db) and, with a posterior,
    [3] in its parameters (alpha, beta, kappa)."""
    a, b = A.clone().requires_grad_(True), B.clone().requires_grad_(True)
    value = diffusive_kl(a, b, M, S, SIGMA_MIN, SIGMA_MAX, POWER, WEIGHT, posterior)
    params = [] if posterior is None else list(posterior.parameters())
    grads = torch.autograd.grad(value, [a, b, *params])
    return value.detach(), torch.stack(grads[:2]), torch.stack(grads[2:]) if params else None


def monte_carlo(loss_fn, posterior=None, antithetic=False):
    """Per-batch values and gradients of a loss built by loss_fn(generator, noise): generator gradients [K, 2, d]
    and, with a posterior, its parameters' gradients [K, 3]."""
    torch.manual_seed(0)
    gen = DiagonalLinearGenerator(A, B)
    params = [] if posterior is None else list(posterior.parameters())
    values, grads, post_grads = [], [], []
    for _ in range(BATCHES):
        noise = draw_noise(BATCH, 2, SIGMA_MIN, SIGMA_MAX, POWER, antithetic=antithetic, dtype=torch.float64)
        gen.zero_grad()
        for p in params:
            p.grad = None
        loss, value = loss_fn(gen, noise)
        loss.backward()
        values.append(value)
        grads.append(torch.stack([gen.a.grad, gen.b.grad]).clone())
        if params:
            post_grads.append(torch.stack([p.grad.clone() for p in params]))
    return torch.stack(values), torch.stack(grads), torch.stack(post_grads) if params else None


def assert_mean_close(samples, expected):
    mean, se = samples.mean(0), samples.std(0) / BATCHES**0.5
    assert torch.all((mean - expected).abs() < 5 * se), (mean, expected, se)


def vardiu(posterior, control_variate=False):
    def loss_fn(gen, noise):
        out = vardiu_loss(gen, posterior, noise, gaussian_score(M, S), make_weight(WEIGHT, SIGMA_MAX),
                          gaussian_log_prob(M, S), control_variate=control_variate)
        return out.loss, out.bound
    return loss_fn


@pytest.mark.parametrize("antithetic,control_variate", [(False, False), (True, False), (True, True),
                                                        (False, True)])
@pytest.mark.parametrize("perturbed", [False, True])
def test_vardiu_bound_and_gradients_are_unbiased(perturbed, antithetic, control_variate):
    posterior = LinearGaussianPosterior(A, B, **(PERTURBED if perturbed else {}))
    bounds, grads, post_grads = monte_carlo(vardiu(posterior, control_variate), posterior, antithetic)
    u, grad_u, grad_phi = analytic(posterior)
    assert_mean_close(bounds, u)
    assert_mean_close(grads, grad_u)
    assert_mean_close(post_grads, grad_phi)  # the posterior's gradient -E[w grad_phi log q] is that of U too
    dkl, grad_dkl, _ = analytic()
    if perturbed:  # larger than the diffusive KL by the expected posterior gap, and the gradients move with it
        assert float(u - dkl) > 10 * float(bounds.std() / BATCHES**0.5)
        assert float((grad_u - grad_dkl).abs().max()) > 10 * float(grads.std(0).max() / BATCHES**0.5)
        assert float(grad_phi.abs().max()) > 10 * float(post_grads.std(0).max() / BATCHES**0.5)
    else:  # tight: the exact posterior makes U the diffusive KL itself, and a stationary point of the posterior
        assert torch.allclose(u, dkl) and torch.allclose(grad_u, grad_dkl)
        assert torch.allclose(grad_phi, torch.zeros_like(grad_phi), atol=1e-12)


@pytest.mark.parametrize("student", ["exact", "perturbed"])
def test_diff_instruct_gradient_is_off_by_its_student_score_error(student):
    a_s, b_s = (A, B) if student == "exact" else (A * 1.3, B + 0.5)  # exact score of another generator

    def loss_fn(gen, noise):
        loss = diff_instruct_generator_loss(gen, gaussian_score(b_s, a_s.abs()), noise, gaussian_score(M, S),
                                            make_weight(WEIGHT, SIGMA_MAX))
        return loss, loss.detach()

    _, grads, _ = monte_carlo(loss_fn)
    _, grad_dkl, _ = analytic()
    bias = diff_instruct_bias(A, B, a_s, b_s, SIGMA_MIN, SIGMA_MAX, POWER, WEIGHT)
    assert_mean_close(grads, grad_dkl + bias)
    if student == "exact":
        assert torch.allclose(bias, torch.zeros_like(bias))
    else:
        assert float(bias.abs().max()) > 10 * float(grads.std(0).max() / BATCHES**0.5)
