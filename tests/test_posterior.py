"""Posteriors q(z | x_t, sigma): log density against independent formulas, normalisation, sampling, the k draws of
--iw_samples."""
import math

import pytest
import torch
import torch.nn.functional as F

from models import GaussianPosterior


@pytest.fixture
def posterior():
    torch.manual_seed(0)
    return GaussianPosterior(dim=2, width=32, depth=2).double().requires_grad_(False)


def test_log_prob_matches_multivariate_normal(posterior):
    x_t = torch.randn(40, 2, dtype=torch.float64) * 5
    sigma = torch.rand(40, dtype=torch.float64) * 10 + 0.1
    z = torch.randn(40, 2, dtype=torch.float64)
    # Independent read-out of the network and a full-covariance MultivariateNormal.
    raw = posterior.net(torch.cat([x_t, sigma[:, None]], -1))
    mean, std = raw[:, :2], F.softplus(raw[:, 2:]) * sigma[:, None]
    expected = torch.stack([
        torch.distributions.MultivariateNormal(mean[i], torch.diag(std[i] ** 2)).log_prob(z[i]) for i in range(40)])
    assert torch.allclose(posterior.log_prob(z, x_t, sigma), expected, atol=1e-10)


@pytest.mark.parametrize("sigma", [0.3, 2.0])
def test_density_integrates_to_one_over_z(posterior, sigma):
    x_t = torch.tensor([[1.5, -2.0]], dtype=torch.float64)
    s = torch.tensor([sigma], dtype=torch.float64)
    mean, std = posterior.mean_std(x_t, s)
    half = 8 * float(std.max())
    n = 801
    axes = [torch.linspace(float(mean[0, i]) - half, float(mean[0, i]) + half, n, dtype=torch.float64)
            for i in range(2)]
    zz = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
    mass = posterior.log_prob(zz, x_t.expand(len(zz), 2), s.expand(len(zz))).exp().sum() * cell
    assert float(mass) == pytest.approx(1.0, abs=1e-3)


def test_std_scales_with_sigma_and_samples_match(posterior):
    x_t = torch.tensor([[0.5, 0.5]], dtype=torch.float64).expand(50_000, 2)
    sigma = torch.full((50_000,), 1.7, dtype=torch.float64)
    mean, std = posterior.mean_std(x_t, sigma)
    raw = posterior.net(torch.cat([x_t[:1], sigma[:1, None]], -1))
    assert torch.allclose(std[0], F.softplus(raw[0, 2:]) * 1.7)
    z = posterior.sample(x_t, sigma, generator=torch.Generator().manual_seed(0))
    se = std[0] / math.sqrt(50_000)
    assert torch.all((z.mean(0) - mean[0]).abs() < 5 * se)
    assert torch.allclose(z.std(0), std[0], rtol=0.02)


@pytest.mark.parametrize("flow", [None, "NSF"])
def test_k_draws_are_scored_as_log_prob_scores_them(flow):
    """log_prob_and_draws(z, x_t, sigma, k) (--iw_samples): its log q(z) is log_prob's, and the log q of draw j
    [k, B] is log_prob of that draw under the same row's x_t and sigma; the flow shares each row's context across
    its k draws, so a draw scored under another row's context would differ. Weights perturbed so the flow is not
    the identity it starts as."""
    from models.flows import FlowPosterior

    torch.manual_seed(0)
    q = (GaussianPosterior(3, 32, 2, data_std=5.0) if flow is None
         else FlowPosterior(3, flow, flow_length=2, width=32, depth=2, data_std=5.0)).double()
    with torch.no_grad():
        for p in q.parameters():
            p.add_(0.3 * torch.randn_like(p))
    b, k = 6, 4
    x_t = torch.randn(b, 3, dtype=torch.float64) * 5
    sigma = torch.rand(b, dtype=torch.float64) * 10 + 0.1
    z = torch.randn(b, 3, dtype=torch.float64)
    with torch.no_grad():
        log_q_z, draws, log_q_draws = q.log_prob_and_draws(z, x_t, sigma, k)
        assert draws.shape == (k, b, 3) and log_q_draws.shape == (k, b)
        torch.testing.assert_close(log_q_z, q.log_prob(z, x_t, sigma), rtol=1e-9, atol=1e-9)
        again = torch.stack([q.log_prob(draws[j], x_t, sigma) for j in range(k)])
        torch.testing.assert_close(log_q_draws, again, rtol=1e-7, atol=1e-7)
        assert (draws[0] - draws[1]).abs().min() > 0  # k independent draws, not one repeated
