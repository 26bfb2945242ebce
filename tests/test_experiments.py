"""experiments/gradient_bias.py runs end to end on the project's real losses and trainer (a few iterations);
experiments/teacher_collapse.py measures what it says on teachers whose errors are known; experiments/posterior_tails.py
reads a posterior whose std is known."""
import argparse
import json
import math

import pytest
import torch

import train_upper_diffusion
from conftest import TINY, run_script
from experiments import adam_bands, gradient_bias, posterior_tails, teacher_collapse
from experiments.linear_gaussian import DiagonalLinearGenerator
from models.networks import GaussianPosterior, Generator
from utils.cli import UsageError
from utils.targets import mog40


def test_gradient_bias_experiment_runs(tmp_path):
    out = tmp_path / "gb.png"
    results = gradient_bias.main(["--dims", "2", "--iters", "4", "--eval_every", "2", "--eval_batches", "3",
                                  "--pretrain", "2", "--batch_size", "32", "--width", "8", "--out", str(out)])
    assert set(results) == {f"2/{m}" for m in gradient_bias.METHODS}
    for curve in results.values():
        assert [it for it, _, _ in curve] == [0, 2, 4]
        assert all(math.isfinite(b) and b >= 0 and math.isfinite(s) and s > 0 for _, b, s in curve)
    assert out.stat().st_size > 1000
    assert json.loads(out.with_suffix(".json").read_text())["results"].keys() == results.keys()


class GeneratorScore(torch.nn.Module):
    """The exact diffused score of the generator x0 = a z + b (z ~ N(0, I)): -(x - b) / (a^2 + sigma^2), shifted
    by ``error``: a Diff-Instruct student with a known error."""

    def __init__(self, gen, error: float):
        super().__init__()
        self.gen, self.error = gen, error

    def score(self, x, sigma):
        a, b = self.gen.a.detach(), self.gen.b.detach()
        return -(x - b) / (a ** 2 + sigma[:, None] ** 2) + self.error


def test_gradient_error_measures_zero_for_an_exact_student_and_the_bias_of_a_wrong_one():
    """gradient_bias.gradient_error against the closed-form gradient of the diffusive KL: near 0 (sampling noise)
    for Diff-Instruct with the generator's exact score, about 1 for a student whose error moves the gradient by as
    much as the gradient itself (a sign error in either gradient fails both)."""
    args = argparse.Namespace(batch_size=1024, sigma_min=0.1, sigma_max=5.0, weight="sigma", eval_batches=32,
                              width=8, depth=1, lr=1e-3, score_lr=1e-3, sigma_data=2.0, pretrain=0, grad_clip=10.0,
                              posterior_lr=1e-3)
    m, s = gradient_bias.problem(2)
    torch.manual_seed(0)
    gen = DiagonalLinearGenerator(torch.ones(2), torch.zeros(2)).float()
    trainer = gradient_bias.build_trainer("Diff-Instruct, score_step 1", gen, m, s, args)
    trainer.nets.modules["student"] = GeneratorScore(gen, 0.0)
    exact_bias, exact_std = gradient_bias.gradient_error(trainer, gen, m, s, args)
    assert exact_bias < 0.05 and exact_std > 0
    # the bias of a constant score error c: E[w(sigma)] c^T dx0/d(a, b), relative to the true gradient
    trainer.nets.modules["student"] = GeneratorScore(gen, 1.0)
    wrong_bias, _ = gradient_bias.gradient_error(trainer, gen, m, s, args)
    assert wrong_bias > 0.3


