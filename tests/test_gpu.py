"""CUDA-only checks (skipped cleanly without a GPU): the training steps never synchronise with the host."""

import numpy as np
import pytest
import torch

from conftest import TINY, read_metrics, run_script
from models.denoiser import ReferenceDenoiser
from models.networks import MLP
from utils.registry import make_target
from utils.registry import method_trainer
from utils.step import prepare, set_precision

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make_trainer(method: str, flags: list[str], seeds: list[int]):
    """The trainer a method's script builds for these flags (utils.registry), on CUDA, at the paper's sizes unless
    the flags say otherwise."""
    return method_trainer(method, flags, seeds, torch.device("cuda"))


def run_without_sync(trainer, power: float) -> dict:
    """One warm-up iteration (lazy library initialisation may synchronise once), then three iterations under
    torch.cuda.set_sync_debug_mode("error"), which raises on any host synchronisation."""
    trainer.power.fill_(power)
    trainer.iteration()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            trainer.iteration()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return trainer.sums


# the high-dimensional study's setting (docs/high-dimensional.md), with the K-sample bound or prior proposals added
D8 = ["--true_score", "--dim", "8", "--sigma_max", "150", "--precondition", "--weight", "sigma"]


@pytest.mark.parametrize("method,flags", [
    ("vardiu_gaussian", ["--true_score"]),
    ("vardiu_nsf", ["--true_score"]),
    ("vardiu_plf", ["--true_score"]),
    ("vardiu_gaussian", []),                                       # EDM teacher, control variate
    ("vardiu_gaussian", ["--teacher", "kde"]),
    ("vardiu_gaussian", ["--true_score", "--weight_reduction", "batch", "--ema_decay", "0.99"]),
    ("diff_instruct", ["--true_score", "--score_step", "1"]),
    ("diff_instruct", ["--true_score", "--score_step", "3", "--reference_generator_input"]),
    ("teacher", ["--batch_size", "1024"]),
    ("vardiu_gaussian", D8 + ["--prior_proposals_sigma", "5"]),
    ("vardiu_gaussian", D8 + ["--prior_proposals_sigma", "5", "--prior_proposals_grad", "pathwise"]),
    ("vardiu_gaussian", D8 + ["--iw_samples", "8", "--prior_proposals_sigma", "20"]),
])
def test_training_iteration_has_no_host_synchronisation(method, flags):
    sums = run_without_sync(make_trainer(method, flags, [0]), power=0.5)
    assert sums and all(torch.isfinite(v).all() for v in sums.values())


def test_authors_teacher_iteration_has_no_host_synchronisation(tmp_path):
    """--teacher authors: a file laid out as the authors' edm_network.pth (their network at its size)."""
    path = tmp_path / "edm_network.pth"
    torch.save(ReferenceDenoiser(2, 400, 4).state_dict(), path)
    for method in ["vardiu_gaussian", "diff_instruct"]:
        sums = run_without_sync(make_trainer(method, ["--teacher", "authors", "--teacher_ckpt", str(path)], [0]),
                                power=0.5)
        assert sums and all(torch.isfinite(v).all() for v in sums.values())


FAST_PATH_CASES = {  # case -> (utils.registry method, flags)
    "vardiu_gaussian": ("vardiu_gaussian", ["--true_score"]),
    "vardiu_gaussian_teacher": ("vardiu_gaussian", []),
    "vardiu_nsf": ("vardiu_nsf", ["--true_score"]),
    "vardiu_plf": ("vardiu_plf", ["--true_score"]),
    "diff_instruct_ss2": ("diff_instruct", ["--true_score", "--score_step", "2"]),
    "vardiu_gaussian_prior5_d8": ("vardiu_gaussian", D8 + ["--prior_proposals_sigma", "5"]),
}


