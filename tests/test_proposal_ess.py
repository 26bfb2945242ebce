"""experiments/proposal_ess.py: the effective sample size of prior proposals, on cases with a known answer, and the
script's result file."""
from __future__ import annotations

import json

import pytest
import torch

from experiments.proposal_ess import main, proposal_ess


def test_identical_draws_give_every_draw_the_same_weight():
    x0 = torch.full((16, 3), 2.5)
    x_t = x0 + torch.randn(16, 3)
    torch.testing.assert_close(proposal_ess(x0, x_t, 1.0), torch.full((16,), 16.0))


def test_far_apart_clusters_count_the_draws_of_the_rows_own_cluster():
    x0 = torch.cat([torch.zeros(5, 2), torch.full((11, 2), 100.0)])  # two clusters of 5 and 11 identical draws
    x_t = x0 + 0.5 * torch.randn(16, 2)
    ess = proposal_ess(x0, x_t, 1.0)
    torch.testing.assert_close(ess, torch.tensor([5.0] * 5 + [11.0] * 11))


def test_the_script_writes_its_rows_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "d2.json"
    result = main(["--dim", "2", "--draws", "64", "--batches", "2", "--sigmas", "1,1000", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == result["rows"] and [r["sigma"] for r in saved["rows"]] == [1.0, 1000.0]
    low, high = saved["rows"]
    assert 1.0 <= low["ess_p10"] <= low["ess_median"] < high["ess_median"] <= 64.0
    assert high["ess_median"] > 60  # at sigma 1000 the 40 modes merge: nearly equal weights
    with pytest.raises(SystemExit) as exc:
        main(["--dim", "2", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists" in err[-1]
