"""experiments/gradient_bias.py runs end to end on the project's real losses and trainer (a few iterations)."""
import json
import math

from experiments import gradient_bias


def test_gradient_bias_experiment_runs(tmp_path):
    out = tmp_path / "gb.png"
    results = gradient_bias.main(["--dims", "2", "--iters", "4", "--eval_every", "2", "--eval_batches", "3",
                                  "--pretrain", "2", "--batch_size", "32", "--width", "8", "--out", str(out)])
    assert set(results) == {f"2/{m}" for m in gradient_bias.METHODS}
    for curve in results.values():
        assert [it for it, _, _ in curve] == [0, 2, 4]
        assert all(math.isfinite(b) and b >= 0 and math.isfinite(s) and s > 0 for _, b, s in curve)
    assert out.stat().st_size > 1000
    assert json.loads(out.with_suffix(".json").read_text())["results"].keys() == results.keys()
