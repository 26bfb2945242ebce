"""CUDA-only checks (skipped cleanly without a GPU): the training steps never synchronise with the host."""
import argparse
import copy

import pytest
import torch

from models import FlowPosterior, GaussianPosterior, Generator
from utils.targets import mog40
from utils.teachers import kde_teacher, load_teacher
from utils.trainer import DiffInstructStep, VarDiUStep

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make_posterior(kind: str) -> torch.nn.Module:
    return GaussianPosterior(2) if kind == "gaussian" else FlowPosterior(2, kind, flow_length=4)


def run_without_sync(step, power: torch.Tensor) -> dict:
    """One warm-up step (lazy library initialisation may synchronise once), then three steps under
    torch.cuda.set_sync_debug_mode("error"), which raises on any host synchronisation."""
    step(power)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            out = step(power)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return out


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
    out = run_without_sync(step, torch.tensor(0.5, device=device))
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["bound"])


@pytest.mark.parametrize("score_step", [1, 3])
def test_diff_instruct_step_has_no_host_synchronisation(score_step):
    device = torch.device("cuda")
    torch.manual_seed(0)
    target = mog40().to(device)
    args = argparse.Namespace(batch_size=1024, sigma_min=0.1, sigma_max=20.0, no_antithetic=False, weight="sigma2",
                              lr=1e-4, score_lr=5e-5, grad_clip=10.0, score_step=score_step, sigma_data=10.0)
    student = copy.deepcopy(load_teacher(None, target, device)).requires_grad_(True)
    step = DiffInstructStep(Generator(2).to(device), student, target.score, args, device)
    out = run_without_sync(step, torch.tensor(2.0, device=device))
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["score_loss"])
