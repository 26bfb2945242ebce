"""Shared helpers: run an entry script as a user would (a subprocess in the repo root)."""
import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.registry import entry_script, make_target
from utils.run_io import METRIC_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
# Small networks and sample counts so an end-to-end run takes a few seconds on 2 CPU cores.
TINY = ["--width", "32", "--depth", "2", "--batch_size", "64", "--eval_samples", "400", "--no_progress"]


def run_script(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def assert_vectorised_run_resumes_exactly(script: str, flags: list[str], seeds: tuple[int, int], out_dir: Path) -> None:
    """Train ``script`` with ``flags`` (which hold --show_iter) and --seeds ``seeds`` for 40 iterations ("full") and
    for 20 ("part"), resume "part" to 40 with --load, and check that each seed's metrics (every column but the
    clock) and final samples equal the uninterrupted run's."""
    common = [*flags, "--seeds", ",".join(map(str, seeds)), "--out_dir", str(out_dir)]
    assert run_script(script, *common, "--max_iter", "40", "--name", "full").returncode == 0
    assert run_script(script, *common, "--max_iter", "20", "--name", "part").returncode == 0
    res = run_script(script, "--load", *[str(out_dir / f"part_seed{s}") for s in seeds], "--max_iter", "40",
                     "--no_progress")
    assert res.returncode == 0, res.stderr
    for seed in seeds:
        full, part = read_metrics(out_dir / f"full_seed{seed}"), read_metrics(out_dir / f"part_seed{seed}")
        assert int(part[-1]["iteration"]) == 40
        assert list(full[0]) == list(part[0])
        for key in set(full[0]) - {"wall_time", "train_time"}:
            assert [r[key] for r in full] == [r[key] for r in part], key
        assert np.array_equal(np.load(out_dir / f"full_seed{seed}" / "samples.npy"),
                              np.load(out_dir / f"part_seed{seed}" / "samples.npy"))


def read_metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def logged_terms(run_dir: Path) -> tuple[str, ...]:
    """The loss terms the run's method declares (``Method.logged_terms``), from its config.json: its script
    builds the method again on the CPU."""
    config = json.loads((run_dir / "config.json").read_text())
    module = entry_script(config["script"])
    method = module.build(argparse.Namespace(**config), torch.device("cpu"), make_target(config["target"], config.get("dim", 2)))
    return method.logged_terms


def assert_complete_run_folder(run_dir: Path, iterations: list[int], eval_samples: int,
                               modules: tuple[str, ...] = ("generator", "posterior")) -> None:
    """Every output of a finished run is there and consistent with metrics.csv, whose columns are the sample
    metrics, the terms the method's losses declare, and the power."""
    logged = logged_terms(run_dir)
    assert logged and "loss" in logged
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["max_iter"] == iterations[-1]
    rows = read_metrics(run_dir)
    assert list(rows[0].keys()) == METRIC_COLUMNS + list(logged) + ["power"]
    assert all(r[key] == "nan" for key in logged for r in rows[:1]) and \
        all(np.isfinite(float(r[key])) for key in logged for r in rows[1:])
    assert [int(r["iteration"]) for r in rows] == iterations
    for name, key in [("logpd_list", "logpd"), ("MMD_list", "mmd"), ("time_list", "train_time")]:
        values = json.loads((run_dir / "lists" / f"{name}.json").read_text())
        assert values == pytest.approx([float(r[key]) for r in rows])
    samples = np.load(run_dir / "samples.npy")
    assert samples.shape == (eval_samples, 2) and np.isfinite(samples).all()
    assert (run_dir / "plots" / f"samples_{iterations[-1]:07d}.png").stat().st_size > 1000
    assert (run_dir / "plots" / "metrics.png").is_file()
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["iteration"] == iterations[-1]
    assert set(modules) <= ckpt["modules"].keys() and set(modules) <= ckpt["optimizers"].keys()


@pytest.fixture
def tiny():
    return list(TINY)


def assert_pathwise_gradient(run, a: torch.Tensor, b: torch.Tensor, h: float = 1e-6) -> None:
    """``run(a, b) -> (generator, LossOutput)`` builds a linear generator and its loss on fixed random numbers: the
    surrogate's autograd gradient in (a, b) equals central differences of the bound's Monte-Carlo value."""
    gen, out = run(a, b)
    out.loss.backward()
    grad = torch.stack([gen.a.grad, gen.b.grad])
    fd = torch.zeros(2, len(a), dtype=a.dtype)
    for row, (da, db) in enumerate([(1, 0), (0, 1)]):
        for i in range(len(a)):
            e = torch.zeros_like(a)
            e[i] = h
            up, down = run(a + da * e, b + db * e)[1].bound, run(a - da * e, b - db * e)[1].bound
            fd[row, i] = (up - down) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-8)
    assert grad.abs().min() > 1e-3


def assert_posterior_gradient_is_its_likelihood_term(gen, posterior, noise, loss_out, weight) -> None:
    """After ``loss_out.loss`` is backpropagated, the posterior's gradient is that of -mean(w log q(z | x_t)) with
    x_t detached: maximum likelihood alone."""
    loss_out.loss.backward()
    got = [p.grad.clone() for p in posterior.parameters()]
    for p in posterior.parameters():
        p.grad = None
    x_t = (gen(noise.z) + noise.sigma[:, None] * noise.eps).detach()
    (-(weight(noise.sigma) * posterior.log_prob(noise.z, x_t, noise.sigma)).mean()).backward()
    for g, p in zip(got, posterior.parameters()):
        torch.testing.assert_close(g, p.grad)


def assert_training_stays_finite_and_moves_every_network(method: str, flags: list[str], iterations: int = 30):
    """Two vectorised seeds of ``method`` on the CPU, the power rising from 0.1: every logged sum finite, every
    network changed. Returns the trainer."""
    from utils.registry import method_trainer
    torch.manual_seed(0)
    trainer = method_trainer(method, flags, [0, 1], torch.device("cpu"))
    before = {name: [p.detach().clone() for p in trainer.nets.parameters(name)] for name in trainer.nets.modules}
    for it in range(iterations):
        trainer.power.fill_(0.1 + 0.05 * it)
        trainer.iteration()
    assert all(torch.isfinite(v).all() for v in trainer.sums.values()), trainer.sums
    for name, old in before.items():
        assert any(not torch.equal(o, p) for o, p in zip(old, trainer.nets.parameters(name))), name
    return trainer


def mog40_mixtures(dim: int, m: int):
    """(a float64 generator on MoG40's first m modes, float64 MoG40) in ``dim`` dimensions: exact samplers for
    experiments/bound_vs_modes.py and prior_force.py."""
    from experiments.bound_vs_modes import float64_mixture
    mog40 = make_target("mog40", dim)
    return float64_mixture(mog40.means[:m], mog40.std), float64_mixture(mog40.means, mog40.std)
