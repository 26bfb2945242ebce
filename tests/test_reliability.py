"""One writer per run folder, rewinding only when asked, stop signals from the first instruction, checkpoints of
many seeds that change together, and run_grid.py's reports: real processes and signals where the behaviour is a
process's, in-process otherwise."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import run_grid
from conftest import ROOT, TINY, read_metrics, run_script
from utils import interrupt, run_io

SCRIPT = "train_upper_diffusion.py"
FLAGS = ["--true_score", *TINY, "--device", "cpu", "--plot_every", "0"]
linux_only = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / SCRIPT), *args], cwd=ROOT, stderr=subprocess.PIPE, text=True)


def wait_for_line(proc: subprocess.Popen, prefix: str) -> list[str]:
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise AssertionError("".join(lines))


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (bit 15 of SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@pytest.fixture
def finished_run(tmp_path) -> Path:
    """A run of 200 iterations with numbered checkpoints every 100."""
    res = run_script(SCRIPT, *FLAGS, "--max_iter", "200", "--show_iter", "50", "--save_every", "100",
                     "--out_dir", str(tmp_path), "--name", "r")
    assert res.returncode == 0, res.stderr
    return tmp_path / "r"


@linux_only
def test_a_second_process_on_a_run_folder_is_refused_naming_the_holder(finished_run):
    holder = start("--load", str(finished_run), "--max_iter", "10000000", "--show_iter", "50")
    try:
        wait_for_line(holder, "run folder:")
        second = run_script(SCRIPT, "--load", str(finished_run), "--max_iter", "20000000", "--time_limit", "0.05")
        assert second.returncode == 2, second.stderr
        assert f"is in use by process {holder.pid}" in second.stderr and "Traceback" not in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.communicate(timeout=120)
    assert holder.returncode == 143
    # the holder is gone: its lock went with it, and the folder resumes
    again = run_script(SCRIPT, "--load", str(finished_run), "--max_iter",
                       str(torch.load(finished_run / "checkpoints" / "last.pt", weights_only=True)["iteration"] + 50))
    assert again.returncode == 0, again.stderr


def test_a_lock_is_released_with_its_holder(tmp_path):
    first = run_io.lock_run_folder(tmp_path)
    with pytest.raises(run_io.UsageError, match=f"in use by process {os.getpid()}"):
        run_io.lock_run_folder(tmp_path)
    first.close()
    run_io.lock_run_folder(tmp_path).close()  # a stale .lock file is no lock


def test_loading_an_older_checkpoint_is_refused_unless_rewind(finished_run):
    older = finished_run / "checkpoints" / "iter_0000100.pt"
    before = (finished_run / "metrics.csv").read_text()
    res = run_script(SCRIPT, "--load", str(older), "--max_iter", "300")
    assert res.returncode == 2 and "has reached 200" in res.stderr and "--rewind" in res.stderr, res.stderr
    assert (finished_run / "metrics.csv").read_text() == before  # nothing touched
    assert torch.load(finished_run / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 200
    res = run_script(SCRIPT, "--load", str(older), "--max_iter", "150", "--rewind")
    assert res.returncode == 0 and "goes back from iteration 200 to 100" in res.stderr, res.stderr
    rows = read_metrics(finished_run)
    assert [int(r["iteration"]) for r in rows] == [0, 50, 100, 150]
    lists = json.loads((finished_run / "lists" / "logpd_list.json").read_text())
    assert lists == [float(r["logpd"]) for r in rows]
    # the rewound run is the folder's latest now: resuming it needs no --rewind, and --rewind is not inherited
    res = run_script(SCRIPT, "--load", str(finished_run), "--max_iter", "200")
    assert res.returncode == 0, res.stderr
    res = run_script(SCRIPT, "--load", str(older), "--max_iter", "300")
    assert res.returncode == 2 and "--rewind" in res.stderr


@linux_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_starting_is_one_line_and_leaves_no_folder(tmp_path, signum):
    proc = start(*FLAGS, "--max_iter", "100", "--out_dir", str(tmp_path / "out"), "--name", "early")
    deadline = time.time() + 60
    while not catches_sigterm(proc.pid) and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    # the handler is caught from the script's first lines; the imports after them take seconds, so the signal
    # lands there (phase 1 of utils/interrupt.py)
    assert f"{interrupt.NAMES[signum]} received while starting" in err
    assert not (tmp_path / "out" / "early").exists()


def test_a_signal_after_the_folders_exist_leaves_a_run_that_resumes(tmp_path, monkeypatch):
    """A SIGTERM while the loop sets up (after the run folders exist, before the first evaluation): the run saves
    iteration 0 of every seed, exits 143, and --load continues it."""
    import utils.loop as loop

    class SignalledEvaluator(loop.SampleEvaluator):
        def __init__(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(loop, "SampleEvaluator", SignalledEvaluator)
    import train_upper_diffusion
    with pytest.raises(SystemExit) as exc:
        train_upper_diffusion.main([*FLAGS, "--max_iter", "100", "--show_iter", "50", "--seeds", "0,1",
                                    "--out_dir", str(tmp_path), "--name", "mid"])
    assert exc.value.code == 143
    for seed in (0, 1):
        assert torch.load(tmp_path / f"mid_seed{seed}" / "checkpoints" / "last.pt",
                          weights_only=True)["iteration"] == 0
    monkeypatch.undo()
    res = run_script(SCRIPT, "--load", str(tmp_path / "mid_seed0"), str(tmp_path / "mid_seed1"), "--max_iter", "100")
    assert res.returncode == 0, res.stderr
    assert [int(r["iteration"]) for r in read_metrics(tmp_path / "mid_seed1")] == [0, 50, 100]


def test_a_second_signal_during_a_checkpoint_write_waits_for_every_seed(tmp_path, monkeypatch):
    """The first signal asks the loop to stop; the second arrives while seed 0 of three is written: it exits only
    after every seed's file is replaced, and no temporary file stays."""
    paths = [tmp_path / f"seed{k}.pt" for k in range(3)]
    for p in paths:
        torch.save({"iteration": 50}, p)
    real_save = torch.save
    calls = []

    def save_and_signal(state, path):
        calls.append(path)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        real_save(state, path)

    monkeypatch.setattr(run_io.torch, "save", save_and_signal)
    stop = interrupt.StopSignals()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal == signal.SIGTERM
        with pytest.raises(SystemExit) as exc:
            run_io.save_checkpoints([(p, {"iteration": 75}) for p in paths])
        assert exc.value.code == 143
    finally:
        stop.restore()
    assert len(calls) == 3
    assert [torch.load(p, weights_only=True)["iteration"] for p in paths] == [75, 75, 75]
    assert list(tmp_path.glob("*.tmp")) == []


