"""Diff-Instruct: the generator gradient of losses/diff_instruct.py, and train_diff_instruct.py end to end."""
import json

import numpy as np

import pytest
import torch

import train_diff_instruct
from conftest import (assert_complete_run_folder, assert_vectorised_run_resumes_exactly, read_metrics,
                      run_script)
from losses.diff_instruct import diff_instruct_generator_loss
from experiments.linear_gaussian import DiagonalLinearGenerator, diffusive_kl, gaussian_score
from losses.noise import draw_noise, make_weight
from models.denoiser import EDMDenoiser
from models.networks import ReferenceDiffInstructGenerator
from utils.registry import make_target
from utils.targets import mog9

SCRIPT = "train_diff_instruct.py"


@pytest.mark.parametrize("weight,power", [("uniform", 0), ("sigma", 1), ("sigma2", 2)])
def test_generator_gradient_equals_hand_derived_formula(weight, power):
    """grad_theta = E[w (s_student - s_target)^T dx0/dtheta], with x0 = A z + b: grad_A = mean w g z^T, grad_b = mean w g."""
    torch.manual_seed(0)
    gen = torch.nn.Linear(2, 2).double()
    gen.dim = 2
    student = EDMDenoiser(2, width=16, depth=2).double()
    target = mog9()
    nb = draw_noise(16, 2, 0.3, 5.0, 1.0, antithetic=False, dtype=torch.float64)
    diff_instruct_generator_loss(gen, student.score, nb, target.score, make_weight(weight, 5.0)).backward()
    with torch.no_grad():
        x0 = gen(nb.z)
        x_t = x0 + nb.sigma[:, None] * nb.eps
        # The student's score written out from its definition (D(x, sigma) - x) / sigma^2.
        s_student = (student(x_t, nb.sigma) - x_t) / nb.sigma[:, None] ** 2
        w = (nb.sigma / 5.0) ** power  # (sigma / sigma_max)^k
        g = w[:, None] * (s_student - target.score(x_t, nb.sigma))
    assert torch.allclose(gen.weight.grad, (g[:, :, None] * nb.z[:, None, :]).mean(0), atol=1e-12)
    assert torch.allclose(gen.bias.grad, g.mean(0), atol=1e-12)
    assert all(p.grad is None for p in student.parameters())  # the student gets no generator gradient


def test_with_an_exact_student_score_the_gradient_descends_the_diffusive_kl():
    """Generator x0 = a z + b, target N(m, s^2), student = the generator's exact diffused score: a small step
    against Diff-Instruct's gradient lowers the closed-form diffusive KL, and a step along it raises it (so a flipped
    sign of the score difference fails this test)."""
    a, b = torch.tensor([1.5, 0.7], dtype=torch.float64), torch.tensor([0.3, -0.4], dtype=torch.float64)
    m, s = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([1.2, 0.9], dtype=torch.float64)
    torch.manual_seed(0)
    gen = DiagonalLinearGenerator(a, b)
    nb = draw_noise(200_000, 2, 0.1, 5.0, 1.0, antithetic=True, dtype=torch.float64)
    diff_instruct_generator_loss(gen, gaussian_score(b, a), nb, gaussian_score(m, s), make_weight("sigma", 5.0)).backward()

    def kl_after(step: float) -> float:
        return float(diffusive_kl(a - step * gen.a.grad, b - step * gen.b.grad, m, s, 0.1, 5.0, 1.0, "sigma"))

    before = kl_after(0.0)
    assert kl_after(0.05) < before - 1e-4 and kl_after(-0.05) > before + 1e-4


