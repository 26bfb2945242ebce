"""The fast path: one training iteration replayed as a single CUDA graph.

A training iteration on these tiny MLPs is a few hundred small kernels; launched one by one from Python it is
bound by launch overhead (about 5 ms at the paper's sizes). Captured once in a CUDA graph and replayed, the GPU
runs the same kernels back to back. This works because the step never synchronises with the host, keeps every
changing quantity (the annealed power, loss sums, EMA weights, Adam's step count) in device tensors updated in
place, and uses capturable optimisers (``make_adam``). Random draws inside the graph advance the default CUDA
generator exactly as eager execution would.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch


def make_adam(params: Iterable[torch.Tensor], lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam; on CUDA the fused, capturable implementation (one kernel for all tensors, graph-safe)."""
    if device.type == "cuda":
        return torch.optim.Adam(params, lr=lr, fused=True, capturable=True)
    return torch.optim.Adam(params, lr=lr)


class EagerIteration:
    """Runs the iteration function as it is."""

    captured = False

    def __init__(self, fn: Callable[[], None]):
        self.fn = fn

    def __call__(self) -> None:
        self.fn()


class GraphedIteration:
    """Runs ``fn`` eagerly (on a side stream) for the first ``warmup`` calls, which also creates optimiser state
    and accumulators; then captures it once into a CUDA graph and replays the graph on every later call.
    Every call, eager or replayed, is one real training iteration."""

    def __init__(self, fn: Callable[[], None], device: torch.device, warmup: int = 3):
        self.fn, self.device, self.warmup = fn, device, warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        if self.calls < self.warmup:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self.fn()
            torch.cuda.current_stream(self.device).wait_stream(side)
            self.calls += 1
            return
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.fn()
        self.graph = graph
        graph.replay()  # capture records the kernels without running them


def make_iteration_runner(fn: Callable[[], None], device: torch.device, fast: bool) -> EagerIteration | GraphedIteration:
    """The fast path (CUDA graph) when ``fast`` and the device is CUDA, else plain eager calls."""
    if fast and device.type == "cuda":
        return GraphedIteration(fn, device)
    return EagerIteration(fn)
