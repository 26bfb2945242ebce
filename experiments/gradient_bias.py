"""Gradient error of VarDiU and Diff-Instruct against the analytic gradient of the diffusive KL, as training
proceeds on the linear-Gaussian problem of experiments/linear_gaussian.py.

    python experiments/gradient_bias.py --dims 2 16 --iters 2000 --out experiments/figures/gradient_bias.png

Each method trains the generator x0 = a * z + b with the project's real losses and training iteration
(utils.step.Trainer: VarDiU with a GaussianPosterior; Diff-Instruct with an EDMDenoiser student for score_step
1, 5, 10). Both the posterior and
the student first get --pretrain updates on the initial generator (as a teacher-initialised student would). Every --eval_every iterations the generator
gradient of the method's own loss is drawn --eval_batches times (networks frozen) and compared with the
closed-form gradient of the diffusive KL at the current (a, b): relative bias |E g_hat - g| / |g| and relative
standard deviation of one batch's gradient, sqrt(E |g_hat - E g_hat|^2) / |g|.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from experiments.linear_gaussian import DiagonalLinearGenerator, diffusive_kl, gaussian_score
from losses.diff_instruct import GeneratorLoss, StudentScoreLoss, diff_instruct_generator_loss
from losses.edm import edm_denoiser_loss
from losses.noise import ConstantPower, NoiseSampler, draw_noise, make_weight, sample_sigma
from losses.vardiu import VarDiULoss, vardiu_loss
from models import GaussianPosterior
from models.denoiser import EDMDenoiser
from utils.step import Method, Trainer, Update

METHODS = ["VarDiU (Gaussian posterior)", "Diff-Instruct, score_step 1", "Diff-Instruct, score_step 5",
           "Diff-Instruct, score_step 10"]


def problem(d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, generator=g) * 2
    s = 0.5 + torch.rand(d, generator=g)
    return m, s


def build_trainer(method: str, gen, m, s, a: argparse.Namespace) -> Trainer:
    """The method's Trainer (sigma sampled uniformly, power 1), its posterior or student pretrained on the initial
    generator for --pretrain updates."""
    d, cpu = gen.dim, torch.device("cpu")
    noise, weight = NoiseSampler(a.batch_size, a.sigma_min, a.sigma_max), make_weight(a.weight, a.sigma_max)
    if method.startswith("VarDiU"):
        posterior = GaussianPosterior(d, a.width, a.depth)
        spec = Method({"generator": gen, "posterior": posterior}, {"generator": a.lr, "posterior": a.posterior_lr},
                      [Update(VarDiULoss(noise, weight, gaussian_score(m, s)), ("generator", "posterior"))],
                      ConstantPower(1.0))
        trainer = Trainer([spec], cpu, a.grad_clip, 0.0)
        for _ in range(a.pretrain):  # the same head start as the student: the posterior fitted to the initial generator
            trainer.optimizers["posterior"].zero_grad()
            vardiu_loss(gen, posterior, noise.draw(d, 1.0), gaussian_score(m, s), weight).loss.backward()
            trainer.optimizers["posterior"].step()
        gen.zero_grad(set_to_none=True)
    else:
        student = EDMDenoiser(d, a.width, a.depth, sigma_data=a.sigma_data)
        opt = torch.optim.Adam(student.parameters(), lr=1e-3)
        for _ in range(a.pretrain):  # the "teacher initialisation": a student fitted to the initial generator
            with torch.no_grad():
                x0 = gen(torch.randn(a.batch_size, d))
            loss = edm_denoiser_loss(student, x0, sample_sigma(a.batch_size, a.sigma_min, a.sigma_max, 1.0),
                                     a.sigma_data)
            opt.zero_grad()
            loss.backward()
            opt.step()
        spec = Method({"generator": gen, "student": student}, {"generator": a.lr, "student": a.score_lr},
                      [Update(StudentScoreLoss(noise, a.sigma_data), ("student",), objective="score_loss",
                              repeats=int(method.rsplit(" ", 1)[1])),
                       Update(GeneratorLoss(noise, weight, gaussian_score(m, s)), ("generator",))],
                      ConstantPower(1.0))
        trainer = Trainer([spec], cpu, a.grad_clip, 0.0)
    trainer.power.fill_(1.0)
    return trainer


def gradient_error(trainer: Trainer, gen, m, s, a: argparse.Namespace) -> tuple[float, float]:
    """Relative bias and relative per-batch std of the method's generator gradient."""
    grads, weight, nets = [], make_weight(a.weight, a.sigma_max), trainer.nets.modules
    for _ in range(a.eval_batches):
        noise = draw_noise(a.batch_size, gen.dim, a.sigma_min, a.sigma_max, 1.0, antithetic=True)
        gen.zero_grad()
        if "posterior" in nets:
            loss = vardiu_loss(gen, nets["posterior"], noise, gaussian_score(m, s), weight).loss
        else:
            loss = diff_instruct_generator_loss(gen, nets["student"].score, noise, gaussian_score(m, s), weight)
        loss.backward()
        grads.append(torch.cat([gen.a.grad, gen.b.grad]).double())
    for p in trainer.nets.parameters("generator"):
        p.grad = None
    grads = torch.stack(grads)
    a64, b64 = gen.a.detach().double().requires_grad_(True), gen.b.detach().double().requires_grad_(True)
    true = torch.cat(torch.autograd.grad(
        diffusive_kl(a64, b64, m.double(), s.double(), a.sigma_min, a.sigma_max, 1.0, a.weight), [a64, b64]))
    norm = true.norm()
    return float((grads.mean(0) - true).norm() / norm), float(((grads - grads.mean(0)) ** 2).sum(-1).mean().sqrt() / norm)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=[2, 16])
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--eval_every", type=int, default=200)
    p.add_argument("--eval_batches", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3, help="generator learning rate")
    p.add_argument("--posterior_lr", type=float, default=1e-3)
    p.add_argument("--score_lr", type=float, default=1e-3)
    p.add_argument("--pretrain", type=int, default=500,
                   help="posterior / student updates on the initial generator before training")
    p.add_argument("--sigma_data", type=float, default=2.0)
    p.add_argument("--out", default="experiments/figures/gradient_bias.png")
    p.add_argument("--sigma_min", type=float, default=0.1)
    p.add_argument("--sigma_max", type=float, default=5.0)
    p.add_argument("--weight", default="sigma")
    p.add_argument("--grad_clip", type=float, default=10.0)
    a = p.parse_args(argv)

    results: dict = {}
    for d in a.dims:
        m, s = problem(d)
        for method in METHODS:
            torch.manual_seed(0)
            gen = DiagonalLinearGenerator(torch.ones(d), torch.zeros(d)).float()
            trainer = build_trainer(method, gen, m, s, a)
            curve = []
            for it in range(a.iters + 1):
                if it % a.eval_every == 0:
                    bias, std = gradient_error(trainer, gen, m, s, a)
                    curve.append((it, bias, std))
                    print(f"d={d:2d} {method:30s} it {it:5d}  rel. bias {bias:.3f}  rel. std {std:.3f}", flush=True)
                if it < a.iters:
                    trainer.iteration()
            results[f"{d}/{method}"] = curve

    fig, axes = plt.subplots(2, len(a.dims), figsize=(4.2 * len(a.dims), 6.4), squeeze=False)
    for col, d in enumerate(a.dims):
        for method in METHODS:
            it, bias, std = zip(*results[f"{d}/{method}"])
            axes[0, col].plot(it, bias, label=method)
            axes[1, col].plot(it, std, label=method)
        axes[0, col].set_title(f"linear-Gaussian, d = {d}")
        axes[0, col].set_ylabel("relative bias |E g - g*| / |g*|")
        axes[1, col].set_ylabel("relative std of one batch's g")
        for ax in axes[:, col]:
            ax.set_yscale("log")
            ax.set_xlabel("generator iteration")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    Path(a.out).with_suffix(".json").write_text(json.dumps({"args": vars(a), "results": results}, indent=1))
    print(f"wrote {a.out}")
    return results


if __name__ == "__main__":
    main()
