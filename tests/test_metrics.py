"""Metrics: multi-bandwidth MMD against a direct O(n^2) formula, mode coverage."""
import math

import numpy as np
import pytest
import torch

from utils.metrics import MMD_BANDWIDTHS, SampleEvaluator, mean_kernel, mmd, mode_coverage
from utils.targets import mog9, mog40


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
