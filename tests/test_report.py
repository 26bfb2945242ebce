"""report.py: the generated tables of README.md and docs/ and results/INDEX.csv equal what results/ gives, and
an edited number in either place is caught."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import report

ROOT = Path(__file__).resolve().parents[1]


def test_committed_tables_and_index_equal_what_results_give():
    stale = report.stale_files()
    assert stale == [], f"run python report.py: {[str(p.relative_to(ROOT)) for p in stale]} are out of date"


def test_an_edited_number_in_the_readme_table_is_caught():
    text = (ROOT / "README.md").read_text()
    assert "| -6.994 ± 0.012 |" in text, "the README's table lost the VarDiU Gaussian* row"
    edited = text.replace("| -6.994 ± 0.012 |", "| -6.894 ± 0.012 |", 1)
    assert report.fill_blocks(edited) == text


def test_a_number_typed_outside_the_markers_is_not_overwritten():
    text = "intro -1.0\n<!-- generated: speed-table -->\nold\n<!-- end generated -->\noutro -2.0\n"
    filled = report.fill_blocks(text)
    assert filled.startswith("intro -1.0\n<!-- generated: speed-table -->\n| method |")
    assert filled.endswith("<!-- end generated -->\noutro -2.0\n") and "old" not in filled


@pytest.fixture
def small_results(tmp_path, monkeypatch):
    """A copy of results/published (config.json and metrics.csv only) as the results folder."""
    results = tmp_path / "results"
    for run in sorted((ROOT / "results" / "published").glob("*_seed*")):
        dest = results / "published" / run.name
        dest.mkdir(parents=True)
        for name in ("config.json", "metrics.csv"):
            shutil.copy(run / name, dest / name)
    monkeypatch.setattr(report, "RESULTS", results)
    report.clear_caches()
    yield results
    report.clear_caches()


def published_table() -> str:
    report.clear_caches()
    return report.summary_table([report.Row("published", "vardiu_gaussian_true")], 50)


def test_an_edited_metrics_csv_changes_the_table_and_the_index(small_results):
    metrics = small_results / "published" / "vardiu_gaussian_true_seed0" / "metrics.csv"
    before_table, before_index = published_table(), report.index_csv(report.index_rows())
    assert "| 3 | 1,000,000 | -14.293 ± 0.024 |" in before_table
    lines = metrics.read_text().splitlines(keepends=True)
    last = lines[-1].split(",", 4)
    last[3] = str(float(last[3]) - 5.0)  # the last evaluation's log density
    metrics.write_text("".join(lines[:-1]) + ",".join(last))
    assert published_table() != before_table
    metrics.write_text("".join(lines[:-1]))  # drop the last evaluation: the run now stops at 999,000
    after_index = report.index_csv(report.index_rows())
    assert after_index != before_index
    row = next(r for r in report.index_rows() if r["folder"] == "published/vardiu_gaussian_true_seed0")
    assert row["last_iteration"] == 999_000 and row["stop"] != "reached max_iter"


def test_the_index_rebuilds_the_published_command(small_results):
    rows = report.index_rows()
    assert [r["seed"] for r in rows] == [0, 1, 2]
    assert rows[0]["command"] == ("python run_grid.py --recipe published --methods vardiu_gaussian_true --seeds 0 "
                                  "--max_iter 1000000 --out_dir results")
    assert all(r["stop"] == "reached max_iter" for r in rows)


def test_a_rebuilt_command_names_each_flag_by_its_double_dash_spelling():
    """--true_score also answers to the upstream alias -true_score; the rebuilt command says --true_score."""
    config = {"true_score": True, "dim": 8, "sigma_max": 150.0}
    flags = report.flags_between("train_upper_diffusion.py", config, ())
    assert flags == ["--dim", "8", "--true_score", "--sigma_max", "150.0"]


def test_a_runs_recorded_end_is_its_stop_reason(tmp_path, monkeypatch):
    """A run folder whose config.json records why it ended (the training loop writes "end") is indexed with
    that reason; one that reached --max_iter says so."""
    import train_upper_diffusion
    from conftest import TINY
    results = tmp_path / "results"
    train_upper_diffusion.main(["--true_score", *TINY, "--max_iter", "20", "--show_iter", "10", "--device", "cpu",
                                "--out_dir", str(results / "x"), "--name", "r"])
    monkeypatch.setattr(report, "RESULTS", results)
    report.clear_caches()
    (row,) = report.index_rows()
    assert row["stop"] == "reached max_iter" and row["last_iteration"] == 20
    config = json.loads((results / "x" / "r" / "config.json").read_text())
    assert config["end"] == {"reason": "reached max_iter", "iteration": 20}
    config["end"] = {"reason": "non-finite between 10 and 20", "iteration": 10}
    (results / "x" / "r" / "config.json").write_text(json.dumps(config))
    report.clear_caches()
    assert report.index_rows()[0]["stop"] == "non-finite between 10 and 20"
    report.clear_caches()


def test_reproduced_means_within_the_papers_bar_or_better():
    paper = (-7.0, 0.02, -6.9, 0.3)
    row = lambda logpd, mmd: {"logpd_mean": logpd, "log_mmd_mean": mmd}  # noqa: E731
    assert report.reproduced(row(-7.01, -6.7), paper) == "yes"
    assert report.reproduced(row(-6.5, -7.5), paper) == "yes"     # better on both
    assert report.reproduced(row(-7.03, -6.9), paper) == "no"     # log density below the bar
    assert report.reproduced(row(-7.0, -6.5), paper) == "no"      # log MMD above the bar
