"""Flow posteriors: the sync-free spline equals nflows', log q is a normalised density, sampling agrees with the
change-of-variables formula, and train_upper_flow.py runs end to end."""
import math

import pytest
import torch
from nflows.transforms.autoregressive import MaskedPiecewiseRationalQuadraticAutoregressiveTransform
from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

from conftest import assert_complete_run_folder, run_script
from models import FlowPosterior
from models.flows import ConditionalPlanarTransform, SplineAutoregressiveTransform, rq_spline_linear_tails

SCRIPT = "train_upper_flow.py"
PUBLISHED = ["-true_score", "--sigma_min", "0.1", "--sigma_max", "20", "--power", "2.0", "--device", "cuda:0",
             "--weight", "sigma2", "--seed", "0", "--flow_type", "NSF", "--flow_length", "4"]


def spline_params(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 2, m, generator=g, dtype=torch.float64) * 1.5 for m in (k, k, k - 1)]


@pytest.mark.parametrize("inverse", [False, True])
def test_spline_equals_nflows_inside_and_outside_the_interval(inverse):
    x = torch.linspace(-8, 8, 2000, dtype=torch.float64).reshape(1000, 2)  # covers both tails
    w, h, d = spline_params(1000, 8)
    expected = unconstrained_rational_quadratic_spline(x, w, h, d.clone(), inverse=inverse, tails="linear",
                                                       tail_bound=5.0)
    got = rq_spline_linear_tails(x, w, h, d, inverse=inverse, tail_bound=5.0)
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-10)


def test_spline_inverse_and_log_derivative():
    x = (torch.rand(500, 2, dtype=torch.float64) - 0.5) * 14
    w, h, d = spline_params(500, 6, seed=1)
    y, logdet = rq_spline_linear_tails(x.requires_grad_(True), w, h, d, tail_bound=5.0)
    (dydx,) = torch.autograd.grad(y.sum(), x)  # elementwise map: the derivative of each output
    assert torch.allclose(logdet, dydx.log(), atol=1e-8)
    x_back, inv_logdet = rq_spline_linear_tails(y.detach(), w, h, d, inverse=True, tail_bound=5.0)
    assert torch.allclose(x_back, x.detach(), atol=1e-8)
    assert torch.allclose(inv_logdet, -logdet.detach(), atol=1e-8)


def test_spline_layer_equals_nflows_layer_with_the_same_weights():
    torch.manual_seed(0)
    ours = SplineAutoregressiveTransform(2, 16, 5, num_bins=6, tail_bound=3.0).double()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    ref = MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
        features=2, hidden_features=16, context_features=5, num_bins=6, tails="linear", tail_bound=3.0).double()
    ref.load_state_dict(ours.state_dict())
    x, ctx = torch.randn(300, 2, dtype=torch.float64) * 2, torch.randn(300, 5, dtype=torch.float64)
    for a, b in zip(ours(x, context=ctx), ref(x, context=ctx)):
        assert torch.allclose(a, b, atol=1e-10)


def test_planar_layer_is_invertible_with_exact_log_determinant():
    torch.manual_seed(0)
    layer = ConditionalPlanarTransform(2, 4).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 2)
    ctx = torch.randn(200, 4, dtype=torch.float64)
    u_hat, w, _ = layer._uwb(ctx)
    assert bool(((w * u_hat).sum(-1) >= -1 + 0.999e-3).all())
    x = torch.randn(200, 2, dtype=torch.float64) * 3
    y, logdet = layer(x, context=ctx)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: layer(v[None], context=ctx[i:i + 1])[0][0],
                                                          x[i]) for i in range(200)])
    assert torch.allclose(logdet, torch.linalg.det(jac).abs().log(), atol=1e-9)
    x_back, inv_logdet = layer.inverse(y, context=ctx)
    assert torch.allclose(x_back, x, atol=1e-9)
    assert torch.allclose(inv_logdet, -logdet, atol=1e-9)


def perturbed_flow(flow_type: str, seed: int = 0) -> FlowPosterior:
    """A small flow posterior whose layers are pushed far from their identity initialisation."""
    torch.manual_seed(seed)
    q = FlowPosterior(2, flow_type, flow_length=3, width=32, depth=2, context_features=8, flow_hidden=16,
                      num_bins=6, tail_bound=4.0).double()
    scale = {"NSF": 0.1, "PLF": 0.7}[flow_type]  # far from Gaussian, yet smooth enough for a grid integral
    with torch.no_grad():
        for p in q.transform.parameters():
            p.add_(torch.randn_like(p) * scale)
    return q.requires_grad_(False)


