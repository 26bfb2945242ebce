"""SIGTERM (what schedulers send before killing a job) and a second signal: a real training process is signalled
mid-run; it saves every seed at the current iteration, stops its worker processes, exits with 143, and the resumed
run logs exactly what an uninterrupted run logs."""
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY, read_metrics, run_script
from utils.interrupt import StopSignals

SCRIPT = "train_upper_diffusion.py"


def processes_with_token(token: str) -> list[int]:
    """Live processes whose environment holds the token (the script and anything it started)."""
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if token.encode() in env.read_bytes():
                found.append(int(env.parent.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_sigterm_saves_every_seed_and_the_resumed_run_continues_exactly(tmp_path):
    common = ["--true_score", *TINY, "--show_iter", "100", "--seeds", "0,1", "--ema_decay", "0.9",
              "--power_interval", "30", "--device", "cpu", "--out_dir", str(tmp_path)]
    token = f"VARDIU_TEST_{uuid.uuid4().hex}"
    proc = subprocess.Popen([sys.executable, str(ROOT / SCRIPT), *common, "--max_iter", "1000000", "--name", "sig",
                             "--plot_every", "1"], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, VARDIU_TEST_TOKEN=token))
    lines = []
    for line in proc.stderr:  # wait until it trains
        lines.append(line)
        if line.startswith("run folder:"):
            break
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=120)
    lines += rest.splitlines()
    assert proc.returncode == 143, "".join(lines)
    assert "Traceback" not in rest
    assert "SIGTERM received: stopped at iteration" in lines[-1] and "--load" in lines[-1], lines[-1]
    time.sleep(1.0)
    assert processes_with_token(token) == []  # no orphaned plot worker or resource tracker
    stopped = [torch.load(tmp_path / f"sig_seed{s}" / "checkpoints" / "last.pt", weights_only=True)["iteration"]
               for s in (0, 1)]
    assert stopped[0] == stopped[1] > 0 and f"iteration {stopped[0]} " in lines[-1]
    end = (stopped[0] // 100 + 2) * 100  # the resumed run crosses at least one evaluation
    res = run_script(SCRIPT, "--load", str(tmp_path / "sig_seed0"), str(tmp_path / "sig_seed1"), "--max_iter",
                     str(end), "--no_progress")
    assert res.returncode == 0, res.stderr
    full = run_script(SCRIPT, *common, "--max_iter", str(end), "--name", "full")
    assert full.returncode == 0, full.stderr
    for seed in (0, 1):
        a, b = read_metrics(tmp_path / f"full_seed{seed}"), read_metrics(tmp_path / f"sig_seed{seed}")
        assert [r["iteration"] for r in a] == [r["iteration"] for r in b]
        for ra, rb in zip(a, b):
            for key in ra:
                if key not in ("wall_time", "train_time"):
                    assert ra[key] == rb[key], (seed, key, ra, rb)


def test_a_second_signal_exits_at_once():
    stop = StopSignals()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal == signal.SIGTERM and stop.name == "SIGTERM"
        with pytest.raises(SystemExit) as exc:
            os.kill(os.getpid(), signal.SIGTERM)
        assert exc.value.code == 143
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
