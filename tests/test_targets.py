"""Targets: the stored MoG40 means, log densities, analytic diffused scores, sampling."""
import math

import pytest
import torch

from utils.targets import GaussianMixture, mog9, mog40, mog40_means, mog40_means_from_seed


def test_stored_means_equal_seeded_construction():
    assert torch.equal(mog40_means(), mog40_means_from_seed())
    assert mog40_means().shape == (40, 2)


def test_mog40_std_is_softplus_one():
    assert mog40().std == pytest.approx(math.log1p(math.e), rel=1e-6)


def test_true_samples_mean_log_density_matches_design_value():
    target = mog40()
    x = target.sample(10_000, generator=torch.Generator().manual_seed(0))
    assert float(target.log_prob(x).mean()) == pytest.approx(-6.85, abs=0.05)


@pytest.mark.parametrize("sigma", [0.0, 0.1, 1.0, 7.5, 20.0])
def test_log_prob_matches_explicit_component_sum(sigma):
    """log p(x | sigma) against an independent per-component sum with torch.distributions (float64)."""
    target = mog9()
    x = torch.randn(50, 2, dtype=torch.float64) * 4
    var = target.std**2 + sigma**2
    comps = [torch.distributions.MultivariateNormal(m.double(), var * torch.eye(2, dtype=torch.float64))
             for m in target.means]
    expected = torch.logsumexp(torch.stack([c.log_prob(x) for c in comps]), 0) - math.log(len(comps))
    assert torch.allclose(target.log_prob(x, sigma), expected, atol=1e-10)


@pytest.mark.parametrize("make", [mog9, mog40])
def test_score_equals_autograd_of_diffused_log_density(make):
    target = make()
    x = (torch.rand(64, 2, dtype=torch.float64) - 0.5) * 100
    sigma = torch.rand(64, dtype=torch.float64) * 20 + 0.05  # one noise level per row
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(target.log_prob(x, sigma).sum(), x)
    assert torch.allclose(target.score(x.detach(), sigma), grad, rtol=1e-8, atol=1e-10)
    # A scalar sigma agrees with the per-row form.
    assert torch.allclose(target.score(x.detach(), 3.0), target.score(x.detach(), torch.full((64,), 3.0,
                          dtype=torch.float64)), atol=1e-12)


@pytest.mark.parametrize("sigma", [0.0, 0.5, 3.0])
def test_density_integrates_to_one_on_a_grid(sigma):
    target = mog9()
    lim, n = 5 + 8 * math.sqrt(target.std**2 + sigma**2), 801
    grid = torch.linspace(-lim, lim, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    cell = (grid[1] - grid[0]) ** 2
    assert float(target.log_prob(pts, sigma).exp().sum() * cell) == pytest.approx(1.0, abs=1e-3)


def test_sampling_statistics_match_the_mixture():
    target = mog40()
    n = 200_000
    x = target.sample(n, generator=torch.Generator().manual_seed(1)).double()
    means = target.means.double()
    mean = means.mean(0)
    cov = torch.cov(means.T, correction=0) + target.std**2 * torch.eye(2, dtype=torch.float64)
    # Standard error of the sample mean is sqrt(diag(cov) / n) ~ 0.05; allow 5 standard errors.
    assert torch.allclose(x.mean(0), mean, atol=5 * float(cov.diag().max().sqrt()) / math.sqrt(n))
    assert torch.allclose(torch.cov(x.T), cov, rtol=0.02, atol=2.0)
    idx, dist = target.nearest_mode(x)
    counts = torch.bincount(idx, minlength=40).double() / n
    assert float((counts - 1 / 40).abs().max()) < 0.004  # every mode carries its 1/40 share
    assert float((dist <= 3).double().mean()) == pytest.approx(1 - math.exp(-4.5), abs=0.003)


def test_sample_is_device_independent_for_a_cpu_generator():
    target = GaussianMixture(torch.randn(5, 3), 0.3)
    a = target.sample(10, generator=torch.Generator().manual_seed(3))
    b = target.sample(10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (10, 3)
