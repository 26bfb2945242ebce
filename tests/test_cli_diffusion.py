"""End to end: train_upper_diffusion.py writes every output, resumes exactly, and rejects bad input cleanly."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_complete_run_folder, read_metrics, run_script
from losses.noise import NoiseSampler

SCRIPT = "train_upper_diffusion.py"
PUBLISHED = ["-true_score", "--sigma_min", "0.1", "--sigma_max", "20", "--power", "2.0", "--device", "cuda:0",
             "--weight", "sigma2", "--seed", "0"]


def test_published_command_runs_and_writes_every_output(tmp_path, tiny):
    res = run_script(SCRIPT, *PUBLISHED, *tiny, "--max_iter", "30", "--show_iter", "10", "--plot_every", "2",
                     "--out_dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / "vardiu_gaussian_mog40_true_score_sigma2_seed0"
    assert_complete_run_folder(run_dir, [0, 10, 20, 30], 400)
    assert (run_dir / "plots" / "samples_0000020.png").is_file()  # every 2nd evaluation
    rows = read_metrics(run_dir)
    assert all(np.isfinite(float(r["loss"])) and np.isfinite(float(r["bound"])) for r in rows[1:])
    if not torch.cuda.is_available():
        assert "CUDA is not available" in res.stderr
    # A second run with the same flags gets a new folder; the first is untouched.
    before = (run_dir / "metrics.csv").read_text()
    res2 = run_script(SCRIPT, *PUBLISHED, *tiny, "--max_iter", "10", "--show_iter", "10", "--out_dir", str(tmp_path))
    assert res2.returncode == 0, res2.stderr
    assert (tmp_path / "vardiu_gaussian_mog40_true_score_sigma2_seed0_1" / "metrics.csv").is_file()
    assert (run_dir / "metrics.csv").read_text() == before


def test_resume_equals_uninterrupted_run(tmp_path, tiny):
    """EMA on and a power schedule that moves across the resume point (every 7 iterations)."""
    common = ["--true_score", *tiny, "--target", "mog9", "--sigma_max", "5", "--show_iter", "10",
              "--ema_decay", "0.9", "--power_interval", "7", "--device", "cpu", "--out_dir", str(tmp_path)]
    full = run_script(SCRIPT, *common, "--max_iter", "40", "--name", "full")
    part = run_script(SCRIPT, *common, "--max_iter", "20", "--name", "part")
    assert full.returncode == 0 and part.returncode == 0, full.stderr + part.stderr
    resumed = run_script(SCRIPT, "--load", str(tmp_path / "part"), "--max_iter", "40", "--no_progress")
    assert resumed.returncode == 0, resumed.stderr
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "part")
    assert len(a) == len(b) == 5 and list(a[0]) == list(b[0])
    for ra, rb in zip(a, b):
        for key in ra:
            if key not in ("wall_time", "train_time"):
                assert ra[key] == rb[key], (key, ra, rb)
    assert len({r["power"] for r in a}) == 5  # the schedule moved between every two evaluations
    assert np.array_equal(np.load(tmp_path / "full" / "samples.npy"), np.load(tmp_path / "part" / "samples.npy"))
    assert len(json.loads((tmp_path / "part" / "lists" / "logpd_list.json").read_text())) == 5
    # config.json is this command's; the first command's resumable flags are kept under "segments".
    config = json.loads((tmp_path / "part" / "config.json").read_text())
    assert config["max_iter"] == 40 and config["load"] == [str(tmp_path / "part")]
    [first] = config["segments"]
    assert first["max_iter"] == 20 and first["load"] is None and first["until_iteration"] == 20
    assert first["device_resolved"] == "cpu" and first["device_name"] == "cpu" and "segments" not in first
    assert config["device_name"] == "cpu"
    assert json.loads((tmp_path / "full" / "config.json").read_text())["segments"] == []


def test_resume_rejects_changed_training_flags(tmp_path, tiny):
    res = run_script(SCRIPT, "--true_score", *tiny, "--max_iter", "10", "--show_iter", "10", "--out_dir",
                     str(tmp_path), "--name", "r")
    assert res.returncode == 0, res.stderr
    res = run_script(SCRIPT, "--load", str(tmp_path / "r"), "--max_iter", "20", "--lr", "0.1")
    assert res.returncode == 2 and "--lr cannot change when resuming" in res.stderr
    res = run_script(SCRIPT, "--load", str(tmp_path / "r"), "--max_iter", "10")
    assert res.returncode == 2 and "already at iteration 10" in res.stderr


def corrupt_file(tmp_path: Path) -> str:
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint at all")
    return str(path)


BAD_INPUTS = [
    (["--sigma_min", "5", "--sigma_max", "1"], "must be smaller than --sigma_max"),
    (["--sigma_min", "2", "--sigma_max", "2"], "must be smaller than --sigma_max"),
    (["--sigma_min", "0"], "--sigma_min must be a positive"),
    (["--sigma_max", "-3"], "--sigma_max must be a positive"),
    (["--max_iter", "0"], "--max_iter must be a positive integer"),
    (["--max_iter", "-5"], "--max_iter must be a positive integer"),
    (["--batch_size", "0"], "--batch_size must be a positive integer"),
    (["--batch_size", "63"], "must be even for antithetic"),
    (["--show_iter", "0"], "--show_iter must be a positive integer"),
    (["--weight", "sigma3"], "invalid choice: 'sigma3'"),
    (["--target", "mog41"], "invalid choice: 'mog41'"),
    (["--lr", "0"], "--lr must be a positive"),
    (["--ema_decay", "1.0"], "--ema_decay must be in [0, 1)"),
    (["--device", "tpu:0"], "--device"),
    (["--device", "banana"], "--device 'banana' is not a device"),
    (["--load", "/nonexistent/run"], "no checkpoint at"),
    (["--load", "CORRUPT"], "not a readable checkpoint"),
    (["--max_iter", "ten"], "invalid int value"),
    (["--out_dir", "AFILE"], "is a file, not a folder"),
    (["--out_dir", "AFILE/sub"], "is a file, not a folder"),
    (["--name", "a/b"], "must be a single folder name"),
    (["--name", "../escape"], "must be a single folder name"),
    (["--name", ".."], "must be a single folder name"),
    (["--seed", "-1"], "--seed must be 0 or a positive integer"),
    (["--seeds", ""], "expected a range like 0-9"),
    (["--grad_clip", "nan"], "--grad_clip must be a finite number"),
    (["--power_step", "nan"], "--power_step must be a finite number"),
    (["--checkpoint_minutes", "nan"], "--checkpoint_minutes must be a finite number"),
    (["--time_limit", "nan"], "--time_limit must be a finite number"),
    (["--time_limit", "inf"], "--time_limit must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--iw_samples", "-1"], "--iw_samples must be 0"),
    (["--prior_proposals_sigma", "-1"], "--prior_proposals_sigma must be 0 (off)"),
    (["--prior_proposals_grad", "pathwise"], "--prior_proposals_grad pathwise acts on the --prior_proposals_sigma rows"),
    (["--iw_samples", "2", "--posterior", "PLF", "--max_iter", "2"], "inverts by bisection"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS)
def test_bad_input_gives_one_line_and_exit_code_2(tmp_path, args, message):
    afile = tmp_path / "afile"
    afile.write_text("a file, not a folder")
    args = [corrupt_file(tmp_path) if a == "CORRUPT" else a.replace("AFILE", str(afile)) for a in args]
    res = run_script(SCRIPT, "--true_score", "--out_dir", str(tmp_path / "runs"), *args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert message in lines[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_odd_batch_allowed_without_antithetic(tmp_path, tiny):
    res = run_script(SCRIPT, "--true_score", *tiny, "--batch_size", "63", "--no_antithetic", "--max_iter", "5",
                     "--show_iter", "5", "--out_dir", str(tmp_path), "--name", "odd")
    assert res.returncode == 0, res.stderr
    config = json.loads((tmp_path / "odd" / "config.json").read_text())
    assert config["batch_size"] == 63 and config["no_antithetic"] is True
    rows = read_metrics(tmp_path / "odd")
    assert [r["iteration"] for r in rows] == ["0", "5"] and np.isfinite(float(rows[-1]["loss"]))
    # what such a run draws: 63 noise vectors, none the negative of another (no antithetic pairs)
    noise = NoiseSampler(63, 0.1, 20.0, antithetic=False, device=torch.device("cpu")).draw(2, 1.0)
    assert noise.eps.shape == (63, 2) and noise.z.shape == (63, 2)
    assert not torch.isclose(noise.eps[:, None, :], -noise.eps[None, :, :]).all(-1).any()


def test_wandb_without_the_package_is_a_clear_error(tmp_path, tiny):
    pytest.importorskip("torch")
    try:
        import wandb  # noqa: F401
        pytest.skip("wandb is installed here")
    except ImportError:
        pass
    res = run_script(SCRIPT, "--true_score", *tiny, "--wandb", "--max_iter", "5", "--out_dir", str(tmp_path))
    assert res.returncode == 2 and "pip install wandb" in res.stderr and "Traceback" not in res.stderr


def test_help_documents_every_flag_with_defaults():
    res = run_script(SCRIPT, "--help")
    assert res.returncode == 0
    for flag in ["--true_score", "--sigma_min", "--sigma_max", "--power", "--weight", "--max_iter", "--seed",
                 "--device", "--load", "--batch_size", "--lr", "--show_iter", "--plot_every", "--eval_samples",
                 "--power_uncapped", "--no_antithetic", "--out_dir", "--ema_decay", "--tensorboard", "--wandb",
                 "--posterior_lr", "--name", "--target"]:
        assert flag in res.stdout
    assert "(default: 1000000)" in res.stdout


def test_time_limit_ends_the_run_cleanly_at_an_evaluation(tmp_path, tiny):
    res = run_script(SCRIPT, "--true_score", *tiny, "--max_iter", "1000", "--show_iter", "10", "--time_limit",
                     "0.00001", "--out_dir", str(tmp_path), "--name", "t")
    assert res.returncode == 0, res.stderr
    assert "time limit" in res.stderr
    assert [int(r["iteration"]) for r in read_metrics(tmp_path / "t")] == [0, 10]
    assert (tmp_path / "t" / "plots" / "samples_0000010.png").is_file()
    resumed = run_script(SCRIPT, "--load", str(tmp_path / "t"), "--max_iter", "20", "--no_progress")
    assert resumed.returncode == 0, resumed.stderr
    assert [int(r["iteration"]) for r in read_metrics(tmp_path / "t")] == [0, 10, 20]


def test_tensorboard_writes_event_files(tmp_path, tiny):
    pytest.importorskip("tensorboard")
    res = run_script(SCRIPT, "--true_score", *tiny, "--tensorboard", "--max_iter", "10", "--show_iter", "5",
                     "--out_dir", str(tmp_path), "--name", "tb")
    assert res.returncode == 0, res.stderr
    events = list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(tmp_path, tiny, monkeypatch, capsys):
    """The second checkpoint write fails half-way (no space left): one line, exit 1, no stale last.pt.tmp, and the
    first checkpoint still loads."""
    import errno

    import train_upper_diffusion
    import utils.run_io as run_io
    real_save, calls = torch.save, {"n": 0}

    def full_disk(obj, path):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(path).write_bytes(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, path)

    monkeypatch.setattr(run_io.torch, "save", full_disk)
    with pytest.raises(SystemExit) as exc:
        train_upper_diffusion.main(["--true_score", *tiny, "--max_iter", "20", "--show_iter", "10",
                                    "--checkpoint_minutes", "0", "--out_dir", str(tmp_path), "--name", "d"])
    assert exc.value.code == 1  # a run-time I/O failure, not bad input (2)
    err = capsys.readouterr().err.strip().splitlines()
    assert "No space left on device" in err[-1] and "the previous last.pt is kept" in err[-1]
    assert not (tmp_path / "d" / "checkpoints" / "last.pt.tmp").exists()
    monkeypatch.setattr(run_io.torch, "save", real_save)
    assert torch.load(tmp_path / "d" / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 0


def test_a_metrics_write_that_fails_mid_run_is_one_line_exit_1(tmp_path, tiny, monkeypatch, capsys):
    """A folder that stops taking writes mid-run (here: the second metrics row) is a run-time I/O failure: one line
    naming what is kept, exit 1 (not 2, bad input), and the checkpoint of iteration 0 still loads."""
    import errno

    import train_upper_diffusion
    import utils.run_io as run_io
    real_append, calls = run_io.MetricsLog._append, {"n": 0}

    def failing_append(self, row):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.EROFS, "Read-only file system")
        real_append(self, row)

    monkeypatch.setattr(run_io.MetricsLog, "_append", failing_append)
    with pytest.raises(SystemExit) as exc:
        train_upper_diffusion.main(["--true_score", *tiny, "--max_iter", "20", "--show_iter", "10",
                                    "--out_dir", str(tmp_path), "--name", "ro"])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "could not write the metrics" in err[-1] and "Read-only file system" in err[-1] and "kept" in err[-1]
    assert [r["iteration"] for r in read_metrics(tmp_path / "ro")] == ["0"]
    assert torch.load(tmp_path / "ro" / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 0


def test_resuming_an_iteration_0_checkpoint_logs_iteration_0_once(tmp_path, tiny):
    """A run killed after its first checkpoint (iteration 0) resumes without a second iteration-0 row."""
    import train_upper_diffusion
    from utils.cli import parse_flags
    from utils.loop import run_training
    from utils.step import Update

    def crashing_build(flags, device, target):
        method = train_upper_diffusion.build(flags, device, target)

        def crash(nets, power):
            raise RuntimeError("killed")
        method.updates[0] = Update(crash, method.updates[0].networks)
        return method

    argv = ["--true_score", *tiny, "--max_iter", "20", "--show_iter", "10", "--out_dir", str(tmp_path), "--name", "z"]
    with pytest.raises(RuntimeError):
        run_training(crashing_build, parse_flags(train_upper_diffusion.build_parser(), argv, SCRIPT), SCRIPT, "x")
    res = run_script(SCRIPT, "--load", str(tmp_path / "z"), "--max_iter", "20", "--no_progress")
    assert res.returncode == 0, res.stderr
    assert [r["iteration"] for r in read_metrics(tmp_path / "z")] == ["0", "10", "20"]


def test_progress_bar_shows_no_loss_before_the_first_evaluation():
    from utils.loop import progress_summary
    assert progress_summary([{"logpd": -7.0, "log_mmd": -6.5, "modes": 40}]) == "logpd=-7.000, logMMD=-6.50, modes=40"
    assert "loss=0.5" in progress_summary([{"logpd": -7.0, "log_mmd": -6.5, "modes": 40, "loss": 0.5}])
    assert "loss" not in progress_summary([{"logpd": -7.0, "log_mmd": -6.5, "modes": 40, "loss": float("nan")}])
