"""Beyond 2-D: every posterior stays finite for --sigma_max from 5 to 500 and --dim from 2 to 128 with
--precondition (the authors' posterior does not at large sigma_max), and MoG40 exists in any dimension."""
from __future__ import annotations

import pytest
import torch

from utils.registry import make_target, method_trainer
from utils.step import Trainer

SMALL = ["--true_score", "--width", "32", "--depth", "2", "--batch_size", "64", "--weight", "uniform"]


def train(method: str, flags: list[str], iterations: int = 200) -> Trainer:
    """``iterations`` CPU iterations with the power rising from 0.1 (noise near sigma_max) to 2.1 (near sigma_min)."""
    torch.manual_seed(0)
    trainer = method_trainer(method, SMALL + flags, [0], torch.device("cpu"))
    for it in range(iterations):
        trainer.power.fill_(0.1 + 0.01 * it)
        trainer.iteration()
    return trainer


@pytest.mark.parametrize("method,extra", [("vardiu_gaussian", []), ("vardiu_nsf", ["--flow_hidden", "16"]),
                                          ("vardiu_plf", [])])
@pytest.mark.parametrize("dim,sigma_max", [(2, 5), (2, 500), (128, 5), (128, 500)])
def test_every_posterior_stays_finite_at_any_scale_with_preconditioning(method, extra, dim, sigma_max):
    trainer = train(method, extra + ["--dim", str(dim), "--sigma_max", str(sigma_max), "--precondition"])
    assert all(torch.isfinite(v).all() for v in trainer.sums.values()), trainer.sums
    samples = trainer.eval_module(0).sample(256, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (256, dim) and torch.isfinite(samples).all()
    for name in ("generator", "posterior"):
        assert all(torch.isfinite(p).all() for p in trainer.nets.parameters(name)), name


def test_the_authors_posterior_goes_non_finite_at_sigma_max_500():
    """Why --precondition exists: the same run without it (the network sees sigma unscaled)."""
    trainer = train("vardiu_gaussian", ["--sigma_max", "500"], iterations=100)
    assert not all(torch.isfinite(v).all() for v in trainer.sums.values())


def test_a_two_dimensional_run_is_unchanged_without_the_flag():
    """Without --precondition the posterior computes what the authors' does: its input is (x_t, sigma) as they
    are and its std softplus(rho) sigma."""
    trainer = method_trainer("vardiu_gaussian", SMALL, [0], torch.device("cpu"))
    posterior = trainer.nets.modules["posterior"]
    x_t, sigma, z = torch.randn(8, 2), torch.rand(8) * 20 + 0.1, torch.randn(8, 2)
    raw_mean, rho = posterior.net(torch.cat([x_t, sigma[:, None]], -1)).chunk(2, -1)
    std = torch.nn.functional.softplus(rho) * sigma[:, None]
    expected = (-0.5 * ((z - raw_mean) / std) ** 2 - std.log() - 0.5 * torch.log(torch.tensor(2 * torch.pi))).sum(-1)
    assert torch.allclose(posterior.log_prob(z, x_t, sigma), expected, atol=1e-5)


def test_a_target_without_that_dimension_is_a_usage_error():
    from utils.errors import UsageError
    with pytest.raises(UsageError, match="2-D"):
        make_target("mog9", 8)
    assert make_target("mog40", 32).dim == 32


def test_highdim_figure_draws_runs_by_name_and_refuses_2d_runs(tmp_path, monkeypatch):
    """experiments/highdim_figure.py: one curve per run name from its seeds' rows; runs without the
    high-dimensional columns are one line."""
    import csv as _csv

    from experiments import highdim_figure

    def fake(name, seed, columns):
        run = tmp_path / "runs" / f"{name}_seed{seed}"
        run.mkdir(parents=True)
        with open(run / "metrics.csv", "w", newline="") as f:
            writer = _csv.DictWriter(f, fieldnames=["iteration", "train_time", *columns])
            writer.writeheader()
            for i in range(6):
                writer.writerow({"iteration": 1000 * i, "train_time": 2.0 * i, **{c: 10.0 - i + seed for c in columns}})

    for seed in (0, 1):
        fake("a", seed, ["energy", "mode_tv", "modes"])
    groups = highdim_figure.grouped_runs(tmp_path / "runs")
    assert list(groups) == ["a"] and len(groups["a"]) == 2
    iters, times, mean, std = highdim_figure.seed_stats(groups["a"], "energy")
    assert list(iters) == [0, 1000, 2000, 3000, 4000, 5000] and mean[0] == 10.5 and std[0] == 0.5
    out = highdim_figure.main([str(tmp_path / "runs"), "--out", str(tmp_path / "fig.png")])
    assert out.is_file() and out.stat().st_size > 10_000
    fake("flat", 0, ["logpd"])
    with pytest.raises(SystemExit) as exc:
        highdim_figure.main([str(tmp_path / "runs"), "--out", str(tmp_path / "fig2.png")])
    assert exc.value.code == 2
    # --runs draws the named runs only (so the 2-D run is left out), and refuses a name with no folders
    fake("b", 0, ["energy", "mode_tv", "modes"])
    out = highdim_figure.main([str(tmp_path / "runs"), "--runs", "b,a", "--out", str(tmp_path / "fig3.png")])
    assert out.is_file()
    # the curves follow the dict's order (main passes --runs' order): b is drawn first, in C0
    groups = highdim_figure.grouped_runs(tmp_path / "runs")
    fig = highdim_figure.figure({"b": groups["b"], "a": groups["a"]})
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["b", "a"] and [line.get_color() for line in lines] == ["C0", "C1"]
    drawn = []
    real_figure = highdim_figure.figure
    monkeypatch.setattr(highdim_figure, "figure", lambda g: drawn.append(list(g)) or real_figure(g))
    highdim_figure.main([str(tmp_path / "runs"), "--runs", "b,a", "--out", str(tmp_path / "fig5.png")])
    assert drawn == [["b", "a"]]
    with pytest.raises(SystemExit) as exc:
        highdim_figure.main([str(tmp_path / "runs"), "--runs", "a,c", "--out", str(tmp_path / "fig4.png")])
    assert exc.value.code == 2
    # runs from several folders: "sub/name" under the folder given, drawn under that name
    (tmp_path / "other").mkdir()
    (tmp_path / "runs" / "b_seed0").rename(tmp_path / "other" / "b_seed0")
    drawn.clear()
    highdim_figure.main([str(tmp_path), "--runs", "runs/a,other/b", "--out", str(tmp_path / "fig6.png")])
    assert drawn == [["runs/a", "other/b"]]
    with pytest.raises(SystemExit) as exc:
        highdim_figure.main([str(tmp_path), "--runs", "other/a", "--out", str(tmp_path / "fig7.png")])
    assert exc.value.code == 2