def train_iterations(method: str, flags: list[str], seeds: list[int], mode: str, iterations: int) -> dict:
    """Parameters of every network after ``iterations`` training iterations at the paper's sizes, run as the
    scripts' ``--mode`` runs them (utils.step.prepare: eager; exact, replayed as one CUDA graph; fast, compiled
    and replayed), started from the same seeds (same initial weights and random stream)."""
    try:
        trainer = make_trainer(method, flags + ["--ema_decay", "0.999"], seeds)
        run = prepare(trainer, mode)
        for it in range(iterations):
            trainer.power.fill_(min(0.1 + 0.01 * (it // 20), 2.0))  # a schedule that changes during the test
            run()
        torch.cuda.synchronize()
    finally:
        set_precision("exact")
    assert run.captured == (mode != "eager")
    params = {f"{name}.{i}": p.detach().clone() for name in trainer.nets.modules
              for i, p in enumerate(trainer.nets.parameters(name))}
    return params | {f"ema.{i}": e.clone() for i, e in enumerate(trainer.ema)} | \
        {f"sum.{k}": v for k, v in trainer.sums.items()}


@pytest.mark.parametrize("case", list(FAST_PATH_CASES))
@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]])
def test_fast_path_matches_eager(case, seeds):
    """The fast path (the scripts' default on CUDA) computes what the eager path computes, from the same seed, over
    300 iterations including the warm-up, the capture and a changing sigma-sampler power: replaying a CUDA graph
    runs the very same kernels and random draws, so weights, EMA and loss sums agree to float rounding."""
    method, flags = FAST_PATH_CASES[case]
    eager = train_iterations(method, flags, seeds, "eager", iterations=300)
    graph = train_iterations(method, flags, seeds, "exact", iterations=300)
    assert eager.keys() == graph.keys()
    for key in eager:
        assert torch.isfinite(eager[key]).all(), key
        torch.testing.assert_close(graph[key], eager[key], rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("case,seeds", [("vardiu_gaussian", [0]), ("vardiu_gaussian", [0, 1, 2]), ("vardiu_nsf", [0]),
                                        ("diff_instruct_ss2", [0, 1]), ("vardiu_gaussian_prior5_d8", [0, 1])])
def test_fast_mode_trains(case, seeds):
    """--mode fast (torch.compile, TF32 hidden products, CUDA graph) runs 300 finite iterations whose mean loss is
    close to the eager run's. It does not reproduce eager's numbers, so only the statistics are compared here;
    benchmarks/equality_study.py compares whole training curves."""
    method, flags = FAST_PATH_CASES[case]
    eager = train_iterations(method, flags, seeds, "eager", iterations=300)
    fast = train_iterations(method, flags, seeds, "fast", iterations=300)
    for key in fast:
        assert torch.isfinite(fast[key]).all(), key
    # the mean loss per iteration over the 300 iterations, of every seed and every logged term: fast training
    # follows eager training closely, though not to the bit (a 5% margin; a mis-wired mode is far outside it)
    for key in [k for k in fast if k.startswith("sum.")]:
        print(f"{case} {seeds} {key}: fast {(fast[key] / 300).tolist()} eager {(eager[key] / 300).tolist()}")
        torch.testing.assert_close(fast[key] / 300, eager[key] / 300, rtol=0.05, atol=0.02, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("seeds", [["--seed", "0"], ["--seeds", "0,1"]])
def test_resume_on_the_cuda_graph_path_continues_the_run(tmp_path, seeds):
    """A run stopped at iteration 20 and resumed with --load on the default CUDA path (graph replay, with EMA and a
    moving power schedule) gives the metrics of the uninterrupted run: the random state saved after graph
    replays is the one the next replay uses."""
    common = ["--true_score", *TINY, "--show_iter", "10", "--ema_decay", "0.9", "--power_interval", "7",
              "--device", "cuda", "--out_dir", str(tmp_path), *seeds]
    assert run_script("train_upper_diffusion.py", *common, "--max_iter", "40", "--name", "full").returncode == 0
    assert run_script("train_upper_diffusion.py", *common, "--max_iter", "20", "--name", "part").returncode == 0
    names = ["full", "part"] if seeds[0] == "--seed" else ["full_seed1", "part_seed1"]
    parts = [str(tmp_path / n) for n in (["part"] if seeds[0] == "--seed" else ["part_seed0", "part_seed1"])]
    res = run_script("train_upper_diffusion.py", "--load", *parts, "--max_iter", "40", "--no_progress")
    assert res.returncode == 0, res.stderr
    full, part = read_metrics(tmp_path / names[0]), read_metrics(tmp_path / names[1])
    assert [r["iteration"] for r in full] == [r["iteration"] for r in part] == ["0", "10", "20", "30", "40"]
    for key in ["logpd", "log_mmd", "loss", "bound"]:
        np.testing.assert_allclose([float(r[key]) for r in part], [float(r[key]) for r in full], rtol=1e-5,
                                   err_msg=key)
    assert [r["power"] for r in full] == [r["power"] for r in part]


def test_tf32_never_rounds_coordinates():
    """With TF32 matrix products on (--mode fast), the first layer of every MLP (coordinates in) and the mixture's
    score compute exactly what float32 computes; a plain TF32 matrix product would not."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    first_layer = MLP(3, 400, depth=0).to(device)  # an MLP's first layer alone
    x = torch.cat([torch.rand(4096, 2, device=device) * 80 - 40, torch.rand(4096, 1, device=device)], dim=1)
    target = make_target("mog40").to(device)
    sigma = torch.full((4096,), 0.1, device=device)
    outputs = {}
    for mode in ("exact", "fast"):
        set_precision(mode)
        outputs[mode] = (first_layer(x), target.score(x[:, :2], sigma), x @ first_layer[0].weight.T)
    set_precision("exact")
    torch.testing.assert_close(outputs["fast"][0], outputs["exact"][0], rtol=0, atol=0)
    torch.testing.assert_close(outputs["fast"][1], outputs["exact"][1], rtol=0, atol=0)
    assert not torch.equal(outputs["fast"][2], outputs["exact"][2])  # TF32 is on: a matmul would differ