def test_teacher_error_measures_are_zero_for_the_exact_score_and_see_a_known_error():
    target, g = mog40(), torch.Generator().manual_seed(0)
    x0 = target.sample(2000, generator=g)
    exact = teacher_collapse.error_stats(target.score, target, x0, 0.5)
    assert exact["rel_rms_error"] == 0 and exact["wrong_way"] == 0
    assert teacher_collapse.bias_force(target.score, target, x0, 0.5, 2, g)["rms_bias_force"] == 0
    shift = torch.tensor([0.3, -0.4])  # a constant error of length 0.5
    shifted = lambda x, s: target.score(x, s) + shift  # noqa: E731
    assert math.isclose(teacher_collapse.error_stats(shifted, target, x0, 0.5)["rms_error"], 0.5, rel_tol=1e-4)
    force = teacher_collapse.bias_force(shifted, target, x0, 0.5, 2, g)
    assert math.isclose(force["rms_bias_force"], 0.5, rel_tol=1e-4)
    assert math.isclose(force["rms_bias_force_bridge"], 0.5, rel_tol=1e-4)
    flipped = teacher_collapse.error_stats(lambda x, s: -target.score(x, s), target, x0, 0.5)
    assert flipped["wrong_way"] > 0.99 and math.isclose(flipped["rel_rms_error"], 2.0, rel_tol=1e-5)
    gap = teacher_collapse.gap_points(target, 0.5, 500, g)
    _, dist = target.nearest_mode(gap)
    assert len(gap) > 100 and bool((dist * target.std > 4 * math.sqrt(target.std**2 + 0.25)).all())


def test_lost_mode_signal_and_noise_floor():
    target, g = mog40(), torch.Generator().manual_seed(1)
    # A lost mode leaves a force behind; it is largest on the samples next to the lost mode, so its RMS is > 0.
    assert teacher_collapse.lost_mode_signal(target, 1.0, 2000, 2, 2, g) > 0.01
    rows = [{"sigma": s, "rms_bias_force": b} for s, b in [(0.1, 0.01), (0.5, 0.3), (1.0, 0.05), (2.0, 0.01)]]
    signal = {0.1: 0.05, 0.5: 0.05, 1.0: 0.04, 2.0: 0.04}
    # Below the signal at 0.1 does not count: from 0.5 up the bias is not below it everywhere.
    assert teacher_collapse.safe_noise_floor(rows, signal) == 2.0
    assert teacher_collapse.safe_noise_floor(rows, {s: 1.0 for s in signal}) == 0.1
    assert teacher_collapse.safe_noise_floor(rows, {s: 0.0 for s in signal}) is None


def test_training_set_share_is_the_part_of_the_error_along_the_training_sets_own_error():
    target, g = mog40(), torch.Generator().manual_seed(2)
    training_set = teacher_collapse.kde_teacher(target, 500, 0)  # a small training set: a large sampling error
    x = target.sample(1500, generator=g) + 0.5 * torch.randn(1500, 2, generator=g)
    share = lambda score_fn: teacher_collapse.training_set_share(score_fn, target, training_set.score, x, 0.5)  # noqa: E731
    assert math.isclose(share(training_set.score), 1.0, rel_tol=1e-5)  # a perfect fit of the training set
    assert share(target.score) == 0  # no error at all
    halfway = lambda x, s: 0.5 * (target.score(x, s) + training_set.score(x, s))  # noqa: E731
    assert math.isclose(share(halfway), 0.5, rel_tol=1e-4)
    shifted = lambda x, s: target.score(x, s) + torch.tensor([0.3, -0.4])  # an error unrelated to the set  # noqa: E731
    assert abs(share(shifted)) < 0.1
    # the shipped teacher's file records its training set: 20,480 points drawn with seed 0
    assert len(teacher_collapse.teacher_training_set(None, target).means) == 20_480


def test_training_set_is_none_for_a_teacher_file_that_does_not_record_it(tmp_path):
    shipped = torch.load(teacher_collapse.teacher_path(None, mog40()), weights_only=True)
    shipped["info"] = {}
    path = tmp_path / "teacher.pt"
    torch.save(shipped, path)
    assert teacher_collapse.teacher_training_set(str(path), mog40()) is None


def test_adam_bands_parts_add_up_to_the_whole_gradient():
    flags = train_upper_diffusion.build_parser().parse_args(["--width", "16", "--depth", "2", "--batch_size", "64"])
    method = train_upper_diffusion.build(flags, torch.device("cpu"), mog40())
    bands = [(0.1, 1.0), (1.0, 2.0), (2.0, math.inf)]
    parts = adam_bands.generator_gradients(method, 3.0, 2, bands, seed=0)  # [2 batches, 3 bands, params]
    whole = adam_bands.generator_gradients(method, 3.0, 2, None, seed=0)[:, 0]
    assert torch.allclose(parts.sum(1), whole, atol=1e-6 * whole.abs().max().item())
    assert (parts.abs().sum(2) > 0).all()  # at power 3 every band has samples in a batch of 64


