"""benchmarks/grid_cost.py: the time per iteration read from a run folder, and a recipe's job priced from a real
(tiny, CPU) run."""
import csv
import json

import pytest

from benchmarks import grid_cost
from benchmarks.bench_wall import ms_per_iteration
from conftest import TINY


def test_ms_per_iteration_is_the_wall_time_between_two_evaluations(tmp_path):
    with open(tmp_path / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["iteration", "wall_time", "train_time", "logpd"])
        writer.writeheader()
        for it, wall, train in [(0, 0.0, 0.0), (1000, 9.0, 2.0), (3000, 12.0, 4.5)]:
            writer.writerow({"iteration": it, "wall_time": wall, "train_time": train, "logpd": -7})
    speed = ms_per_iteration(tmp_path, 1000, 3000)
    assert speed == {"ms_per_it": pytest.approx(1.5), "train_ms_per_it": pytest.approx(1.25)}


def test_a_recipe_job_is_priced_at_the_grids_iterations(tmp_path):
    out = tmp_path / "cost.json"
    result = grid_cost.main(["--recipe", "paper", "--methods", "vardiu_gaussian_true", "--seeds", "0-1",
                             "--iters", "40", "--start", "20", "--max_iter", "1000000", "--json", str(out), "--",
                             *TINY, "--show_iter", "10", "--plot_every", "0", "--device", "cpu"])
    (row,) = result["rows"]
    assert row["job"] == "vardiu_gaussian_true" and row["seeds"] == "0-1" and "failed" not in row
    assert row["ms_per_it"] > 0
    assert row["gpu_hours"] == pytest.approx(row["ms_per_it"] * 1e6 / 3.6e6)
    assert result["gpu_hours"] == pytest.approx(row["gpu_hours"])
    assert json.loads(out.read_text())["gpu_hours"] == pytest.approx(result["gpu_hours"])
    assert "--seeds 0-1" in row["command"] and "--max_iter 40" in row["command"]
