"""Figures of a run: samples over the target's log-density contours, and metric curves.

``PlotWorker`` draws sample plots in a separate process so that training never waits for matplotlib.
"""
from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from utils.targets import GaussianMixture  # noqa: E402


def plot_limits(target: GaussianMixture, margin_stds: float = 4.0) -> tuple[float, float]:
    """A square window [lo, hi] that holds every mode with a margin."""
    means = target.means.cpu()
    return float(means.min()) - margin_stds * target.std, float(means.max()) + margin_stds * target.std


def draw_samples(ax: plt.Axes, samples: torch.Tensor | np.ndarray, target: GaussianMixture,
                 max_points: int = 5000) -> None:
    """Scatter (up to max_points of) samples [N, d] over the target's log-density contours on ax. For d > 2 both are
    projected onto the first two coordinates (the projection of an isotropic mixture is the mixture of the projected
    means), and the means are marked."""
    samples = np.asarray(samples.cpu() if torch.is_tensor(samples) else samples)[:max_points]
    if target.dim > 2:
        target = GaussianMixture(target.means[:, :2].cpu(), target.std, target.name)
        samples = samples[:, :2]
        ax.scatter(*target.means.numpy().T, marker="x", s=14, c="k", linewidths=0.8, zorder=3)
        ax.set_xlabel("x1 (projection)", fontsize=7)
        ax.set_ylabel("x2", fontsize=7)
    lo, hi = plot_limits(target)
    grid = torch.linspace(lo, hi, 200)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    cpu_target = GaussianMixture(target.means.cpu(), target.std, target.name)
    logp = cpu_target.log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)).reshape(200, 200)
    top = float(logp.max())
    ax.contour(xx.numpy(), yy.numpy(), logp.numpy(), levels=np.linspace(top - 10, top, 6), linewidths=0.6,
               cmap="viridis", alpha=0.8)
    ax.scatter(samples[:, 0], samples[:, 1], s=2, c="tab:red", alpha=0.5, linewidths=0)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")


def plot_samples(samples: torch.Tensor | np.ndarray, target: GaussianMixture, path: str | Path, title: str = "",
                 max_points: int = 5000) -> None:
    """A figure of samples over the target's contours (``draw_samples``), saved to path; for d > 2 beside the share
    of the samples whose nearest mode is each mode, against the target's equal weights."""
    if target.dim <= 2:
        fig, ax = plt.subplots(figsize=(5, 5))
    else:
        fig, (ax, hist) = plt.subplots(1, 2, figsize=(9, 4.5))
        idx, _ = target.nearest_mode(torch.as_tensor(np.asarray(samples), dtype=torch.float32).to(target.means.device))
        share = torch.bincount(idx.cpu(), minlength=target.num_modes).double() / len(idx)
        hist.bar(np.arange(target.num_modes), share.numpy(), color="tab:red")
        hist.axhline(1 / target.num_modes, color="k", lw=0.8, ls="--", label="target")
        hist.set_xlabel("mode (nearest mean)")
        hist.set_ylabel("share of samples")
        hist.legend(fontsize=8)
    draw_samples(ax, samples, target, max_points)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_metrics(history: list[dict], path: str | Path, reference_logpd: float | None = None) -> None:
    """Log density and log MMD against iterations for one run."""
    if not history:
        return
    it = [r["iteration"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(it, [r["logpd"] for r in history])
    if reference_logpd is not None:
        axes[0].axhline(reference_logpd, color="gray", ls="--", lw=1, label="true samples")
        axes[0].legend(fontsize=8)
    axes[0].set_ylabel("mean log density")
    axes[1].plot(it, [r["log_mmd"] for r in history])
    axes[1].set_ylabel("log MMD")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_samples_job(samples: np.ndarray, means: np.ndarray, std: float, name: str, path: str, title: str) -> None:
    plot_samples(samples, GaussianMixture(torch.from_numpy(means), std, name), path, title)


class PlotWorker:
    """Sample plots drawn in one background process (started on the first plot, 'spawn' so it is safe after CUDA
    initialisation). ``close()`` waits for the outstanding plots and reports any that failed."""

    def __init__(self):
        self._pool: ProcessPoolExecutor | None = None
        self._pending: list[tuple[Path, Future]] = []

    def plot_samples(self, samples: np.ndarray, target: GaussianMixture, path: Path, title: str = "") -> None:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        job = self._pool.submit(_plot_samples_job, np.asarray(samples), target.means.cpu().numpy(), target.std,
                                target.name, str(path), title)
        self._pending = [(p, f) for p, f in self._pending if not f.done() or f.exception()] + [(path, job)]

    def close(self, wait: bool = True) -> None:
        """Wait for the outstanding plots (``wait``) or drop those not yet started; then stop the worker."""
        if self._pool is None:
            return
        if wait:
            for path, job in self._pending:
                if job.exception() is not None:
                    print(f"warning: could not draw {path}: {job.exception()}", file=sys.stderr)
        self._pool.shutdown(wait=True, cancel_futures=not wait)
        self._pool = None
