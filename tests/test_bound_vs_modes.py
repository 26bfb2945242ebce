"""experiments/bound_vs_modes.py: the divergence and the prior-proposal bound of m-mode generators, against their
closed-form limits, and the script's result file."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import mog40_mixtures

from experiments.bound_vs_modes import kept_share, kl_and_bound, main


def test_the_divergence_of_m_separated_modes_is_log_40_over_m():
    # at d = 8 the means are tens of stds apart, so KL(p_m || p_d) = log(40 / m) to many digits
    for m in (1, 5, 40):
        generator, target = mog40_mixtures(8, m)
        kl, _ = kl_and_bound(generator, target, 0.5, 256, 4, torch.Generator().manual_seed(0))
        torch.testing.assert_close(kl, torch.full((4,), math.log(40 / m), dtype=torch.float64), atol=1e-6, rtol=0)


def test_the_bound_is_above_the_divergence():
    for sigma in (2.0, 10.0):
        generator, target = mog40_mixtures(8, 10)
        kl, bound = kl_and_bound(generator, target, sigma, 256, 8, torch.Generator().manual_seed(1))
        gap = bound - kl
        assert gap.mean() > 3 * gap.std() / math.sqrt(8)  # the gap of an upper bound: positive beyond the noise


def test_at_vanishing_noise_the_bound_is_flat_in_m():
    # sigma -> 0: each row's own draw carries all the weight, so the bound's integrand tends to
    # log N(sigma eps; 0, sigma^2 I) - log n - log p_d(x0), whose mean does not depend on m, while the
    # divergence's difference stays log(40 / m)
    gen = torch.Generator().manual_seed(2)
    kl1, bound1 = kl_and_bound(*mog40_mixtures(8, 1), 0.01, 512, 8, gen)
    kl40, bound40 = kl_and_bound(*mog40_mixtures(8, 40), 0.01, 512, 8, gen)
    assert abs(float(kl1.mean() - kl40.mean()) - math.log(40)) < 1e-3
    assert abs(float(bound1.mean() - bound40.mean())) < 0.15  # against log 40 = 3.69


def test_the_kept_share_and_its_standard_error():
    gen = torch.Generator().manual_seed(3)
    kl_m, kl_all = 1.0 + 0.1 * torch.randn(8, generator=gen), 0.1 * torch.randn(8, generator=gen)
    # a bound whose per-batch drop is exactly half the divergence's: share 0.5, no spread of the residual
    ratio, se = kept_share(kl_m, 0.5 * kl_m + 3.0, kl_all, 0.5 * kl_all + 3.0)
    assert abs(ratio - 0.5) < 1e-6 and se < 1e-6
    # independent noise of std 0.1 on each bound: the residual's std is about sqrt(2) * 0.1 (+ the kl noise's share)
    ratio, se = kept_share(kl_m, kl_m + 0.1 * torch.randn(8, generator=gen), kl_all,
                           kl_all + 0.1 * torch.randn(8, generator=gen))
    assert abs(ratio - 1.0) < 0.3 and 0.02 < se < 0.12


def test_the_script_writes_its_rows_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "d8.json"
    result = main(["--dim", "8", "--draws", "128", "--batches", "4", "--modes", "1", "--sigmas", "0.01,20",
                   "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == result["rows"] and saved["modes"] == [1, 40]
    low, high = (row["by_m"]["1"] for row in saved["rows"])
    assert abs(low["kept"]) < 0.1 < 0.9 < high["kept"]  # none of the pull at sigma 0.01, nearly all at 20
    assert "kept" not in saved["rows"][0]["by_m"]["40"]
    with pytest.raises(SystemExit) as exc:
        main(["--dim", "8", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists" in err[-1]
