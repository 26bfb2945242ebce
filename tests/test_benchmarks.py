"""benchmarks/equality_study.py: the comparison of two arms' curves at one iteration, from fake run folders."""
import csv
import json

import pytest

from benchmarks import equality_study


def fake_arm(root, logpd_at_end, log_mmd_at_end, seeds=3):
    for seed in range(seeds):
        run = root / f"m_seed{seed}"
        run.mkdir(parents=True)
        with open(run / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["iteration", "logpd", "log_mmd", "modes"])
            w.writeheader()
            for it, frac in [(0, 0.0), (1000, 0.5), (2000, 1.0)]:
                w.writerow({"iteration": it, "logpd": -20 + frac * (logpd_at_end + 20) + 0.01 * seed,
                            "log_mmd": log_mmd_at_end * frac - 0.01 * seed, "modes": 40})


@pytest.mark.parametrize("shift_logpd,shift_mmd,passed", [(0.04, 0.1, True), (0.06, 0.0, False), (0.0, -0.25, False)])
def test_equality_study_applies_the_tolerances(tmp_path, shift_logpd, shift_mmd, passed):
    fake_arm(tmp_path / "a", -7.0, -7.0)
    fake_arm(tmp_path / "b", -7.0 + shift_logpd, -7.0 + shift_mmd)
    result = equality_study.main([str(tmp_path / "a"), str(tmp_path / "b"), "--at", "2000", "--out",
                                  str(tmp_path / "out")])
    assert result["arms"]["a"]["logpd_mean"] == pytest.approx(-7.0 + 0.01)
    assert result["difference"]["logpd"] == pytest.approx(shift_logpd)
    assert result["difference"]["log_mmd"] == pytest.approx(shift_mmd)
    assert result["passed"] is passed
    assert json.loads((tmp_path / "out" / "equality.json").read_text())["passed"] is passed
    assert (tmp_path / "out" / "equality.png").stat().st_size > 2000


def test_equality_study_needs_an_evaluation_at_the_iteration(tmp_path):
    fake_arm(tmp_path / "a", -7.0, -7.0)
    fake_arm(tmp_path / "b", -7.0, -7.0)
    with pytest.raises(SystemExit) as exc:
        equality_study.main([str(tmp_path / "a"), str(tmp_path / "b"), "--at", "5000", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2


def test_equality_study_window_averages_each_seed_over_the_evaluations_up_to_the_iteration(tmp_path):
    """Arm b's log density ends 0.06 above arm a's (fails at one evaluation) but sits 0.03 above it one evaluation
    earlier: over the last two evaluations the difference is their mean, 0.045, inside the tolerance."""
    fake_arm(tmp_path / "a", -7.0, -7.0)
    fake_arm(tmp_path / "b", -7.0 + 0.06, -7.0)
    args = [str(tmp_path / "a"), str(tmp_path / "b"), "--at", "2000", "--out", str(tmp_path / "out")]
    assert equality_study.main(args)["passed"] is False
    result = equality_study.main(args + ["--window", "2"])
    assert result["arms"]["a"]["logpd_mean"] == pytest.approx((-13.5 - 7.0) / 2 + 0.01)
    assert result["difference"]["logpd"] == pytest.approx(0.045)
    assert result["passed"] is True and result["window"] == 2
    assert "over the 2 evaluations to 2000" in (tmp_path / "out" / "equality.md").read_text()
    with pytest.raises(SystemExit) as exc:
        equality_study.main(args + ["--window", "4"])
    assert exc.value.code == 2
