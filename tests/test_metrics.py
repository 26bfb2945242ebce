"""Metrics: multi-bandwidth MMD against a direct O(n^2) formula, mode coverage; the high-dimensional metrics against
closed forms."""
import math

import numpy as np
import pytest
import torch

from utils.metrics import (MMD_BANDWIDTHS, NEAR_MODE_PROBABILITY, SampleEvaluator, energy_distance, mean_distance, mean_kernel,
                           mmd, mode_coverage, mode_radius, mode_weight_error, sliced_wasserstein, unit_directions)
from utils.targets import mog9, mog40, mog40_means_from_seed


def direct_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Biased MMD^2 by explicit double loops over pairs, kernel averaged over the bandwidths."""
    def k(a, b):
        d2 = float(((a - b) ** 2).sum())
        return sum(math.exp(-d2 / (2 * h * h)) for h in MMD_BANDWIDTHS) / len(MMD_BANDWIDTHS)

    def mean_k(a, b):
        return sum(k(ai, bj) for ai in a for bj in b) / (len(a) * len(b))

    return mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y)


def test_mmd_equals_direct_formula_on_small_sets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(23, 2, generator=g, dtype=torch.float64)
    y = torch.randn(17, 2, generator=g, dtype=torch.float64) * 1.5 + 0.7
    expected = direct_mmd(x.numpy(), y.numpy())
    assert float(mmd(x, y)) == pytest.approx(expected, rel=1e-9)


def test_mmd_zero_for_identical_sets_and_symmetric():
    x = torch.randn(300, 2) * 3
    y = torch.randn(250, 2) * 3 + 1
    assert float(mmd(x, x)) < 1e-6
    assert float(mmd(x, y)) == pytest.approx(float(mmd(y, x)), rel=1e-6)
    assert float(mmd(x, y)) > 1e-3


def test_mean_kernel_is_independent_of_chunking():
    x, y = torch.randn(101, 2), torch.randn(37, 2)
    assert float(mean_kernel(x, y, chunk=7)) == pytest.approx(float(mean_kernel(x, y, chunk=4096)), rel=1e-6)


def test_mode_coverage_counts_modes_and_near_fraction():
    target = mog40()
    x = target.sample(20_000, generator=torch.Generator().manual_seed(0))
    modes, near = mode_coverage(x, target)
    assert modes == 40
    assert near == pytest.approx(1 - math.exp(-4.5), abs=0.005)
    collapsed = target.means[3] + target.std * torch.randn(1000, 2)
    modes, near = mode_coverage(collapsed, target)
    assert modes == 1
    far = torch.full((100, 2), 1000.0)
    assert mode_coverage(far, target) == (0, 0.0)


def test_evaluator_on_true_samples_reaches_the_floor():
    target = mog9()
    ev = SampleEvaluator(target, 2000, seed=1)
    m = ev(target.sample(2000, generator=torch.Generator().manual_seed(2)))
    assert m["modes"] == 9
    assert m["logpd"] == pytest.approx(float(target.log_prob(ev.reference).mean()), abs=0.1)
    assert m["mmd"] == pytest.approx(float(mmd(target.sample(2000, generator=torch.Generator().manual_seed(2)),
                                                ev.reference)), rel=1e-5)
    bad = ev(target.means[0] + 0.01 * torch.randn(2000, 2))
    assert bad["log_mmd"] > m["log_mmd"] + 2


@pytest.mark.parametrize("bandwidths", [MMD_BANDWIDTHS, (0.3, 1.0, 2.5), (1.0,)])
def test_kernel_mean_matches_plain_exponentials_for_any_bandwidths(bandwidths):
    x = torch.randn(200, 2, dtype=torch.float64) * 3
    y = torch.randn(150, 2, dtype=torch.float64) * 3
    d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
    expected = sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths).mean() / len(bandwidths)
    assert float(mean_kernel(x, y, bandwidths, chunk=64)) == pytest.approx(float(expected), rel=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# Beyond 2-D


def test_mode_radius_holds_the_same_share_of_a_component_in_every_dimension():
    assert mode_radius(2) == 3.0
    for d in (8, 32):
        norms = torch.randn(200_000, d, generator=torch.Generator().manual_seed(d)).norm(dim=1)
        assert float((norms <= mode_radius(d)).float().mean()) == pytest.approx(NEAR_MODE_PROBABILITY, abs=2e-3)


def test_mode_weight_error_of_equal_and_collapsed_shares():
    target = mog40(8)
    equal = target.means.repeat(5, 1)  # every mode five times
    assert mode_weight_error(equal, target) == pytest.approx(0.0, abs=1e-12)
    one = target.means[3].repeat(200, 1)
    assert mode_weight_error(one, target) == pytest.approx(1 - 1 / 40)
    half = torch.cat([target.means[:20].repeat(2, 1), target.means[:20].repeat(2, 1)])  # 20 modes, equal shares
    assert mode_weight_error(half, target) == pytest.approx(0.5)


def test_energy_distance_closed_forms():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=g, dtype=torch.float64)
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    a, b = torch.zeros(50, 3, dtype=torch.float64), torch.full((40, 3), 2.0, dtype=torch.float64)
    assert energy_distance(a, b) == pytest.approx(2 * math.sqrt(12))  # 2 |a - b|, both sets point masses
    assert mean_distance(a, b) == pytest.approx(math.sqrt(12))


def test_sliced_wasserstein_of_a_shifted_sample_is_the_projected_shift():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(500, 6, generator=g, dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, 1.0], dtype=torch.float64)
    dirs = unit_directions(6, 64, seed=3).double()
    expected = math.sqrt(float(((dirs @ shift) ** 2).mean()))  # sorting keeps the pairing of a shifted sample
    assert sliced_wasserstein(y + shift, y, dirs) == pytest.approx(expected, rel=1e-9)
    assert sliced_wasserstein(y, y, dirs) == 0.0
    many = unit_directions(6, 20_000, seed=4).double()  # E (theta . c)^2 = |c|^2 / d on the sphere
    assert sliced_wasserstein(y + shift, y, many) ** 2 == pytest.approx(float(shift @ shift) / 6, rel=0.03)


def test_high_dimensional_evaluator_scores_true_and_collapsed_samples():
    target = mog40(8)
    evaluator = SampleEvaluator(target, 4000, seed=0)
    true = evaluator(target.sample(4000, generator=torch.Generator().manual_seed(7)))
    assert true["modes"] == 40 and true["near_mode"] == pytest.approx(NEAR_MODE_PROBABILITY, abs=0.01)
    assert true["mode_tv"] < 0.05 and true["logpd"] == pytest.approx(true["logpd_true"], abs=0.2)
    assert true["logpd_true"] == pytest.approx(-17.23, abs=0.2)
    collapsed = evaluator(target.means[0] + target.std * torch.randn(4000, 8, generator=torch.Generator().manual_seed(8)))
    assert collapsed["modes"] == 1 and collapsed["mode_tv"] == pytest.approx(1 - 1 / 40, abs=1e-9)
    assert collapsed["energy"] > 100 * max(true["energy"], 1e-3) and collapsed["sliced_w2"] > 5 * true["sliced_w2"]
    # a collapsed generator can score a log density above the true samples' (the reason for the other metrics)
    assert collapsed["logpd"] > true["logpd_true"]


def test_two_dimensional_evaluator_keeps_the_papers_five_metrics():
    out = SampleEvaluator(mog40(), 500, seed=0)(mog40().sample(500, generator=torch.Generator().manual_seed(1)))
    assert list(out) == ["logpd", "mmd", "log_mmd", "modes", "near_mode"]


def test_mog40_in_d_dimensions_is_the_seeded_construction():
    assert torch.equal(mog40(2).means, mog40().means) and mog40(2).name == "mog40"
    # the largest distance between two means (the noise that merges every mode needs sigma_max near it)
    assert float(torch.pdist(mog40().means.double()).max()) == pytest.approx(96.1, abs=0.1)
    for d, largest in [(8, 146.8), (32, 253.3), (128, 416.7)]:
        target = mog40(d)
        assert target.means.shape == (40, d) and target.name == f"mog40_d{d}"
        assert torch.equal(target.means, mog40_means_from_seed(d))
        assert float(torch.pdist(target.means.double()).max()) == pytest.approx(largest, abs=0.1)
