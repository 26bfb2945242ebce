"""utils.registry: a new posterior, target or loss term is one edit, and it trains through the shared loop."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn as nn

import train_upper_diffusion
from conftest import TINY, read_metrics
from models.networks import MLP, diagonal_normal_log_prob, posterior_context
from utils import registry
from utils.cli import parse_flags
from utils.loop import run_training
from utils.recipes import RECIPES
from utils.targets import GaussianMixture

SCRIPT = "train_upper_diffusion.py"


class ToyPosterior(nn.Module):
    """q(z | x_t, sigma) = N(mu(x_t, sigma), s^2 I) with one learned s for every input: the protocol, no more."""

    def __init__(self, dim: int, width: int, depth: int):
        super().__init__()
        self.mean = MLP(dim + 1, dim, width, depth)
        self.log_std = nn.Parameter(torch.zeros(()))

    def log_prob(self, z, x_t, sigma):
        mean = self.mean(posterior_context(x_t, sigma))
        return diagonal_normal_log_prob(z, mean, self.log_std.exp().expand_as(mean))

    def sample(self, x_t, sigma, generator=None):
        mean = self.mean(posterior_context(x_t, sigma))
        return mean + self.log_std.exp() * torch.randn(mean.shape, generator=generator, device=mean.device)


def train(argv, tmp_path, build=train_upper_diffusion.build):
    argv = ["--true_score", *TINY, "--max_iter", "20", "--show_iter", "10", "--device", "cpu",
            "--out_dir", str(tmp_path), *argv]
    flags = parse_flags(train_upper_diffusion.build_parser(), argv, SCRIPT)
    return run_training(build, flags, SCRIPT, "x")


def test_a_posterior_added_to_the_registry_trains(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.POSTERIORS, "toy", registry.Posterior(ToyPosterior))
    run_dir, = train(["--posterior", "toy", "--name", "toy"], tmp_path)
    rows = read_metrics(run_dir)
    assert [r["iteration"] for r in rows] == ["0", "10", "20"]
    assert all(math.isfinite(float(r[k])) for r in rows[1:] for k in ("loss", "bound", "logpd"))
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["modules"]["posterior"]
    assert set(state) == {"log_std"} | {k for k in state if k.startswith("mean.")}
    assert float(state["log_std"]) != 0.0  # the posterior was trained


def test_a_posterior_without_k_draws_given_iw_samples_is_one_line(tmp_path, monkeypatch, capsys):
    """--iw_samples with a posterior that has no log_prob_and_draws: exit 2, one line naming it, no run folder."""
    monkeypatch.setitem(registry.POSTERIORS, "toy", registry.Posterior(ToyPosterior))
    argv = ["--true_score", *TINY, "--max_iter", "20", "--device", "cpu", "--out_dir", str(tmp_path),
            "--posterior", "toy", "--iw_samples", "2", "--name", "toy"]
    with pytest.raises(SystemExit) as exc:
        train_upper_diffusion.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ToyPosterior has none" in err[0] and "Traceback" not in err[0]
    assert not any(tmp_path.iterdir())


def test_a_target_added_to_the_registry_trains(tmp_path, monkeypatch):
    two = lambda dim: GaussianMixture(torch.tensor([[-4.0, 0.0], [4.0, 0.0]]), std=1.0, name="two")  # noqa: E731
    monkeypatch.setitem(registry.TARGETS, "two", two)
    run_dir, = train(["--target", "two", "--name", "two"], tmp_path)
    rows = read_metrics(run_dir)
    assert rows[-1]["iteration"] == "20" and int(rows[-1]["modes"]) <= 2


@dataclasses.dataclass
class WithGeneratorNorm:
    """A VarDiU loss with one more logged term: the mean squared norm of the generator's samples."""

    base: object

    @property
    def terms(self):
        return (*self.base.terms, "x0_norm")

    def __call__(self, nets, power):
        out = self.base(nets, power)
        with torch.no_grad():
            out["x0_norm"] = nets["generator"](torch.randn(64, nets["generator"].dim)).pow(2).sum(-1).mean()
        return out


def test_a_loss_term_is_declared_once_and_logged(tmp_path):
    def build(flags, device, target):
        method = train_upper_diffusion.build(flags, device, target)
        method.updates[0] = dataclasses.replace(method.updates[0], loss_fn=WithGeneratorNorm(method.updates[0].loss_fn))
        assert method.logged_terms == ("loss", "bound", "x0_norm")
        return method
    run_dir, = train(["--name", "term"], tmp_path, build)
    rows = read_metrics(run_dir)
    assert list(rows[0])[-4:] == ["loss", "bound", "x0_norm", "power"]
    assert float(rows[-1]["x0_norm"]) > 0


def test_recipes_take_their_scripts_from_the_registry():
    entry_of = {"vardiu_gaussian": "vardiu_gaussian", "vardiu_nsf": "vardiu_nsf", "di": "diff_instruct"}
    for recipe in RECIPES.values():
        for key, method in recipe.items():
            entry = registry.METHODS[next(v for k, v in entry_of.items() if key.startswith(k + "_"))]
            assert method.script == entry.script and set(entry.flags) <= set(method.flags), key
