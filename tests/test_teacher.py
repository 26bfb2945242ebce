"""Teacher mode: EDM denoiser and Heun sampler, teacher and KDE scores, the control variate, train_teacher.py,
and VarDiU runs that follow a teacher."""
import math

import pytest
import torch

from conftest import TINY, assert_complete_run_folder, run_script
from experiments.linear_gaussian import DiagonalLinearGenerator, LinearGaussianPosterior
from losses.noise import draw_noise, make_weight
from losses.vardiu import vardiu_loss
from models.denoiser import EDMDenoiser, heun_sample, karras_sigmas
from utils.errors import UsageError
from utils.registry import make_target
from utils.targets import GaussianMixture, mog9, mog40
from utils.teachers import (SHIPPED_TEACHERS, TEACHER_NOISE_FLOOR, kde_teacher, load_reference_teacher, load_teacher,
                            save_teacher, target_score, teacher_notes, teacher_training_range)


def test_kde_score_equals_autograd_of_its_diffused_log_density():
    kde = kde_teacher(mog9(), 300, seed=0)
    kde.means = kde.means.double()
    x = (torch.rand(80, 2, dtype=torch.float64) - 0.5) * 16
    sigma = torch.rand(80, dtype=torch.float64) * 3 + 0.2
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(kde.log_prob(x, sigma).sum(), x)
    assert torch.allclose(kde.score(x.detach(), sigma), grad, atol=1e-10)
    # It is the empirical mixture: at noise sigma, (1/N) sum_i N(x; x_i, sigma^2 I).
    direct = torch.logsumexp(torch.stack([torch.distributions.MultivariateNormal(
        m, (sigma[0] ** 2) * torch.eye(2, dtype=torch.float64)).log_prob(x[0].detach()) for m in kde.means]), 0)
    assert float(kde.log_prob(x[:1].detach(), sigma[:1])) == pytest.approx(float(direct - math.log(300)), abs=1e-9)


def test_denoiser_preconditioning_and_score_form():
    torch.manual_seed(0)
    den = EDMDenoiser(2, width=16, depth=2, sigma_data=10.0).double()
    x, sigma = torch.randn(20, 2, dtype=torch.float64) * 5, torch.rand(20, dtype=torch.float64) * 10 + 0.1
    assert torch.allclose(den.score(x, sigma), (den(x, sigma) - x) / sigma[:, None] ** 2)
    with torch.no_grad():
        den.net[-1].weight.zero_()
        den.net[-1].bias.zero_()
    assert torch.allclose(den(x, sigma), 100 / (sigma[:, None] ** 2 + 100) * x)  # F = 0 leaves c_skip x


class AnalyticDenoiser(torch.nn.Module):
    """Tweedie's denoiser of a mixture, D(x, sigma) = x + sigma^2 grad log p(x | sigma): the ideal teacher."""

    def __init__(self, target):
        super().__init__()
        self.target, self.dim = target, target.dim
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, sigma):
        return x + sigma.reshape(-1, 1) ** 2 * self.target.score(x, sigma)


def test_a_denoisers_score_is_tweedies_formula():
    """EDMDenoiser.score turns a denoiser into a score by Tweedie: given the ideal denoiser of a mixture
    (x + sigma^2 times its analytic score), it returns the analytic score; a wrong power of sigma would not."""
    target = mog9()
    target.means = target.means.double()
    x, sigma = torch.randn(30, 2, dtype=torch.float64) * 4, torch.rand(30, dtype=torch.float64) * 5 + 0.1
    assert torch.allclose(EDMDenoiser.score(AnalyticDenoiser(target), x, sigma), target.score(x, sigma), atol=1e-12)


