"""experiments/compare_runs.py: repeated runs that logged the same numbers (clock aside) are identical; one changed
value, or a run that stopped earlier, is reported with where it happens."""
import pytest

from experiments import compare_runs

HEADER = "iteration,wall_time,train_time,logpd,log_mmd,modes,loss\n"
ROWS = ["0,0.1,0.0,-23.4,0.02,0,nan\n", "500,3.2,2.9,-17.42520523071289,-4.1,20,0.5\n",
        "1000,6.0,5.7,-12.5,-5.2,37,0.4\n"]


def run_folder(root, name, rows):
    folder = root / name
    folder.mkdir()
    (folder / "metrics.csv").write_text(HEADER + "".join(rows))
    return str(folder)


def test_same_numbers_at_other_times_are_identical(tmp_path, capsys):
    a = run_folder(tmp_path, "a", ROWS)
    b = run_folder(tmp_path, "b", [r.replace(",3.2,2.9,", ",4.0,3.5,") for r in ROWS])  # only the clock differs
    assert compare_runs.main([a, b]) == 0
    assert "a vs b: identical at all 3 evaluations" in capsys.readouterr().out


def test_a_last_bit_difference_is_found_at_its_iteration(tmp_path, capsys):
    a = run_folder(tmp_path, "a", ROWS)
    b = run_folder(tmp_path, "b", [ROWS[0], ROWS[1].replace("-17.42520523071289", "-17.42520523071288"), ROWS[2]])
    c = run_folder(tmp_path, "c", ROWS)
    assert compare_runs.main([a, b, c]) == 1
    out = capsys.readouterr().out
    assert "a vs b: differ from iteration 500 (log density -17.42520523071289 against -17.42520523071288)" in out
    assert "a vs c: identical at all 3 evaluations" in out
    assert "b vs c: differ from iteration 500" in out


def test_a_run_that_stopped_earlier_is_not_called_identical(tmp_path, capsys):
    a = run_folder(tmp_path, "a", ROWS)
    b = run_folder(tmp_path, "b", ROWS[:2])
    assert compare_runs.main([a, b]) == 1
    assert "identical on the 2 evaluations both have; 3 against 2 rows" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    a = run_folder(tmp_path, "a", ROWS)
    with pytest.raises(SystemExit) as exit_:
        compare_runs.main([a, str(tmp_path / "missing")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_:
        compare_runs.main([a])
    assert exit_.value.code == 2


@pytest.mark.parametrize("cut", ["1000,6.0,5.7,-12.5,-5.2", "1000,6.0,5.7,-12.5,-5.2,37,0.4",
                                 "1000,6.0,5.7,-12.5,-5.2,,0.4\n"])
def test_a_half_written_last_row_reads_as_stopping_earlier(tmp_path, capsys, cut):
    """A run killed while writing its last row (fields missing, no line end, or an empty field) is compared
    on its complete rows, with a warning, and does not show up as differing at that iteration."""
    a = run_folder(tmp_path, "a", ROWS)
    b = run_folder(tmp_path, "b", ROWS[:2] + [cut])
    assert compare_runs.main([a, b]) == 1
    captured = capsys.readouterr()
    assert "a vs b: identical on the 2 evaluations both have; 3 against 2 rows" in captured.out
    assert "b/metrics.csv: the last row is incomplete" in captured.err
