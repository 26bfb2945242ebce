"""The VarDiU loss: noise sampling, antithetic pairs, weights, annealing, and the gradients of docs/method.md section 2."""
import math

import pytest
import torch

from losses.noise import NoiseBatch, NoiseSampler, PowerSchedule, draw_noise, make_weight, sample_sigma
from losses.vardiu import vardiu_bound_terms, vardiu_loss
from experiments.linear_gaussian import LinearGaussianPosterior, gaussian_kl, gaussian_log_prob
from models import GaussianPosterior
from utils.targets import mog9


def test_antithetic_pairs_share_z_and_sigma_and_negate_eps():
    torch.manual_seed(0)
    nb = draw_noise(10, 2, 0.1, 20.0, 1.0, antithetic=True)
    assert nb.z.shape == (10, 2) and nb.eps.shape == (10, 2) and nb.sigma.shape == (10,)
    assert torch.equal(nb.z[:5], nb.z[5:])
    assert torch.equal(nb.sigma[:5], nb.sigma[5:])
    assert torch.equal(nb.eps[:5], -nb.eps[5:])
    assert not torch.equal(nb.z[:5], nb.z[5:].flip(0))  # the pairs are distinct draws


def test_without_antithetic_every_row_is_independent():
    torch.manual_seed(0)
    nb = draw_noise(7, 2, 0.1, 20.0, 1.0, antithetic=False)
    assert nb.z.shape == (7, 2)
    assert len(set(nb.sigma.tolist())) == 7
    assert not torch.allclose(nb.eps[:3], -nb.eps[3:6])


@pytest.mark.parametrize("power", [0.1, 1.0, 2.0])
def test_sigma_sampler_has_the_stated_distribution(power):
    """sigma = lo + u^p (hi - lo)  =>  P(sigma <= s) = ((s - lo) / (hi - lo))^(1/p)."""
    torch.manual_seed(1)
    lo, hi, n = 0.1, 20.0, 200_000
    s = sample_sigma(n, lo, hi, torch.tensor(power))
    assert float(s.min()) >= lo and float(s.max()) <= hi
    for q in [1.0, 5.0, 10.0, 15.0]:
        expected = ((q - lo) / (hi - lo)) ** (1 / power)
        assert float((s <= q).double().mean()) == pytest.approx(expected, abs=4 * math.sqrt(0.25 / n))


def test_log_spaced_sigmas_are_log_uniform_and_ignore_the_power():
    """spacing="log": P(sigma <= s) = log(s / lo) / log(hi / lo), whatever power is passed."""
    torch.manual_seed(2)
    lo, hi, n = 0.1, 40.0, 200_000
    sampler = NoiseSampler(n, lo, hi, antithetic=False, spacing="log")
    for power in (0.1, 5.0):
        s = sampler.sigmas(torch.tensor(power))
        assert s.shape == (n,) and float(s.min()) >= lo and float(s.max()) <= hi * (1 + 1e-6)
        for q in [0.2, 1.0, 4.0, 20.0]:
            expected = math.log(q / lo) / math.log(hi / lo)
            assert float((s <= q).double().mean()) == pytest.approx(expected, abs=4 * math.sqrt(0.25 / n))
    with pytest.raises(ValueError, match="unknown sigma spacing"):
        NoiseSampler(8, lo, hi, spacing="cosine")


def test_sigma_weights():
    s = torch.tensor([1.0, 10.0, 20.0])
    assert torch.equal(make_weight("uniform", 20.0)(s), torch.ones(3))
    assert torch.allclose(make_weight("sigma", 20.0)(s), s / 20)
    assert torch.allclose(make_weight("sigma2", 20.0)(s), (s / 20) ** 2)
    assert torch.allclose(make_weight("sigma4", 20.0)(s), (s / 20) ** 4)


