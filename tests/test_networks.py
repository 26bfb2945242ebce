"""How the MLPs compute (models.networks.set_network_precision). The coordinate layers (exact_linear): the value is
float32-exact whatever --thin_layer_grad says; under ``matmul`` the gradient is the matrix product's. TF32 is
emulated on the CPU by truncating the inputs of F.linear to a 10-bit mantissa, as the tensor cores do. Under
--hidden_dtype bfloat16 the hidden layers run in bfloat16 and the first and last stay float32."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import models.networks as networks
from benchmarks import bench_step
from utils.step import prepare

LINEAR = F.linear


def tf32(t: torch.Tensor) -> torch.Tensor:
    """t with its mantissa cut to TF32's 10 bits, passing gradients straight through."""
    cut = (t.detach().view(torch.int32) & ~0x1FFF).view(torch.float32)
    return t + (cut - t).detach()


def tf32_linear(x, weight, bias=None):
    return LINEAR(tf32(x), tf32(weight), bias)


@pytest.fixture
def policy():
    yield networks.set_network_precision
    networks.set_network_precision()


def grads(layer: nn.Linear, x: torch.Tensor, out_grad: torch.Tensor):
    layer.zero_grad()
    x = x.clone().requires_grad_(True)
    y = networks.exact_linear(x, layer)
    y.backward(out_grad)
    return y.detach(), x.grad, layer.weight.grad.clone()


@pytest.mark.parametrize("shape", [(3, 400), (400, 8)])  # a first and a last layer
def test_matmul_gradient_keeps_the_exact_value_and_differentiates_the_product(monkeypatch, policy, shape):
    torch.manual_seed(0)
    layer = nn.Linear(*shape)
    x = torch.randn(512, shape[0]) * 40  # coordinates of size 40 (first layer) or wide activations (last)
    g = torch.randn(512, shape[1])
    monkeypatch.setattr(networks.F, "linear", tf32_linear)
    value, gx_exact, gw_exact = grads(layer, x, g)
    expected = (x.double() @ layer.weight.double().T + layer.bias.double()).float()
    scale = expected.abs().max()
    assert (value - expected).abs().max() <= 1e-5 * scale
    policy("matmul")
    value_m, gx_m, gw_m = grads(layer, x, g)
    # the value stays exact although the product it is differentiated through is not
    assert (value_m - value).abs().max() <= 2e-6 * scale
    assert (tf32_linear(x, layer.weight, layer.bias) - value).abs().max() > 1e-4 * scale
    # the gradients are the emulated product's: g^T tf32(x) and g tf32(W), not the exact g^T x and g W
    assert torch.allclose(gw_m, g.T @ tf32(x), rtol=1e-4, atol=1e-3)
    assert torch.allclose(gx_m, g @ tf32(layer.weight), rtol=1e-4, atol=1e-4)
    assert torch.allclose(gw_exact, g.T @ x, rtol=1e-4, atol=1e-3)
    assert (gw_m - gw_exact).abs().max() > 1e-4 * gw_exact.abs().max()


def test_bfloat16_hidden_layers_between_float32_coordinate_layers(policy):
    torch.manual_seed(0)
    mlp = networks.MLP(3, 2, width=64, depth=3)
    x = torch.randn(256, 3) * 40
    full = mlp(x)
    policy(hidden_dtype="bfloat16")
    half = mlp(x)
    # the same network by hand: float32 first layer and SiLU, bfloat16 hidden products and SiLUs, float32 last layer
    h = F.silu((x.unsqueeze(-2) * mlp[0].weight).sum(-1) + mlp[0].bias)
    for linear in (mlp[2], mlp[4]):
        h = F.silu(F.linear(h.bfloat16(), linear.weight.bfloat16(), linear.bias.bfloat16()))
    by_hand = (h.float().unsqueeze(-2) * mlp[6].weight).sum(-1) + mlp[6].bias
    assert half.dtype == torch.float32
    assert torch.equal(half, by_hand)
    assert 0 < (half - full).abs().max() < 0.02 * full.abs().max()
    half.sum().backward()
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in mlp.parameters())


def test_an_unknown_precision_is_refused(policy):
    with pytest.raises(ValueError, match="thin-layer gradient"):
        policy("tf32")
    with pytest.raises(ValueError, match="hidden dtype"):
        policy(hidden_dtype="float16")


def test_prepare_sets_the_policy_for_each_run(policy):
    trainer = bench_step.make_trainer("vardiu_gaussian", 1, torch.device("cpu"))
    prepare(trainer, "eager", "matmul", "bfloat16")
    assert networks._precision == {"thin_layer_grad": "matmul", "hidden_dtype": "bfloat16"}
    prepare(trainer, "eager")
    assert networks._precision == {"thin_layer_grad": "exact", "hidden_dtype": "float32"}
