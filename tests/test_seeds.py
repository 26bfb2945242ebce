"""Vectorised seeds (--seeds): stacked networks compute what K separate networks compute, each seed's step is a
single-seed step of that seed given the same noise, and a vectorised run writes ordinary, resumable run folders."""
import json
from contextlib import contextmanager

import numpy as np
import pytest
import torch

import train_diff_instruct
import train_upper_diffusion
from conftest import (assert_complete_run_folder, assert_vectorised_run_resumes_exactly, read_metrics,
                      run_script)
from models import Generator
from utils.cli import UsageError
from utils.seeds import Networks, parse_seeds
from utils.registry import make_target
from utils.step import build_trainer

SCRIPT = "train_upper_diffusion.py"


def test_parse_seeds():
    assert parse_seeds("0-9") == list(range(10))
    assert parse_seeds("0,3,7") == [0, 3, 7]
    assert parse_seeds("1-3, 8") == [1, 2, 3, 8]
    for bad in ["", "a", "3-1", "0,0", "1-"]:
        with pytest.raises(UsageError):
            parse_seeds(bad)


def make_modules(k: int) -> list[dict]:
    modules = []
    for seed in range(k):
        torch.manual_seed(seed)
        modules.append({"generator": Generator(2, 16, 2)})
    return modules


def make_sets(k: int) -> list[Networks]:
    return [Networks(**m) for m in make_modules(k)]


def test_stacked_networks_compute_what_each_network_computes():
    sets = make_sets(3)
    stacked = Networks.stack(make_modules(3))
    z = torch.randn(5, 2)
    out = stacked.call(lambda nets, x: nets["generator"](x).pow(2).sum(), z)  # [K]
    out.sum().backward()
    for k, single in enumerate(sets):
        expected = single.modules["generator"](z).pow(2).sum()
        expected.backward()
        torch.testing.assert_close(out[k], expected)
        for p_stacked, p in zip(stacked.parameters("generator"), single.parameters("generator")):
            torch.testing.assert_close(p_stacked.grad[k], p.grad)


def test_per_seed_gradient_clipping_matches_clip_grad_norm():
    sets = make_sets(3)
    stacked = Networks.stack(make_modules(3))
    z = torch.randn(64, 2) * 10
    scales = torch.tensor([1.0, 100.0, 0.01])  # one seed under the clip, two over
    (stacked.call(lambda nets, x: nets["generator"](x).sum(), z) * scales).sum().backward()
    stacked.clip_grad_norm_("generator", 1.0)
    for k, single in enumerate(sets):
        (single.modules["generator"](z).sum() * scales[k]).backward()
        single.clip_grad_norm_("generator", 1.0)
        for p_stacked, p in zip(stacked.parameters("generator"), single.parameters("generator")):
            torch.testing.assert_close(p_stacked.grad[k], p.grad)


@contextmanager
def seed_slice_of_draws(k: int, num_seeds: int):
    """Make torch.randn / torch.rand return slice k of a draw for all num_seeds seeds: the numbers seed k sees
    inside a vectorised step (vmap with randomness="different" draws [K, ...] at once)."""
    randn, rand, randn_like = torch.randn, torch.rand, torch.randn_like
    torch.randn = lambda *shape, **kw: randn(num_seeds, *shape, **kw)[k]
    torch.rand = lambda *shape, **kw: rand(num_seeds, *shape, **kw)[k]
    torch.randn_like = lambda t: randn(num_seeds, *t.shape, dtype=t.dtype, device=t.device)[k]
    try:
        yield
    finally:
        torch.randn, torch.rand, torch.randn_like = randn, rand, randn_like


@pytest.mark.parametrize("module,flags", [(train_upper_diffusion, ["--true_score"]),
                                          (train_upper_diffusion, ["--true_score", "--iw_samples", "3"]),
                                          (train_diff_instruct, ["--true_score", "--score_step", "2",
                                                                 "--width", "400", "--depth", "4"])])
def test_each_seed_of_a_vectorised_step_is_a_single_seed_step(module, flags):
    """Given the same noise, seed k of a K-seed step updates its networks exactly as a single-seed step of seed k
    (same initial weights, same Adam, clipping per seed). Seeds differ only through their noise, drawn from one
    stream in disjoint slices: each seed is a single-seed run in distribution."""
    seeds, device = [0, 1, 2], torch.device("cpu")
    argv = flags + ["--device", "cpu", "--batch_size", "32"]
    if module is train_upper_diffusion:
        argv += ["--width", "32", "--depth", "2"]
    target = make_target("mog40")
    values = module.build_parser().parse_args(argv)
    vectorised = build_trainer(module.build, values, seeds, device, target)
    singles = [build_trainer(module.build, values, [s], device, target) for s in seeds]
    for trainer in [vectorised, *singles]:
        trainer.power.fill_(0.5)
    for _ in range(5):
        state = torch.random.get_rng_state()
        vectorised.iteration()
        for k, single in enumerate(singles):
            torch.random.set_rng_state(state)
            with seed_slice_of_draws(k, len(seeds)):
                single.iteration()
            for key, total in vectorised.sums.items():  # running sums of the logged scalars
                torch.testing.assert_close(total[k], single.sums[key][0], rtol=1e-4, atol=1e-5)
    for name in vectorised.nets.modules:
        for k, single in enumerate(singles):
            for p_stacked, p in zip(vectorised.nets.parameters(name), single.nets.parameters(name)):
                torch.testing.assert_close(p_stacked[k], p, rtol=1e-4, atol=1e-6)


