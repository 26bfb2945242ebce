"""The coordinate layers (models.networks.exact_linear): the value is float32-exact whatever --thin_layer_grad says;
under ``matmul`` the gradient is the matrix product's. TF32 is emulated on the CPU by truncating the inputs of
F.linear to a 10-bit mantissa, as the tensor cores do."""
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
    yield networks.set_thin_layer_grad
    networks.set_thin_layer_grad("exact")


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


def test_an_unknown_thin_layer_gradient_is_refused(policy):
    with pytest.raises(ValueError, match="thin-layer gradient"):
        policy("tf32")


def test_prepare_sets_the_policy_for_each_run(policy):
    trainer = bench_step.make_trainer("vardiu_gaussian", 1, torch.device("cpu"))
    prepare(trainer, "eager", "matmul")
    assert networks._thin_layer_grad == "matmul"
    prepare(trainer, "eager")
    assert networks._thin_layer_grad == "exact"
