"""experiments/prior_force.py: the exact, bound and pathwise forces on a generator's draws, by hand and against
each other, and the script's result file."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import mog40_mixtures

from experiments.prior_force import forces, main, summarise


def test_a_generator_on_the_target_feels_no_exact_force():
    generator, target = mog40_mixtures(8, 40)
    got = forces(generator, target, 20.0, 64, torch.Generator().manual_seed(0))
    assert got["exact"].abs().max() < 1e-12
    assert got["bound"].abs().max() > 1e-4 and got["pathwise"].abs().max() > 1e-4  # the estimates' own error


def test_the_forces_by_hand():
    """Replaying the batch's random numbers: pathwise is the pool's kernel score minus the target's score, summed
    over a draw's two rows; bound is the surrogate's derivative, checked by central differences."""
    generator, target = mog40_mixtures(8, 10)
    sigma, n = 10.0, 16
    got = forces(generator, target, sigma, n, torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    x0 = generator.sample(n, generator=gen).double()
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    x_t = torch.cat([x0 + sigma * eps, x0 - sigma * eps])
    diff = x0.unsqueeze(0) - x_t.unsqueeze(1)  # [2n, n, d]: x0_j - x_t^r
    weights = torch.softmax(-diff.pow(2).sum(-1) / (2 * sigma**2), -1)
    kernel_score = (weights.unsqueeze(-1) * diff).sum(1) / sigma**2
    per_row = kernel_score - target.score(x_t, sigma)
    torch.testing.assert_close(got["pathwise"], per_row[:n] + per_row[n:], rtol=1e-9, atol=1e-12)

    score = target.score(x_t, sigma)  # held fixed: the loss takes s_d without gradient

    def surrogate(x0):
        pool, rows = torch.cat([x0, x0]), torch.cat([x0 + sigma * eps, x0 - sigma * eps])
        log_avg = torch.logsumexp(-(rows.unsqueeze(1) - x0.unsqueeze(0)).pow(2).sum(-1) / (2 * sigma**2), -1)
        return (log_avg - (score * pool).sum(-1)).sum()  # constants in x0 dropped

    for j, k in ((0, 0), (5, 3), (15, 7)):
        h = torch.zeros_like(x0)
        h[j, k] = 1e-5
        fd = (surrogate(x0 + h) - surrogate(x0 - h)) / 2e-5
        torch.testing.assert_close(got["bound"][j, k], fd, rtol=1e-5, atol=1e-8)
    assert (got["bound"] - got["pathwise"]).abs().max() > 1e-3  # the pool's term: the two differ


def test_the_pathwise_error_is_below_the_bounds_and_both_fall_with_the_pool():
    generator, target = mog40_mixtures(8, 20)
    gen = torch.Generator().manual_seed(2)
    rows = {n: summarise([forces(generator, target, 20.0, n, gen) for _ in range(3)]) for n in (128, 1024)}
    for row in rows.values():
        assert row["pathwise_error"] < 0.6 * row["bound_error"], rows
    for name in ("bound_error", "pathwise_error"):
        assert rows[1024][name] < 0.6 * rows[128][name], rows


def test_the_script_writes_its_rows_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "d32.json"
    result = main(["--dim", "32", "--draws", "64", "--batches", "2", "--sigmas", "5,100", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == result["rows"] and [r["sigma"] for r in saved["rows"]] == [5.0, 100.0]
    apart, blurred = saved["rows"]
    assert apart["signal"] < 1e-6 and apart["bound_cos"] is None  # at d = 32, sigma 5 leaves the modes apart
    assert blurred["signal"] > 1e-4 and -1 <= blurred["pathwise_cos"] <= 1
    with pytest.raises(SystemExit) as exc:
        main(["--dim", "8", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists" in err[-1]