def test_vectorised_run_writes_one_ordinary_run_folder_per_seed(tmp_path, tiny):
    common = ["--true_score", *tiny, "--show_iter", "20", "--out_dir", str(tmp_path), "--checkpoint_minutes", "0"]
    res = run_script(SCRIPT, *common, "--max_iter", "40", "--seeds", "0-2", "--name", "vec")
    assert res.returncode == 0, res.stderr
    single = run_script(SCRIPT, *common, "--max_iter", "40", "--seed", "1", "--name", "one")
    assert single.returncode == 0, single.stderr
    for seed in range(3):
        run_dir = tmp_path / f"vec_seed{seed}"
        assert_complete_run_folder(run_dir, [0, 20, 40], 400)
        cfg = json.loads((run_dir / "config.json").read_text())
        assert cfg["seed"] == seed and cfg["vectorised_seeds"] == [0, 1, 2] and cfg["seeds"] is None
    # seed 1 starts from the same weights as a --seed 1 run and is evaluated on the same sample stream
    vec_rows, one_rows = read_metrics(tmp_path / "vec_seed1"), read_metrics(tmp_path / "one")
    for key in ["logpd", "mmd", "modes"]:
        assert vec_rows[0][key] == one_rows[0][key]
    assert vec_rows[-1]["logpd"] != read_metrics(tmp_path / "vec_seed0")[-1]["logpd"]  # seeds really differ


def test_vectorised_run_resumes_exactly(tmp_path, tiny):
    """With EMA on and a power schedule that moves across the resume point: each seed's metrics (computed from the
    EMA weights) continue exactly as in the uninterrupted run."""
    assert_vectorised_run_resumes_exactly(SCRIPT, ["--true_score", *tiny, "--show_iter", "20", "--ema_decay", "0.9",
                                                   "--power_interval", "7"], (3, 5), tmp_path)
    for seed in (3, 5):  # the schedule moved (0.1, 0.12, 0.15 at iterations 0, 20, 40)
        assert len({r["power"] for r in read_metrics(tmp_path / f"full_seed{seed}")}) == 3
    # one seed of a vectorised run also resumes on its own, as a single-seed run
    res = run_script(SCRIPT, "--load", str(tmp_path / "full_seed5"), "--max_iter", "60", "--no_progress")
    assert res.returncode == 0, res.stderr
    assert [int(r["iteration"]) for r in read_metrics(tmp_path / "full_seed5")] == [0, 20, 40, 60]


@pytest.mark.parametrize("argv,message", [
    (["--seeds", "0-x"], "expected a range like 0-9"),
    (["--seeds", "0-1", "--teacher", "kde"], "--seeds with --teacher kde"),
])
def test_bad_seed_flags_fail_with_one_line(tmp_path, tiny, argv, message):
    res = run_script(SCRIPT, *tiny, "--max_iter", "2", "--out_dir", str(tmp_path), *argv)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_seeds_resumed_apart_resume_together_again(tmp_path, tiny):
    """Seeds of one run that were resumed separately, with other resume-only flags (--show_iter, --max_iter), can be
    resumed together again once they stand at one iteration; each seed's wall and training time go on from its own
    (the joined command adds the same time to both), not from the first seed's."""
    common = ["--true_score", *tiny, "--out_dir", str(tmp_path), "--checkpoint_minutes", "0"]
    assert run_script(SCRIPT, *common, "--show_iter", "20", "--max_iter", "20", "--seeds", "0-1",
                      "--name", "v").returncode == 0
    first, second = str(tmp_path / "v_seed0"), str(tmp_path / "v_seed1")
    assert run_script(SCRIPT, "--load", first, "--max_iter", "40", "--show_iter", "10", "--no_progress").returncode == 0
    assert run_script(SCRIPT, "--load", second, "--max_iter", "30", "--no_progress").returncode == 0
    assert run_script(SCRIPT, "--load", second, "--max_iter", "40", "--no_progress").returncode == 0
    ckpt_path = tmp_path / "v_seed1" / "checkpoints" / "last.pt"  # as if seed 1's own commands had taken 100 s longer
    ckpt = torch.load(ckpt_path, weights_only=True)
    torch.save(ckpt | {"wall_time": ckpt["wall_time"] + 100, "train_time": ckpt["train_time"] + 100}, ckpt_path)
    stopped_at = [torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)
                  for name in ("v_seed0", "v_seed1")]
    res = run_script(SCRIPT, "--load", first, second, "--max_iter", "60", "--no_progress")
    assert res.returncode == 0, res.stderr
    assert [int(r["iteration"]) for r in read_metrics(tmp_path / "v_seed1")] == [0, 20, 30, 40, 50, 60]
    rows = [{int(r["iteration"]): r for r in read_metrics(tmp_path / name)} for name in ("v_seed0", "v_seed1")]
    for key in ("wall_time", "train_time"):
        offset = stopped_at[1][key] - stopped_at[0][key]
        apart = [float(rows[1][it][key]) - float(rows[0][it][key]) for it in (50, 60)]
        assert offset > 99 and all(abs(a - offset) <= 2e-3 for a in apart), (key, offset, apart)
        assert float(rows[0][60][key]) > float(rows[0][50][key]) > stopped_at[0][key]


def test_loading_checkpoints_of_different_runs_together_fails(tmp_path, tiny):
    common = ["--true_score", *tiny, "--show_iter", "10", "--max_iter", "10", "--out_dir", str(tmp_path)]
    assert run_script(SCRIPT, *common, "--name", "a").returncode == 0
    assert run_script(SCRIPT, *common, "--name", "b", "--lr", "1e-3", "--seed", "1").returncode == 0
    res = run_script(SCRIPT, "--load", str(tmp_path / "a"), str(tmp_path / "b"), "--max_iter", "20")
    assert res.returncode == 2 and "not seeds of one run" in res.stderr
