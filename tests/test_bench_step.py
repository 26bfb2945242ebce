"""benchmarks/bench_step.py on the CPU: a row times the iteration its flags build; a --methods name that
bench_step or bench_wall lacks is one line."""
import json

import pytest
import torch

from benchmarks import bench_step, bench_wall


def test_the_k_sample_row_builds_the_d8_iteration_it_names(tmp_path):
    trainer = bench_step.make_trainer("vardiu_gaussian_iw8_d8", 1, bench_step.resolve_device("cpu"))
    loss_fn = trainer.method.updates[0].loss_fn
    assert loss_fn.iw_samples == 8 and loss_fn.noise.sigma_max == 150 and loss_fn.weight.k == 1
    out = tmp_path / "b.json"
    rows = bench_step.main(["--device", "cpu", "--seeds", "1", "--iters", "1", "--warmup", "1", "--modes", "eager",
                            "--methods", "vardiu_gaussian_iw8_d8", "--json", str(out)])
    assert [(r["method"], r["seeds"], r["mode"]) for r in rows] == [("vardiu_gaussian_iw8_d8", 1, "eager")]
    assert json.loads(out.read_text())["rows"][0]["ms_per_it"] > 0


def test_the_prior_proposals_row_builds_the_d8_iteration_it_names():
    trainer = bench_step.make_trainer("vardiu_gaussian_prior20_d8", 2, bench_step.resolve_device("cpu"))
    loss_fn = trainer.method.updates[0].loss_fn
    assert loss_fn.prior_proposals_sigma == 20 and loss_fn.iw_samples == 0 and loss_fn.noise.sigma_max == 150
    trainer.iteration()
    assert all(torch.isfinite(v).all() for v in trainer.sums.values())


@pytest.mark.parametrize("bench", [bench_step, bench_wall])
def test_an_unknown_method_is_one_line(tmp_path, capsys, bench):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--methods", "vardiu_gaussian,nope", "--json", str(tmp_path / "b.json")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "b.json").exists()