def test_the_score_a_teacher_run_follows_is_the_shipped_networks_tweedie_score():
    """What teacher-mode training follows (utils.teachers.target_score with --teacher edm) is (D(x, sigma) - x) /
    sigma^2 of the shipped network, computed here from the network's raw output."""
    target = make_target("mog40")
    score = target_score(target, torch.device("cpu"), true_score=False, teacher="edm", teacher_ckpt=None,
                         kde_samples=0, seed=0)
    denoiser = load_teacher(None, target, torch.device("cpu"))
    x, sigma = torch.randn(64, 2) * 20, torch.rand(64) * 10 + 0.5
    with torch.no_grad():
        expected = (denoiser(x, sigma) - x) / sigma[:, None] ** 2
        assert torch.allclose(score(x, sigma), expected, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(score(x, sigma), target.score(x, sigma), rtol=1e-2, atol=1e-4)  # a network


def test_heun_sampler_reproduces_a_gaussian_with_its_exact_denoiser():
    single = GaussianMixture(torch.tensor([[3.0, -2.0]]), std=1.5)
    single.means = single.means.double()
    # The ODE starts from N(0, s_max^2 I), not the true N(m, s_max^2 + 1.5^2): the start's offset m shrinks by
    # about 1.5 / s_max on the way down, so s_max must be large for an exact mean (3 * 1.5 / 2000 ~ 0.002).
    samples = heun_sample(AnalyticDenoiser(single), 20_000, num_steps=100, sigma_min=0.01, sigma_max=2000.0,
                          generator=torch.Generator().manual_seed(0))
    assert torch.allclose(samples.mean(0), single.means[0], atol=0.05)
    assert torch.allclose(samples.std(0), torch.full((2,), 1.5, dtype=torch.float64), rtol=0.03)
    sig = karras_sigmas(5, 0.1, 40.0)
    assert sig[0] == pytest.approx(40.0) and sig[-2] == pytest.approx(0.1) and sig[-1] == 0


def test_shipped_teacher_score_is_close_to_the_true_score():
    target = mog40()
    teacher = load_teacher(None, target, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    for sigma in [1.0, 5.0, 20.0]:
        x = target.sample(4000, generator=g) + sigma * torch.randn(4000, 2, generator=g)
        s = torch.full((4000,), sigma)
        true, learned = target.score(x, s), teacher.score(x, s)
        # Denoiser error |D - D*| = sigma^2 |s - s*|, relative to the data scale (component std 1.31).
        err = (sigma**2 * (learned - true)).norm(dim=-1).median()
        assert float(err) < 0.5, (sigma, float(err))


@pytest.mark.parametrize("antithetic", [False, True])
def test_control_variate_keeps_the_expected_gradient_and_lowers_variance(antithetic):
    """With a tight posterior, grad_{x_t} log q carries -eps / sigma; the control variate's +eps / sigma cancels it,
    leaving s_d - s_theta. Its added term has zero mean, so the expected gradient is unchanged."""
    a, b = torch.tensor([1.5, 0.7], dtype=torch.float64), torch.tensor([0.3, -0.4], dtype=torch.float64)
    gen = DiagonalLinearGenerator(a, b)
    post = LinearGaussianPosterior(a, b)  # fixed copies: no gradient reaches the generator through the posterior
    target = GaussianMixture(torch.tensor([[1.0, 0.0]]), std=1.2)
    target.means = target.means.double()

    def grads(cv):
        torch.manual_seed(1)  # the same batches with and without the control variate
        out = []
        for _ in range(400):
            nb = draw_noise(64, 2, 0.2, 5.0, 1.0, antithetic=antithetic, dtype=torch.float64)
            gen.zero_grad()
            vardiu_loss(gen, post, nb, target.score, make_weight("uniform", 5.0), control_variate=cv).loss.backward()
            out.append(torch.cat([gen.a.grad, gen.b.grad]).clone())
        return torch.stack(out)

    plain, cv = grads(False), grads(True)
    if antithetic:  # eps and -eps cancel the added term exactly within each pair
        assert torch.allclose(plain, cv, atol=1e-10)
        return
    diff = cv - plain  # the added term alone: zero mean
    se = diff.std(0) / math.sqrt(len(diff))
    assert torch.all(diff.mean(0).abs() < 5 * se)
    assert float(cv.var(0).sum()) < 0.2 * float(plain.var(0).sum())


def test_tiny_teacher_training_writes_a_loadable_teacher(tmp_path, tiny):
    res = run_script("train_teacher.py", *tiny, "--max_iter", "20", "--show_iter", "10", "--heun_steps", "5",
                     "--out_dir", str(tmp_path), "--name", "t")
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / "t"
    assert_complete_run_folder(run_dir, [0, 10, 20], 400, modules=("denoiser",))
    teacher = load_teacher(run_dir / "teacher.pt", mog40(), torch.device("cpu"))
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    ema = {k.removeprefix("denoiser."): v for k, v in ckpt["ema"].items()}  # the exported weights are the EMA's
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in ema.items())
    # Resuming keeps the script's own defaults (set_defaults) without calling them changed flags.
    res = run_script("train_teacher.py", "--load", str(run_dir), "--max_iter", "30", "--no_progress")
    assert res.returncode == 0, res.stderr
    assert torch.load(run_dir / "teacher.pt", weights_only=True)["info"]["iteration"] == 30


@pytest.mark.parametrize("sampling,spacing", [(None, "power"), ("uniform", "power"), ("log_uniform", "log")])
def test_teacher_sigma_sampling_flag_reaches_the_denoising_loss(tiny, sampling, spacing):
    import train_teacher
    from utils.cli import parse_flags

    argv = [*tiny, "--max_iter", "10"] + ([] if sampling is None else ["--sigma_sampling", sampling])
    flags = parse_flags(train_teacher.build_parser(), argv, train_teacher.SCRIPT).values
    method = train_teacher.build(flags, torch.device("cpu"), mog40())
    noise = method.updates[0].loss_fn.noise
    assert noise.spacing == spacing and (noise.sigma_min, noise.sigma_max) == (flags.sigma_min, flags.sigma_max)
    sigmas = noise.sigmas(torch.tensor(1.0))
    below_one = float((sigmas < 1.0).float().mean())  # log-uniform on [0.1, 40]: 38%; uniform: 2%
    assert (below_one > 0.25) == (spacing == "log")


@pytest.mark.parametrize("script,extra", [("train_upper_diffusion.py", []),
                                          ("train_upper_flow.py", ["--flow_type", "NSF"]),
                                          ("train_upper_flow.py", ["--flow_type", "PLF", "--teacher", "kde",
                                                                   "--kde_samples", "500"])])
def test_vardiu_follows_a_teacher(tmp_path, tiny, script, extra):
    res = run_script(script, *tiny, *extra, "--max_iter", "20", "--show_iter", "10", "--out_dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    (run_dir,) = tmp_path.iterdir()
    assert ("kde_teacher" if "kde" in extra else "edm_teacher") in run_dir.name
    assert_complete_run_folder(run_dir, [0, 10, 20], 400)
    assert "note: teacher mode with --sigma_min 0.1" in res.stderr  # the default floor is below the safe one


def authors_teacher_file(path, width=8, seed=3):
    """A file laid out as the authors' edm_network.pth: a bare state dict net.{0,2,4,6,8}.{weight,bias} of Linear
    layers (4 -> width x 3 -> 2) that sit between SiLUs, written by hand here. Returns the state dict."""
    g = torch.Generator().manual_seed(seed)
    sizes = [(4, width), (width, width), (width, width), (width, width), (width, 2)]
    state = {}
    for i, (n_in, n_out) in enumerate(sizes):
        state[f"net.{2 * i}.weight"] = torch.randn(n_out, n_in, generator=g) / n_in**0.5
        state[f"net.{2 * i}.bias"] = torch.randn(n_out, generator=g) * 0.1
    torch.save(state, path)
    return state


def test_authors_teacher_file_reads_as_its_denoiser_and_score(tmp_path):
    """D(x, sigma) = F([x, sigma, sigma]) with no preconditioning, and the score (D - x) / sigma^2: checked against
    the forward pass written out here, and on a network whose last layer is zero (D = 0, score -x / sigma^2)."""
    path = tmp_path / "edm_network.pth"
    state = authors_teacher_file(path)
    teacher = load_reference_teacher(path, mog40(), torch.device("cpu"))
    g = torch.Generator().manual_seed(4)
    x, sigma = torch.randn(16, 2, generator=g) * 5, torch.rand(16, generator=g) * 3 + 0.1
    h = torch.cat([x, sigma[:, None], sigma[:, None]], dim=-1)
    for i in range(4):
        h = torch.nn.functional.silu(h @ state[f"net.{2 * i}.weight"].T + state[f"net.{2 * i}.bias"])
    denoised = h @ state["net.8.weight"].T + state["net.8.bias"]
    assert torch.allclose(teacher(x, sigma), denoised, atol=1e-5)
    assert torch.allclose(teacher.score(x, sigma), (denoised - x) / sigma[:, None] ** 2, atol=1e-5)
    state["net.8.weight"].zero_(), state["net.8.bias"].zero_()
    torch.save(state, path)
    zero = load_reference_teacher(path, mog40(), torch.device("cpu"))
    assert torch.allclose(zero.score(x, sigma), -x / sigma[:, None] ** 2)
    with pytest.raises(UsageError, match="needs --teacher_ckpt"):
        load_reference_teacher(None, mog40(), torch.device("cpu"))
    with pytest.raises(UsageError, match="not the authors' edm_network.pth"):
        load_reference_teacher(SHIPPED_TEACHERS["mog40"], mog40(), torch.device("cpu"))


def test_vardiu_and_diff_instruct_follow_the_authors_teacher(tmp_path, tiny):
    path = tmp_path / "edm_network.pth"
    authors_teacher_file(path)
    common = [*tiny, "--teacher", "authors", "--teacher_ckpt", str(path), "--max_iter", "20", "--show_iter", "10",
              "--out_dir", str(tmp_path / "runs")]
    res = run_script("train_upper_diffusion.py", *common)
    assert res.returncode == 0, res.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "authors_teacher" in run_dir.name
    assert_complete_run_folder(run_dir, [0, 10, 20], 400)
    res = run_script("train_diff_instruct.py", *common, "--name", "di")
    assert res.returncode == 0, res.stderr
    ckpt = torch.load(tmp_path / "runs" / "di" / "checkpoints" / "last.pt", weights_only=False)
    student = ckpt["modules"]["student"]
    assert student["net.0.weight"].shape == (8, 4)  # the authors' network on [x, sigma, sigma], as their baseline


def bad_teacher_files(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    wrong_shape = tmp_path / "wrong_shape.pt"
    den = EDMDenoiser(2, 8, 1)
    save_teacher(wrong_shape, den, "mog40", {})
    ckpt = torch.load(wrong_shape, weights_only=True)
    ckpt["width"] = 16  # stated sizes no longer fit the weights
    torch.save(ckpt, wrong_shape)
    return {"MISSING": str(tmp_path / "nope.pt"), "CORRUPT": str(corrupt), "WRONG_SHAPE": str(wrong_shape),
            "SHIPPED": str(SHIPPED_TEACHERS["mog40"])}


@pytest.mark.parametrize("args,message", [
    (["--teacher_ckpt", "MISSING"], "no such file"),
    (["--teacher_ckpt", "CORRUPT"], "not a readable checkpoint"),
    (["--teacher_ckpt", "WRONG_SHAPE"], "weights do not fit"),
    (["--teacher_ckpt", "SHIPPED", "--target", "mog9"], "trained for mog40"),
    (["--target", "mog9"], "no teacher ships for --target mog9"),
    (["--teacher", "kde", "--kde_samples", "0"], "--kde_samples must be a positive integer"),
    (["--teacher", "gan"], "invalid choice: 'gan'"),
    (["--teacher", "authors"], "--teacher authors needs --teacher_ckpt PATH"),
    (["--teacher", "authors", "--teacher_ckpt", "SHIPPED"], "not the authors' edm_network.pth"),
    (["--teacher", "authors", "--teacher_ckpt", "MISSING"], "no such file"),
])
def test_bad_teacher_input_gives_one_line_and_exit_code_2(tmp_path, args, message):
    files = bad_teacher_files(tmp_path)
    args = [files.get(a, a) for a in args]
    res = run_script("train_upper_diffusion.py", "--out_dir", str(tmp_path / "runs"), *args)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and message in res.stderr, res.stderr
    assert not (tmp_path / "runs").exists()


def test_diff_instruct_beyond_2d_without_a_teacher_names_the_command_that_makes_one(tmp_path):
    # its student starts from a teacher even with --true_score, and none ships for d = 8
    res = run_script("train_diff_instruct.py", "--true_score", "--dim", "8", "--out_dir", str(tmp_path / "runs"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "train_teacher.py --dim 8 " in res.stderr and "--teacher_ckpt" in res.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv,message", [(["--out_dir", "AFILE"], "is a file, not a folder"),
                                          (["--name", "a/b"], "must be a single folder name"),
                                          (["--sigma_data", "nan"], "--sigma_data must be a finite number")])
def test_teacher_script_bad_paths_and_values_are_one_line(tmp_path, argv, message):
    (tmp_path / "afile").write_text("x")
    res = run_script("train_teacher.py", "--out_dir", str(tmp_path / "runs"),
                     *[a.replace("AFILE", str(tmp_path / "afile")) for a in argv])
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_teacher_mode_below_the_noise_floor_gets_a_one_line_note():
    (note,) = teacher_notes(true_score=False, sigma_min=0.1, sigma_max=20)
    assert note.startswith("note: teacher mode with --sigma_min 0.1") and "\n" not in note
    assert f"--sigma_min {TEACHER_NOISE_FLOOR:g}" in note
    assert teacher_notes(true_score=False, sigma_min=TEACHER_NOISE_FLOOR, sigma_max=20) == ()
    assert teacher_notes(true_score=True, sigma_min=0.1, sigma_max=20) == ()


def test_teacher_mode_beyond_the_teachers_noise_range_says_so_once(tmp_path):
    """The shipped teacher was trained on sigma 0.1 to 40 (its file says so): --sigma_max 150 gets one note at
    the start of the run, --sigma_max 20 none."""
    assert teacher_training_range("edm", None, make_target("mog40")) == (0.1, 40.0)
    flags = ["--sigma_min", str(TEACHER_NOISE_FLOOR), *TINY, "--max_iter", "10", "--show_iter", "10",
             "--out_dir", str(tmp_path), "--device", "cpu", "--plot_every", "0"]
    wide = run_script("train_upper_diffusion.py", *flags, "--sigma_max", "150")
    assert wide.returncode == 0, wide.stderr
    notes = [line for line in wide.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "trained on (sigma 0.1 to 40)" in notes[0], wide.stderr
    inside = run_script("train_upper_diffusion.py", *flags, "--sigma_max", "20")
    assert inside.returncode == 0 and "note:" not in inside.stderr, inside.stderr