def test_two_signals_while_an_evaluation_is_logged_leave_metrics_and_checkpoint_together(tmp_path, monkeypatch):
    """Both signals arrive while the evaluation at 100 writes its rows, with no checkpoint due (every 60 min):
    the checkpoint is written at 100 before the exit, so each folder's last.pt stands where its metrics end and
    --load continues without --rewind."""
    import utils.loop as loop
    real_log = loop.Loop.log

    def log_and_signal(self, run, row, samples, plot):
        if row["iteration"] == 100 and run.index == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        real_log(self, run, row, samples, plot)

    monkeypatch.setattr(loop.Loop, "log", log_and_signal)
    import train_upper_diffusion
    with pytest.raises(SystemExit) as exc:
        train_upper_diffusion.main([*FLAGS, "--max_iter", "200", "--show_iter", "50", "--seeds", "0,1",
                                    "--checkpoint_minutes", "60", "--out_dir", str(tmp_path), "--name", "ev"])
    assert exc.value.code == 143
    monkeypatch.undo()
    folders = [tmp_path / f"ev_seed{seed}" for seed in (0, 1)]
    for folder in folders:
        assert torch.load(folder / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 100
        assert int(read_metrics(folder)[-1]["iteration"]) == 100
    res = run_script(SCRIPT, "--load", *map(str, folders), "--max_iter", "200")
    assert res.returncode == 0, res.stderr
    assert [int(r["iteration"]) for r in read_metrics(folders[1])] == [0, 50, 100, 150, 200]


def test_a_stale_temporary_checkpoint_is_removed_on_resume(finished_run):
    stale = finished_run / "checkpoints" / "last.pt.tmp"
    stale.write_bytes(b"half a checkpoint")
    res = run_script(SCRIPT, "--load", str(finished_run), "--max_iter", "250")
    assert res.returncode == 0, res.stderr
    assert not stale.exists()


@pytest.mark.parametrize("code, finished, state", [(0, False, "done"), (-15, True, "done"), (-15, False, "stopped"),
                                                   (-9, False, "stopped"), (143, False, "stopped"),
                                                   (130, True, "stopped"), (1, False, "FAILED"),
                                                   (2, True, "FAILED")])
def test_run_grid_reports_signal_deaths_as_stopped_or_done(code, finished, state):
    assert run_grid.job_state(code, finished) == state


def test_run_grid_killed_job_that_had_finished_is_done(tmp_path, monkeypatch):
    """A job whose process dies by a signal after its runs reached --max_iter: reported done, exit 0."""
    grid = ["--recipe", "paper", "--methods", "vardiu_gaussian_true", "--seeds", "0", "--max_iter", "20",
            "--gpus", "", "--out_dir", str(tmp_path), "--", *TINY, "--show_iter", "10", "--plot_every", "0",
            "--device", "cpu"]
    res = subprocess.run([sys.executable, str(ROOT / "run_grid.py"), *grid], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    killed = subprocess.CompletedProcess([], -15)
    monkeypatch.setattr(run_grid.subprocess, "Popen", lambda *a, **k: type("P", (), {
        "wait": lambda self: killed.returncode, "send_signal": lambda self, s: None})())
    out = tmp_path / "paper"
    state = run_grid.run_jobs([("vardiu_gaussian_true", ["true"])], [], out / "logs",
                              lambda job: run_grid.reached(run_grid.job_folders(job, "0", out), 20))
    assert state == {"vardiu_gaussian_true": ("done", -15)}
    state = run_grid.run_jobs([("vardiu_gaussian_true", ["true"])], [], out / "logs",
                              lambda job: run_grid.reached(run_grid.job_folders(job, "0", out), 40))
    assert state == {"vardiu_gaussian_true": ("stopped", -15)}


def test_run_grid_again_into_the_same_folder_is_refused_with_the_command_that_continues(tmp_path):
    grid = ["--recipe", "paper", "--methods", "vardiu_gaussian_true", "--seeds", "0-1", "--max_iter", "20",
            "--gpus", "", "--out_dir", str(tmp_path), "--", "--width", "32"]
    (tmp_path / "paper" / "vardiu_gaussian_true_seed1").mkdir(parents=True)
    res = subprocess.run([sys.executable, str(ROOT / "run_grid.py"), *grid], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "already holds run folders" in res.stderr
    assert f"--out_dir {tmp_path} --resume -- --width 32" in res.stderr, res.stderr
    assert not (tmp_path / "paper" / "vardiu_gaussian_true_seed0").exists()


@linux_only
@pytest.mark.parametrize("after", [0.0, 1.5])
def test_two_quick_sigterms_leave_every_seed_at_one_iteration(tmp_path, after):
    """An 8-seed run checkpointing at every evaluation gets two SIGTERMs 10 ms apart, ``after`` seconds after its
    run folders exist (0: before their first checkpoint): every seed's last.pt is at one iteration, no temporary
    file stays, and the eight resume together."""
    proc = start(*FLAGS, "--seeds", "0-7", "--max_iter", "10000000", "--show_iter", "10", "--checkpoint_minutes", "0",
                 "--out_dir", str(tmp_path), "--name", "eight")
    wait_for_line(proc, "run folder:")
    time.sleep(after)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err, err
    folders = [tmp_path / f"eight_seed{s}" for s in range(8)]
    reached = {torch.load(f / "checkpoints" / "last.pt", weights_only=True)["iteration"] for f in folders}
    assert len(reached) == 1, reached
    assert list(tmp_path.rglob("*.tmp")) == []
    res = run_script(SCRIPT, "--load", *map(str, folders), "--max_iter", str(reached.pop() + 20))
    assert res.returncode == 0, res.stderr