def test_adam_bands_experiment_runs(tmp_path):
    res = run_script("train_upper_diffusion.py", "-true_score", *TINY, "--max_iter", "10", "--show_iter", "10",
                     "--out_dir", str(tmp_path), "--name", "run")
    assert res.returncode == 0, res.stderr
    out = adam_bands.main(["--load", str(tmp_path / "run"), "--batches", "3", "--powers", "0.1", "3",
                           "--out", str(tmp_path / "a.json")])
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads(json.dumps(out))
    first, later = out["rows"]
    assert first["normaliser_median_ratio"] == 1.0 and first["band_share_of_samples"][-1] == 1.0
    for row in out["rows"]:
        assert math.isclose(sum(row["band_share_of_v"]), 1.0, rel_tol=1e-5)
        assert math.isclose(sum(row["band_share_of_samples"]), 1.0, rel_tol=1e-5)
    assert later["band_share_of_samples"][0] > 0.2 and later["normaliser_rms_ratio"] > 1.0
    assert 0 < out["check"]["sum_ratio_estimated_to_stored"] < math.inf


def test_adam_bands_bad_bands_are_a_usage_error():
    with pytest.raises(UsageError, match="increasing positive edges"):
        adam_bands.main(["--load", "unused", "--bands", "2", "1"])


def test_posterior_tails_reads_a_known_std():
    """A posterior whose rho is a constant c gives std / sigma = softplus(c) at every latent; -log q is the
    diagonal normal's, computed here from its formula."""
    torch.manual_seed(0)
    generator, posterior = Generator(2, 16, 2), GaussianPosterior(2, 16, 2)
    last = list(posterior.net)[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 0.0, -20.0, 3.0]))  # mean 0; rho -20 (first coordinate), 3 (second)
    rows = posterior_tails.tail_probe(generator, posterior, [2.0, 6.0], directions=8, sigma=0.5)
    assert [r["radius"] for r in rows] == [2.0, 6.0]
    std = torch.nn.functional.softplus(torch.tensor([-20.0, 3.0])) * 0.5
    for r in rows:
        assert r["min_std_ratio"] == pytest.approx(float(std[0] / 0.5), rel=1e-5)
        assert r["tail_probability"] == pytest.approx(math.exp(-r["radius"] ** 2 / 2))
        # the largest -log q over latents of norm r with mean 0: all of r on the narrow coordinate
        worst = r["radius"] ** 2 / (2 * std[0] ** 2) + std.log().sum() + math.log(2 * math.pi)
        assert r["max_neg_log_q"] == pytest.approx(float(worst), rel=1e-4)
        assert r["max_x0_norm"] > 0


def test_posterior_tails_runs_on_a_run_folder_and_refuses_other_runs(tmp_path):
    for script, name in [("train_upper_diffusion.py", "gauss"), ("train_diff_instruct.py", "di")]:
        res = run_script(script, "-true_score", *TINY, "--max_iter", "2", "--show_iter", "2",
                         "--out_dir", str(tmp_path), "--name", name)
        assert res.returncode == 0, res.stderr
    out = posterior_tails.main(["--load", str(tmp_path / "gauss"), "--radii", "1", "5", "--directions", "4",
                                "--out", str(tmp_path / "t.json")])
    assert json.loads((tmp_path / "t.json").read_text()) == json.loads(json.dumps(out))
    assert out["iteration"] == 2 and [r["radius"] for r in out["rows"]] == [1.0, 5.0]
    assert all(0 < r["min_std_ratio"] < math.inf and math.isfinite(r["max_neg_log_q"]) for r in out["rows"])
    with pytest.raises(UsageError, match="Gaussian posterior"):
        posterior_tails.main(["--load", str(tmp_path / "di"), "--out", str(tmp_path / "x.json")])
