"""plot_results.py on awkward inputs: runs of one name with different flags, a folder reached twice, a seed met
twice, damaged files (one line naming the file, exit 2) and many runs (a cap on the curves drawn)."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import plot_results
from conftest import ROOT
from test_plot_results import fake_our_run


def with_flags(run, **flags):
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, **flags}))
    return run


def summary(out):
    with open(out / "summary.csv") as f:
        return {r["method"]: r for r in csv.DictReader(f)}


def plot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "plot_results.py"), *args], capture_output=True, text=True,
                          timeout=300)


def test_runs_that_differ_in_a_flag_are_shown_apart_naming_it(tmp_path):
    for seed in range(2):
        with_flags(fake_our_run(tmp_path / "a", "vardiu_gaussian_true", seed, [-7.0] * 3, [-6.0] * 3), lr=1e-4,
                   max_iter=1000 * (seed + 1), device="cuda" if seed else "cpu")  # resume-changeable: may differ
        with_flags(fake_our_run(tmp_path / "b", "vardiu_gaussian_true", seed, [-9.0] * 3, [-4.0] * 3), lr=3e-4)
    out = tmp_path / "out"
    plot_results.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--last", "2"])
    rows = summary(out)
    assert set(rows) == {"VarDiU Gaussian* (lr=0.0001)", "VarDiU Gaussian* (lr=0.0003)"}
    assert rows["VarDiU Gaussian* (lr=0.0001)"]["seeds"] == "2"
    assert float(rows["VarDiU Gaussian* (lr=0.0003)"]["logpd_mean"]) == pytest.approx(-9.0)


def test_a_flag_newer_than_a_run_counts_at_its_default(tmp_path):
    """A run written before --iw_samples existed groups with a run at --iw_samples 0, not with one at 8."""
    fake_our_run(tmp_path / "old", "vardiu_gaussian_true", 0, [-7.0] * 3, [-6.0] * 3)
    with_flags(fake_our_run(tmp_path / "new", "vardiu_gaussian_true", 1, [-7.0] * 3, [-6.0] * 3), iw_samples=0)
    with_flags(fake_our_run(tmp_path / "iw", "vardiu_gaussian_true", 2, [-9.0] * 3, [-4.0] * 3), iw_samples=8)
    out = tmp_path / "out"
    plot_results.main([str(tmp_path / p) for p in ("old", "new", "iw")] + ["--out", str(out), "--last", "2"])
    rows = summary(out)
    assert set(rows) == {"VarDiU Gaussian* (iw_samples=0)", "VarDiU Gaussian* (iw_samples=8)"}, set(rows)
    assert rows["VarDiU Gaussian* (iw_samples=0)"]["seeds"] == "2"


def test_a_folder_reached_twice_and_a_repeated_seed_count_once(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in range(2):
        fake_our_run(runs, "vardiu_gaussian_true", seed, [-7.0] * 3, [-6.0] * 3)
    (tmp_path / "link").symlink_to(runs, target_is_directory=True)
    repeat = fake_our_run(tmp_path / "again", "vardiu_gaussian_true", 1, [-20.0] * 3, [-1.0] * 3)
    out = tmp_path / "out"
    plot_results.main([str(runs), str(tmp_path / "link"), str(repeat), "--out", str(out), "--last", "2"])
    row = summary(out)["VarDiU Gaussian*"]
    assert row["seeds"] == "2" and float(row["logpd_mean"]) == pytest.approx(-7.0)
    err = capsys.readouterr().err
    assert err.count(" again (first: ") == 1 and f"{repeat}: seed 1 of VarDiU Gaussian* again" in err, err


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "config.json").write_text("{not json"), "config.json: not readable JSON"),
    (lambda run: (run / "config.json").write_text("[1, 2]"), "config.json: not a JSON object"),
    (lambda run: (run / "metrics.csv").write_text("iteration,train_time\n0,0.0\n"), "metrics.csv: no column"),
    (lambda run: (run / "metrics.csv").write_text(
        (run / "metrics.csv").read_text().replace("\n1000,", "\nabc,", 1)), "metrics.csv: a value that is not a number"),
    (lambda run: (run / "samples.npy").write_bytes(b"not an array"), "samples.npy: not a readable sample array"),
])
def test_a_damaged_run_file_is_one_line_naming_it(tmp_path, damage, message):
    run, _ = [fake_our_run(tmp_path / "runs", "vardiu_gaussian_true", seed, [-7.0] * 3, [-6.0] * 3) for seed in (0, 1)]
    damage(run)
    res = plot(str(tmp_path / "runs"), "--out", str(tmp_path / "out"))
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and str(run) in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_many_methods_draw_a_capped_number_of_curves(tmp_path):
    for k in range(15):
        fake_our_run(tmp_path / "runs", f"method{k:02d}", 0, list(np.linspace(-9, -7, 3)), [-6.0] * 3)
    res = plot(str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--max_curves", "4")
    assert res.returncode == 0, res.stderr
    assert "15 methods; the figures draw the first 4" in res.stderr
    assert len(summary(tmp_path / "out")) == 15
    grid = plot_results.plt.imread(tmp_path / "out" / "samples_grid.png")
    assert grid.shape[0] < 1.8 * 200 and grid.shape[1] > 4 * 200  # one row of four panels (1.7 x 1.4 in, 200 dpi)
