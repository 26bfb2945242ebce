"""CUDA-only checks (skipped cleanly without a GPU): the training step never synchronises with the host."""
import argparse

import pytest
import torch

from models import FlowPosterior, GaussianPosterior, Generator
from utils.targets import mog40
from utils.teachers import kde_teacher, load_teacher
from utils.trainer import VarDiUStep

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make_posterior(kind: str) -> torch.nn.Module:
    return GaussianPosterior(2) if kind == "gaussian" else FlowPosterior(2, kind, flow_length=4)


@pytest.mark.parametrize("kind,score", [("gaussian", "true"), ("NSF", "true"), ("PLF", "true"),
                                        ("gaussian", "edm"), ("gaussian", "kde")])
def test_training_step_has_no_host_synchronisation(kind, score):
    device = torch.device("cuda")
    torch.manual_seed(0)
    target = mog40().to(device)
    args = argparse.Namespace(batch_size=1024, sigma_min=0.1, sigma_max=20.0, no_antithetic=False, weight="sigma2",
                              lr=1e-4, posterior_lr=None, grad_clip=10.0)
    score_fn = {"true": lambda: target.score, "edm": lambda: load_teacher(None, target, device).score,
                "kde": lambda: kde_teacher(target, 20_480, 0).to(device).score}[score]()
    step = VarDiUStep(Generator(2).to(device), make_posterior(kind).to(device), score_fn, target.log_prob,
                      args, device, control_variate=score != "true")
    power = torch.tensor(0.5, device=device)
    step(power)  # warm-up: lazy library initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            out = step(power)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["bound"])
