"""The shared training loop: non-finite and interrupted runs stop cleanly and keep their last good checkpoint;
device resolution."""
import dataclasses
import json
import os
import signal

import pytest
import torch

import train_upper_diffusion
from conftest import logged_terms
from utils.cli import UsageError, parse_flags
from utils.step import resolve_device
from utils.loop import run_training

SCRIPT = "train_upper_diffusion.py"


def hooked_build(hook):
    """A build function whose loss calls hook(nets, call_number) before computing the real loss."""
    def build(flags, device, target):
        method = train_upper_diffusion.build(flags, device, target)
        update, calls = method.updates[0], {"n": 0}

        def hooked_loss(nets, power):
            calls["n"] += 1
            hook(nets, calls["n"])
            return update.loss_fn(nets, power)

        method.updates[0] = dataclasses.replace(update, loss_fn=hooked_loss)
        return method
    return build


def train(build, argv):
    return run_training(build, parse_flags(train_upper_diffusion.build_parser(), argv, SCRIPT), SCRIPT, "x")


def test_non_finite_run_stops_and_keeps_last_good_checkpoint(tmp_path, tiny, capsys):
    def poison(nets, n):
        if n == 25:  # poison the generator in the third evaluation interval
            with torch.no_grad():
                next(nets["generator"].parameters()).fill_(float("nan"))

    argv = ["--true_score", *tiny, "--max_iter", "50", "--show_iter", "10", "--out_dir", str(tmp_path),
            "--name", "nan", "--checkpoint_minutes", "0"]
    with pytest.raises(SystemExit) as exc:
        train(hooked_build(poison), argv)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "non-finite between iterations 20 and 30" in err and "last good checkpoint" in err
    ckpt = torch.load(tmp_path / "nan" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 20
    assert all(torch.isfinite(p).all() for p in ckpt["modules"]["generator"].values())
    rows = (tmp_path / "nan" / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "10", "20"]
    end = json.loads((tmp_path / "nan" / "config.json").read_text())["end"]
    assert end == {"reason": "non-finite between 20 and 30", "iteration": 20}


def test_resolve_device_without_cuda_warns_and_uses_cpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cuda:0") == torch.device("cpu")
    assert "CUDA is not available" in capsys.readouterr().err
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_names_the_devices_that_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Fake GPU {i}")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(UsageError, match=r"cuda:5: no such CUDA device; this machine has cuda:0 \(Fake GPU 0\), "
                                         r"cuda:1 \(Fake GPU 1\)"):
        resolve_device("cuda:5")
    with pytest.raises(UsageError, match="not a device torch understands"):
        resolve_device("gpu0")


def test_sigint_saves_the_current_iteration_and_exits_130(tmp_path, tiny, capsys):
    """Ctrl-C (SIGINT) in iteration 15: the loop finishes that iteration, saves last.pt at iteration 15 with the
    interval's running sums, prints one line with the --load command and exits with 130."""
    def interrupt(nets, n):
        if n == 15:
            os.kill(os.getpid(), signal.SIGINT)

    argv = ["--true_score", *tiny, "--max_iter", "50", "--show_iter", "10", "--out_dir", str(tmp_path), "--name", "i"]
    # Python's own Ctrl-C handler to start from, whatever the caller had (a shell's background job has SIGINT ignored)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(SystemExit) as exc:
            train(hooked_build(interrupt), argv)
        restored = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, outer)
    assert exc.value.code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert "SIGINT received: stopped at iteration 15" in err[-1] and f"--load {tmp_path / 'i'}" in err[-1]
    ckpt = torch.load(tmp_path / "i" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 15 and ckpt["interval"]["steps"] == 5
    assert set(ckpt["interval"]["sums"]) == set(logged_terms(tmp_path / "i"))
    assert restored is signal.default_int_handler  # the handlers are put back


def test_checkpoints_are_rewritten_only_when_due(tmp_path, tiny, monkeypatch):
    """--checkpoint_minutes keeps file writes off the training path: by default last.pt is written at iteration 0
    and at the end only (in a short run); with 0, at every evaluation."""
    import utils.run_io as run_io
    real_save, writes = run_io.save_checkpoints, []
    monkeypatch.setattr(run_io, "save_checkpoints",
                        lambda files: (writes.extend(state["iteration"] for _, state in files), real_save(files)))
    for extra, expected in [([], [0, 40]), (["--checkpoint_minutes", "0"], [0, 10, 20, 30, 40])]:
        writes.clear()
        train(train_upper_diffusion.build, ["--true_score", *tiny, "--max_iter", "40", "--show_iter", "10",
                                            "--out_dir", str(tmp_path), *extra])
        assert writes == expected