@pytest.mark.parametrize("score_step", ["1", "5"])
def test_diff_instruct_script_writes_every_output(tmp_path, tiny, score_step):
    res = run_script(SCRIPT, "-true_score", *tiny, "--score_step", score_step, "--max_iter", "20", "--show_iter",
                     "10", "--out_dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / f"diff_instruct_ss{score_step}_mog40_true_score_sigma2_seed0"
    assert_complete_run_folder(run_dir, [0, 10, 20], 400, modules=("generator", "student"))
    rows = read_metrics(run_dir)
    assert all(float(r["score_loss"]) > 0 for r in rows[1:])
    assert {float(r["power"]) for r in rows} == {2.0}  # the reference baseline keeps the power fixed
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["score_step"] == int(score_step) and not cfg["anneal_power"]


def test_anneal_power_gives_the_vardiu_schedule(tmp_path, tiny):
    res = run_script(SCRIPT, "-true_score", *tiny, "--anneal_power", "--power_interval", "10", "--max_iter", "20",
                     "--show_iter", "10", "--out_dir", str(tmp_path), "--name", "a")
    assert res.returncode == 0, res.stderr
    assert [float(r["power"]) for r in read_metrics(tmp_path / "a")] == pytest.approx([0.1, 0.1, 0.11])


@pytest.mark.parametrize("sigma_min,noted", [("0.1", True), ("2", False)])
def test_diff_instruct_with_a_teacher_notes_a_sigma_min_below_the_noise_floor(tmp_path, tiny, sigma_min, noted):
    res = run_script(SCRIPT, *tiny, "--sigma_min", sigma_min, "--seeds", "0-1", "--max_iter", "10", "--show_iter",
                     "10", "--out_dir", str(tmp_path), "--name", "a")
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("note: teacher mode with --sigma_min 0.1") == noted, res.stderr  # once, not per seed


@pytest.mark.parametrize("args,message", [
    (["--score_step", "0"], "--score_step must be a positive integer"),
    (["--score_lr", "-1"], "--score_lr must be a positive finite number"),
    (["--teacher_ckpt", "/nonexistent.pt"], "no such file"),
])
def test_diff_instruct_bad_input(tmp_path, args, message):
    res = run_script(SCRIPT, "--true_score", "--out_dir", str(tmp_path / "runs"), *args)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and message in res.stderr, res.stderr


def generator_inputs_at_each_call_site(reference: bool) -> dict[str, torch.Tensor]:
    """What the generator's first layer receives in the student's data draw, the generator update and the
    evaluation sampler of a Diff-Instruct step (built by the script, with or without --reference_generator_input)."""
    argv = ["--true_score", "--device", "cpu", "--batch_size", "16"] + (["--reference_generator_input"] if reference else [])
    flags = train_diff_instruct.build_parser().parse_args(argv)
    torch.manual_seed(0)
    method = train_diff_instruct.build(flags, torch.device("cpu"), make_target("mog40"))
    nets, (student_update, generator_update) = method.networks, method.updates
    seen: list[torch.Tensor] = []
    nets["generator"].net.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone()))
    power = torch.tensor(2.0)
    sites = {"student data": lambda: student_update.loss_fn(nets, power),
             "generator update": lambda: generator_update.loss_fn(nets, power),
             "evaluation": lambda: method.sample(nets["generator"], 16, torch.Generator().manual_seed(0))}
    inputs = {}
    for name, call in sites.items():
        seen.clear()
        call()
        inputs[name], = seen
    return inputs


def test_without_reference_generator_input_the_generator_sees_z_only():
    for name, x in generator_inputs_at_each_call_site(reference=False).items():
        assert x.shape == (16, 2), name


def test_reference_generator_input_appends_zeros_in_the_update_and_ones_when_sampling():
    """train_dikl.py at bf35f42: decoder(z) in the generator update (ScoreNet pads with zeros), but
    decoder(x=z, sigma=ones) for the student's samples and for evaluation."""
    inputs = generator_inputs_at_each_call_site(reference=True)
    assert all(x.shape == (16, 4) for x in inputs.values())
    assert torch.all(inputs["generator update"][:, 2:] == 0)
    assert torch.all(inputs["student data"][:, 2:] == 1)
    assert torch.all(inputs["evaluation"][:, 2:] == 1)


def test_reference_generator_input_run_evaluates_the_sampling_branch(tmp_path, tiny):
    """samples.npy of a --reference_generator_input run comes from the generator with ones appended."""
    res = run_script(SCRIPT, "-true_score", *tiny, "--reference_generator_input", "--max_iter", "10", "--show_iter",
                     "10", "--out_dir", str(tmp_path), "--name", "ref", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    ckpt = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=True)
    gen = ReferenceDiffInstructGenerator(2, 32, 2)
    gen.load_state_dict(ckpt["modules"]["generator"])
    z = torch.randn(400, 2, generator=torch.Generator().manual_seed(0 * 1_000_003 + 10))  # the evaluation stream
    samples = np.load(tmp_path / "ref" / "samples.npy")
    with torch.no_grad():
        np.testing.assert_allclose(samples, gen.draw(z).numpy(), rtol=1e-6, atol=1e-6)
        assert not np.allclose(samples, gen(z).numpy(), atol=1e-3)


def test_vectorised_diff_instruct_run_resumes_exactly(tmp_path, tiny):
    """The authors' baseline (reference generator input, two student updates per generator update): stopped at
    iteration 20 and resumed with --load, each seed's metrics and samples continue exactly as the uninterrupted run's
    (both networks, both Adam states and the noise stream come back)."""
    assert_vectorised_run_resumes_exactly(SCRIPT, ["--true_score", *tiny, "--score_step", "2",
                                                   "--reference_generator_input", "--show_iter", "10", "--device",
                                                   "cpu"], (0, 1), tmp_path)