def test_annealed_power_schedule():
    schedule = PowerSchedule()  # the reference's: 0.1, +0.01 every 1000 iterations, capped at 2.0
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(999) == pytest.approx(0.1)
    assert schedule(1000) == pytest.approx(0.11)
    assert schedule(1_000_000) == pytest.approx(2.0)  # capped
    assert PowerSchedule(cap=None)(1_000_000) == pytest.approx(10.1)
    assert PowerSchedule(start=0.5, step=0.1, interval=100, cap=None)(250) == pytest.approx(0.7)


class LinearGenerator(torch.nn.Module):
    """x0 = A z + b, so dx0/dA_jk = delta_j z_k and dx0/db = I."""

    def __init__(self, dim=2):
        super().__init__()
        self.dim = dim
        self.A = torch.nn.Parameter(torch.tensor([[1.3, 0.4], [-0.2, 0.8]], dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor([0.5, -1.0], dtype=torch.float64))

    def forward(self, z):
        return z @ self.A.T + self.b


@pytest.mark.parametrize("weight", ["uniform", "sigma2"])
def test_gradients_equal_hand_derived_formulas(weight):
    torch.manual_seed(0)
    gen = LinearGenerator()
    post = GaussianPosterior(2, width=16, depth=2).double()
    target = mog9()
    nb = draw_noise(12, 2, 0.3, 5.0, 1.0, antithetic=True, dtype=torch.float64)
    out = vardiu_loss(gen, post, nb, target.score, make_weight(weight, 5.0))
    out.loss.backward()

    with torch.no_grad():
        x_t = gen(nb.z) + nb.sigma[:, None] * nb.eps
        w = torch.ones_like(nb.sigma) if weight == "uniform" else (nb.sigma / 5.0) ** 2
        s_d = target.score(x_t, nb.sigma)

    # grad_{x_t} log q by central finite differences (independent of autograd).
    h = 1e-6
    grad_x = torch.zeros_like(x_t)
    for j in range(2):
        e = torch.zeros_like(x_t)
        e[:, j] = h
        with torch.no_grad():
            grad_x[:, j] = (post.log_prob(nb.z, x_t + e, nb.sigma) - post.log_prob(nb.z, x_t - e, nb.sigma)) / (2 * h)
    g = w[:, None] * (grad_x + s_d)  # [B, d]
    expected_A = -(g[:, :, None] * nb.z[:, None, :]).mean(0)
    expected_b = -g.mean(0)
    assert torch.allclose(gen.A.grad, expected_A, rtol=1e-6, atol=1e-8)
    assert torch.allclose(gen.b.grad, expected_b, rtol=1e-6, atol=1e-8)

    # Posterior: -E[w grad_phi log q(z | x_t, sigma)] with x_t held fixed, by central finite differences in every
    # parameter (independent of autograd).
    def posterior_objective():
        with torch.no_grad():
            return -(w * post.log_prob(nb.z, x_t, nb.sigma)).mean()
    for p in post.parameters():
        flat, expected = p.data.view(-1), torch.empty(p.numel(), dtype=p.dtype)
        for i in range(p.numel()):
            keep = flat[i].item()
            flat[i] = keep + h
            up = posterior_objective()
            flat[i] = keep - h
            down = posterior_objective()
            flat[i] = keep
            expected[i] = (up - down) / (2 * h)
        assert torch.allclose(p.grad.view(-1), expected, rtol=1e-5, atol=1e-8)


def test_bound_terms_with_exact_posterior_equal_log_density_ratio_per_sample():
    """log p(z) + log N(sigma eps) - log p(z|x_t) = log p_theta(x_t) exactly, so with the exact posterior each
    bound term is log p_theta(x_t) - log p_d(x_t), and the batch mean estimates the KL (closed form here)."""
    torch.manual_seed(0)
    a = torch.tensor([1.5, 0.7], dtype=torch.float64)
    b = torch.tensor([0.3, -0.4], dtype=torch.float64)
    m_d, s_d = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([1.2, 0.9], dtype=torch.float64)
    sigma_val = 0.8
    n = 200_000
    nb = NoiseBatch(torch.randn(n, 2, dtype=torch.float64), torch.randn(n, 2, dtype=torch.float64),
                    torch.full((n,), sigma_val, dtype=torch.float64))
    x_t = a * nb.z + b + sigma_val * nb.eps
    log_p_theta = gaussian_log_prob(b, a)(x_t, nb.sigma)  # N(b, a^2 + sigma^2)
    log_p_d = gaussian_log_prob(m_d, s_d)(x_t, nb.sigma)

    log_q = LinearGaussianPosterior(a, b).log_prob(nb.z, x_t, nb.sigma).detach()
    terms = vardiu_bound_terms(nb, log_q, log_p_d)
    assert torch.allclose(terms, log_p_theta - log_p_d, atol=1e-9)
    kl = gaussian_kl(b, a**2 + sigma_val**2, m_d, s_d**2 + sigma_val**2)
    se = float(terms.std()) / math.sqrt(n)
    assert float(terms.mean()) == pytest.approx(float(kl), abs=5 * se)


def test_loss_returns_bound_only_when_log_density_known():
    torch.manual_seed(0)
    gen = LinearGenerator().float()
    post = GaussianPosterior(2, width=8, depth=1)
    target = mog9()
    nb = draw_noise(8, 2, 0.1, 5.0, 1.0)
    assert vardiu_loss(gen, post, nb, target.score, make_weight("sigma2", 5.0)).bound is None
    out = vardiu_loss(gen, post, nb, target.score, make_weight("sigma2", 5.0), target.log_prob)
    assert out.bound is not None and out.bound.dim() == 0 and torch.isfinite(out.bound)


def loss_and_gradients(reduction: str, weight: str):
    """The VarDiU loss of one fixed batch and its gradients (generator, posterior) under a weight reduction."""
    torch.manual_seed(0)
    gen = LinearGenerator()
    post = GaussianPosterior(2, width=16, depth=2).double()
    torch.manual_seed(1)
    nb = draw_noise(64, 2, 0.1, 5.0, 1.0, antithetic=True, dtype=torch.float64)
    out = vardiu_loss(gen, post, nb, mog9().score, make_weight(weight, 5.0), mog9().log_prob, reduction=reduction)
    out.loss.backward()
    grads = [p.grad.clone() for p in [*gen.parameters(), *post.parameters()]]
    return out, grads, gen, post, nb


@pytest.mark.parametrize("weight", ["sigma2", "sigma"])
def test_batch_reduction_is_the_reference_codes_broadcast(weight):
    """--weight_reduction batch computes what the authors' scripts compute: their weight is [B, 1] and the terms
    [B], so -(weight * terms).mean() is the mean of the [B, B] matrix w_i L_j."""
    out, _, gen, post, nb = loss_and_gradients("batch", weight)
    with torch.no_grad():
        x0 = gen(nb.z)
        x_t = x0 + nb.sigma[:, None] * nb.eps
        terms = post.log_prob(nb.z, x_t, nb.sigma) + (mog9().score(x_t, nb.sigma) * x0).sum(-1)  # [B]
        w = (nb.sigma / 5.0) ** (1 if weight == "sigma" else 2)
        reference = -(w[:, None] * terms[None, :]).mean()  # the reference's broadcast, written out
        per_sample = -(w * terms).mean()
    torch.testing.assert_close(out.loss.detach(), reference, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(reference, per_sample, rtol=1e-3)  # the two reductions really differ here


def test_reductions_agree_with_uniform_weights():
    """With w = 1 the batch-mean weight is 1 and both reductions are the same loss, bound and gradients."""
    out_s, grads_s, *_ = loss_and_gradients("sample", "uniform")
    out_b, grads_b, *_ = loss_and_gradients("batch", "uniform")
    torch.testing.assert_close(out_b.loss, out_s.loss, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(out_b.bound, out_s.bound, rtol=1e-14, atol=1e-14)
    for g_b, g_s in zip(grads_b, grads_s):
        torch.testing.assert_close(g_b, g_s, rtol=1e-12, atol=1e-14)
    out_w, grads_w, *_ = loss_and_gradients("batch", "sigma2")  # and with non-uniform weights they differ
    assert not torch.allclose(grads_w[0], grads_s[0])