@pytest.mark.parametrize("flow_type", ["NSF", "PLF"])
def test_flow_starts_as_the_gaussian_posterior(flow_type):
    torch.manual_seed(0)
    q = FlowPosterior(2, flow_type, 4, width=32, depth=2).double()
    z, x_t = torch.randn(50, 2, dtype=torch.float64), torch.randn(50, 2, dtype=torch.float64) * 5
    sigma = torch.rand(50, dtype=torch.float64) * 3 + 0.1
    mean, std, _ = q._condition(x_t, sigma)
    gauss = (-0.5 * ((z - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert torch.allclose(q.log_prob(z, x_t, sigma), gauss, atol=1e-6)


@pytest.mark.parametrize("flow_type", ["NSF", "PLF"])
@pytest.mark.parametrize("sigma", [0.5, 4.0])
def test_flow_density_integrates_to_one_over_a_grid(flow_type, sigma):
    q = perturbed_flow(flow_type)
    x_t = torch.tensor([[2.0, -1.0]], dtype=torch.float64)
    s = torch.tensor([sigma], dtype=torch.float64)
    mean, std, _ = q._condition(x_t, s)
    # 12 std of the base either side: the flow moves mass by at most a few std (tails are the identity).
    n = 601
    axes = [torch.linspace(float(mean[0, i] - 12 * std[0, i]), float(mean[0, i] + 12 * std[0, i]), n,
                           dtype=torch.float64) for i in range(2)]
    zz = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
    log_q = q.log_prob(zz, x_t.expand(len(zz), 2), s.expand(len(zz)))
    assert float(log_q.exp().sum() * cell) == pytest.approx(1.0, abs=0.01)
    # ... and the perturbed flow is genuinely not the Gaussian it started from.
    gauss = (-0.5 * ((zz - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert float((log_q.exp() - gauss.exp()).abs().sum() * cell) > 0.05


@pytest.mark.parametrize("flow_type", ["NSF", "PLF"])
def test_log_prob_of_samples_agrees_with_change_of_variables(flow_type):
    """log q(z) = log N(u; 0, I) - log|det dz/du| with dz/du by autograd through the sampling map."""
    q = perturbed_flow(flow_type, seed=1)
    n = 40
    x_t = torch.randn(n, 2, dtype=torch.float64) * 10
    sigma = torch.rand(n, dtype=torch.float64) * 5 + 0.1
    z, log_q_sampled = q.sample_with_log_prob(x_t, sigma, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(q.log_prob(z, x_t, sigma), log_q_sampled, atol=1e-6)
    mean, std, feats = q._condition(x_t, sigma)
    u = torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for i in range(n):
        def sample_map(v, i=i):
            e, _ = q.transform.inverse(v[None], context=feats[i:i + 1])
            return (mean[i] + std[i] * e)[0]
        jac = torch.autograd.functional.jacobian(sample_map, u[i])
        expected = -0.5 * float(u[i].pow(2).sum()) - math.log(2 * math.pi) - float(torch.linalg.det(jac).abs().log())
        assert float(log_q_sampled[i]) == pytest.approx(expected, abs=1e-6)
        assert torch.allclose(sample_map(u[i]), z[i], atol=1e-9)


@pytest.mark.parametrize("flow_type", ["NSF", "PLF"])
def test_flow_script_writes_every_output(tmp_path, tiny, flow_type):
    extra = ["--flow_type", flow_type, "--flow_length", "2"] if flow_type == "PLF" else []
    res = run_script(SCRIPT, *(PUBLISHED + extra), *tiny, "--max_iter", "20", "--show_iter", "10",
                     "--out_dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / f"vardiu_{flow_type.lower()}_mog40_true_score_sigma2_seed0"
    assert_complete_run_folder(run_dir, [0, 10, 20], 400)
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert any(k.startswith("transform.") for k in ckpt["modules"]["posterior"])


@pytest.mark.parametrize("args,message", [
    (["--flow_type", "MAF"], "invalid choice: 'MAF'"),
    (["--flow_length", "0"], "--flow_length must be a positive integer"),
    (["--flow_length", "-2"], "--flow_length must be a positive integer"),
    (["--flow_bins", "0"], "--flow_bins must be a positive integer"),
    (["--flow_tail_bound", "0"], "--flow_tail_bound must be a positive finite number"),
    (["--flow_type", "PLF", "--iw_samples", "2", "--max_iter", "2"], "inverts by bisection"),
])
def test_flow_bad_input_gives_one_line_and_exit_code_2(tmp_path, args, message):
    res = run_script(SCRIPT, "--true_score", "--out_dir", str(tmp_path / "runs"), *args)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and message in res.stderr, res.stderr
    assert not (tmp_path / "runs").exists()


def test_lowercase_flow_type_is_accepted():
    from train_upper_flow import build_parser
    assert build_parser().parse_args(["--flow_type", "plf"]).flow_type == "PLF"
