"""experiments/generator_capacity.py: its cell map carries N(0, I) exactly onto MoG40 with equal weights, and the
script trains and writes its result."""
from __future__ import annotations

import json

import pytest
import torch

from experiments.generator_capacity import cell_map, main
from utils.errors import UsageError
from utils.metrics import mode_weight_error
from utils.registry import make_target


@pytest.mark.parametrize("dim", [4, 8])
def test_the_cell_map_is_mog40(dim):
    """Each component gets 1/40 of the draws, each draw lands on its cell's component, and the within-component
    offsets (x - m_c) / s are standard normal, coordinate by coordinate."""
    target = make_target("mog40", dim)
    z = torch.randn(400_000, dim, generator=torch.Generator().manual_seed(0))
    x = cell_map(z, target.means, target.std)
    component, _ = target.nearest_mode(x)
    assert mode_weight_error(x, target) < 0.01  # sampling noise alone: about 0.004 at this size
    offsets = (x - target.means[component]) / target.std
    assert offsets.mean(0).abs().max() < 0.01
    assert (offsets.var(0) - 1).abs().max() < 0.02
    assert ((offsets.abs() > 1.96).float().mean(0) - 0.05).abs().max() < 0.003  # the tails of a standard normal
    assert torch.allclose(torch.corrcoef(offsets.T), torch.eye(dim), atol=0.01)


def test_the_script_trains_and_writes_its_result(tmp_path):
    out = tmp_path / "d4.json"
    main(["--dim", "4", "--iters", "30", "--evals", "2", "--width", "32", "--depth", "2", "--eval_samples", "2000",
          "--out", str(out)])
    result = json.loads(out.read_text())
    exact = next(r for r in result["rows"] if r.get("map"))
    assert exact["modes"] == 40 and exact["mode_tv"] < 0.06
    trained = [r for r in result["rows"] if not r.get("map") and r["iteration"] > 0]
    assert [r["iteration"] for r in trained] == [15, 30]
    assert trained[-1]["mse"] < trained[0]["mse"]  # the regression is learning
    assert result["command"].startswith("python experiments/generator_capacity.py --dim 4")


@pytest.mark.parametrize("argv, message", [(["--dim", "3"], "at least 4 dimensions"),
                                           (["--iters", "0"], "must be positive")])
def test_bad_input_is_a_usage_error(tmp_path, argv, message):
    with pytest.raises(UsageError, match=message):
        main([*argv, "--out", str(tmp_path / "r.json")])


def test_an_existing_result_is_never_overwritten(tmp_path):
    out = tmp_path / "r.json"
    out.write_text("{}")
    with pytest.raises(UsageError, match="exists"):
        main(["--dim", "4", "--iters", "1", "--out", str(out)])
    assert out.read_text() == "{}"
