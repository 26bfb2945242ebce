"""run_grid.py --launcher slurm against a real SLURM controller (scripts/local_slurm.sh starts one on localhost;
.ci/run does). Skipped, with the reason, when no controller answers or submitit is missing. A tiny CPU grid:
every task completes and its run folders equal the local launcher's; a task sent the preemption signal mid-run
is requeued and ends with the metrics of an uninterrupted run; bad flags are refused before anything is
submitted."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY, read_metrics
from utils.errors import UsageError


def controller_answers() -> str:
    """'' when a SLURM controller answers with an idle node, else why not."""
    if shutil.which("sinfo") is None:
        return "no SLURM client here (bash scripts/local_slurm.sh installs and starts one)"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20).stdout
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"SLURM does not answer ({err})"
    if "UP" not in ping or not any(s in states for s in ("idle", "mix", "alloc", "completing")):
        return "no SLURM controller with a usable node answers (bash scripts/local_slurm.sh starts one)"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (pip install submitit)"
    return ""


REASON = controller_answers()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(bool(REASON), reason=REASON or "slurm")]

TRAIN = [*TINY, "--plot_every", "0", "--device", "cpu", "--show_iter", "50"]
SLURM = ["--launcher", "slurm", "--slurm_gpus_per_task", "0", "--slurm_cpus_per_task", "1", "--slurm_time", "10"]


def grid(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_grid.py"), *args], capture_output=True, text=True,
                          timeout=timeout)


def same_metrics(a: Path, b: Path) -> None:
    ra, rb = read_metrics(a), read_metrics(b)
    assert [r["iteration"] for r in ra] == [r["iteration"] for r in rb], (a, b)
    for x, y in zip(ra, rb):
        assert {k: v for k, v in x.items() if k not in ("wall_time", "train_time")} == \
               {k: v for k, v in y.items() if k not in ("wall_time", "train_time")}, (a, b)


def test_a_grid_on_slurm_equals_the_local_launcher(tmp_path):
    common = ["--recipe", "paper", "--methods", "vardiu_gaussian_true,di_ss1_true", "--seeds", "0-1",
              "--max_iter", "200"]
    res = grid(*common, *SLURM, "--wait", "--out_dir", str(tmp_path / "slurm"), "--", *TRAIN)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "submitted SLURM array" in res.stdout and "squeue -j" in res.stdout
    assert res.stdout.count("\ndone ") == 2, res.stdout
    local = grid(*common, "--gpus", "", "--out_dir", str(tmp_path / "local"), "--", *TRAIN)
    assert local.returncode == 0, local.stdout + local.stderr
    for method in ("vardiu_gaussian_true", "di_ss1_true"):
        for seed in (0, 1):
            name = f"paper/{method}_seed{seed}"
            assert int(read_metrics(tmp_path / "slurm" / name)[-1]["iteration"]) == 200
            same_metrics(tmp_path / "slurm" / name, tmp_path / "local" / name)


def test_a_preempted_task_is_requeued_and_ends_as_an_uninterrupted_run(tmp_path):
    common = ["--recipe", "paper", "--methods", "vardiu_gaussian_true", "--seeds", "0", "--max_iter", "3000"]
    waiter = subprocess.Popen([sys.executable, str(ROOT / "run_grid.py"), *common, *SLURM, "--wait", "--out_dir",
                               str(tmp_path / "slurm"), "--", *TRAIN], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    first = waiter.stdout.readline()
    assert "submitted SLURM array" in first, first
    job = first.split("submitted SLURM array ")[1].split(":")[0]  # the array: its one task
    metrics = tmp_path / "slurm" / "paper" / "vardiu_gaussian_true_seed0" / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 4):
        time.sleep(0.5)  # running: three evaluations written
    assert metrics.is_file(), "the task did not start"
    subprocess.run(["scancel", "--signal=USR2", job], check=True)  # what SLURM sends before a time limit
    out, _ = waiter.communicate(timeout=600)
    assert waiter.returncode == 0, first + out
    logs = "".join(p.read_text() for p in sorted((tmp_path / "slurm" / "paper" / "logs").rglob("*_log.*")))
    assert "Caught signal SIGUSR2" in logs and "SIGTERM received: stopped at iteration" in logs, logs[-3000:]
    assert "Requeued job" in logs and "--load" in logs  # requeued by submitit, and the new task continued the folder
    local = grid(*common, "--gpus", "", "--out_dir", str(tmp_path / "local"), "--", *TRAIN)
    assert local.returncode == 0, local.stdout + local.stderr
    run = "paper/vardiu_gaussian_true_seed0"
    assert int(read_metrics(tmp_path / "slurm" / run)[-1]["iteration"]) == 3000
    same_metrics(tmp_path / "slurm" / run, tmp_path / "local" / run)


@pytest.mark.parametrize("flags, message", [(["--slurm_time", "0"], "--slurm_time"),
                                            (["--slurm_sbatch", "account=x"], "--slurm_sbatch 'account=x'"),
                                            (["--methods", "nope"], "unknown method"),
                                            (["--slurm_partition", "no_such_partition"], "sbatch refused")])
def test_bad_flags_are_refused_before_anything_runs(tmp_path, flags, message):
    res = grid("--recipe", "paper", "--seeds", "0", "--max_iter", "50", *SLURM, *flags, "--out_dir",
               str(tmp_path), "--", *TRAIN, timeout=120)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not any(tmp_path.glob("paper/*_seed*"))


def test_without_submitit_the_slurm_launcher_is_one_line(monkeypatch):
    from utils import slurm
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(UsageError, match="pip install submitit"):
        slurm.require_submitit()
