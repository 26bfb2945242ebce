"""What runs inside one training iteration: the method an entry script builds, the trained state, and the
iteration itself. Everything here may be captured as one CUDA graph, so nothing here synchronises with the host
(no ``.item()``, no ``.tolist()``, no Python branch on a tensor's value).

An entry script's ``build(flags, device, target)`` returns, for one seed, a ``Method``:

    networks        the networks to train, by name, with their learning rates
    updates         the updates of one iteration, in order. Each is a loss callable
                    ``loss_fn(nets, power) -> {term: scalar}`` (``losses/``) that declares its terms in
                    ``loss_fn.terms``; ``objective`` names the term that is backpropagated into ``networks``,
                    and every term is logged (metrics.csv columns)
    power_schedule  iteration -> the sigma-sampler power p, passed to every loss as a device tensor
    eval_network    the network evaluation samples from, and ``sample(module, n, rng)`` saying how

``Trainer`` holds every seed's networks (one, or K vectorised through ``utils.seeds.Networks``), one Adam per
trained network and the EMA; ``Trainer.iteration`` is one iteration. ``prepare`` decides, in one place, how it
runs on the device: precision, compilation and CUDA-graph capture for ``--mode``.
"""
from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from models.networks import set_network_precision
from utils.errors import UsageError
from utils.fast import EagerIteration, GraphedIteration, make_adam, make_iteration_runner
from utils.seeds import Networks, load_optimizer_state_for_seed, optimizer_state_for_seed
from utils.targets import GaussianMixture

LossFn = Callable[[dict[str, nn.Module], torch.Tensor], dict[str, torch.Tensor]]
SampleFn = Callable[[nn.Module, int, torch.Generator], torch.Tensor]
BuildFn = Callable[[argparse.Namespace, torch.device, GaussianMixture], "Method"]


def sample_from_module(module: nn.Module, n: int, rng: torch.Generator) -> torch.Tensor:
    """Evaluation samples of a generator: ``module.sample(n, generator=rng)`` [n, d]."""
    return module.sample(n, generator=rng)


@dataclass
class Update:
    """``repeats`` optimiser updates of ``networks`` per iteration, each on ``loss_fn``'s term ``objective``."""

    loss_fn: LossFn
    networks: tuple[str, ...]
    objective: str = "loss"
    repeats: int = 1


@dataclass
class Method:
    """A training method for one seed: networks and learning rates, the updates of one iteration, the sigma-sampler
    power schedule, and how evaluation draws samples from ``networks[eval_network]``."""

    networks: dict[str, nn.Module]
    learning_rates: dict[str, float]
    updates: list[Update]
    power_schedule: Callable[[int], float]
    eval_network: str = "generator"
    sample: SampleFn = sample_from_module
    notes: tuple[str, ...] = ()  # one-line notes on the chosen settings, printed once after the run-folder line

    @property
    def logged_terms(self) -> tuple[str, ...]:
        """The loss terms logged as metrics.csv columns, in the order the updates produce them."""
        return tuple(dict.fromkeys(term for update in self.updates for term in update.loss_fn.terms))


class Trainer:
    """The networks of every seed, one Adam per trained network, the EMA of the evaluated network and the per-seed
    running sums [K] of the logged terms. ``iteration()`` is one training iteration at the power held in the
    device tensor ``power``; it never synchronises with the host, so it can be captured as one CUDA graph."""

    def __init__(self, methods: list[Method], device: torch.device, grad_clip: float, ema_decay: float):
        method = methods[0]  # every seed's method is built alike; only the networks' initial weights differ
        self.method, self.device, self.grad_clip, self.ema_decay = method, device, grad_clip, ema_decay
        self.nets = Networks.stack([m.networks for m in methods])
        self.optimizers = {name: make_adam(self.nets.parameters(name), lr, device)
                           for name, lr in method.learning_rates.items()}
        self.eval_params = self.nets.parameters(method.eval_network)
        self.ema = [p.detach().clone() for p in self.eval_params] if ema_decay > 0 else None
        self.power = torch.zeros((), device=device)
        self.sums: dict[str, torch.Tensor] = {}  # logged term -> per-seed sum [K] since the last evaluation

    def iteration(self) -> None:
        for update in self.method.updates:
            for _ in range(update.repeats):
                out = self.nets.call(update.loss_fn, self.power)
                objective = out[update.objective]
                for name in update.networks:
                    self.optimizers[name].zero_grad(set_to_none=True)
                # seeds are independent: the sum of their objectives has each seed's gradient in its own slice
                (objective if objective.dim() == 0 else objective.sum()).backward()
                for name in update.networks:
                    if self.grad_clip > 0:
                        self.nets.clip_grad_norm_(name, self.grad_clip)
                    self.optimizers[name].step()
            for key, value in out.items():  # the last repeat's terms
                value = value.detach().reshape(-1)
                if key in self.sums:
                    self.sums[key].add_(value)
                else:
                    self.sums[key] = value.clone()
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, self.eval_params, 1.0 - self.ema_decay)

    def eval_module(self, index: int) -> nn.Module:
        """Seed ``index``'s evaluated network with the weights evaluation uses (the EMA when it is on)."""
        return self.nets.module_for_seed(self.method.eval_network, index, self.ema)

    def seed_state(self, index: int) -> dict:
        """Seed ``index``'s networks, optimiser states and EMA, in the single-seed checkpoint format."""
        nets, k = self.nets, self.nets.num_seeds
        return {"modules": {name: nets.state_dict(name, index) for name in nets.modules},
                "optimizers": {name: optimizer_state_for_seed(opt, k, index) for name, opt in self.optimizers.items()},
                "ema": None if self.ema is None else copy.deepcopy(self.eval_module(index).state_dict())}

    def load_seed_state(self, index: int, state: dict) -> None:
        """Load a checkpoint's ``seed_state`` into seed ``index``."""
        for name in self.nets.modules:
            self.nets.load_state_dict(name, state["modules"][name], index)
        for name, opt in self.optimizers.items():
            load_optimizer_state_for_seed(opt, state["optimizers"][name], self.nets.num_seeds, index)
        if self.ema is not None:
            module = copy.deepcopy(self.nets.modules[self.method.eval_network])
            prefix = f"{self.method.eval_network}."  # older teacher checkpoints stored the sampler's state dict
            module.load_state_dict({k.removeprefix(prefix): v for k, v in state["ema"].items()})
            with torch.no_grad():
                for e, t in zip(self.ema, module.parameters()):
                    (e[index] if self.nets.num_seeds > 1 else e).copy_(t)


def build_trainer(build: BuildFn, values: argparse.Namespace, seeds: list[int], device: torch.device,
                  target: GaussianMixture) -> Trainer:
    """``build`` once per seed, each under torch.manual_seed(seed), so that every seed's networks start exactly as
    in a single-seed run of that seed; then one Trainer over all of them."""
    methods = []
    for seed in seeds:
        torch.manual_seed(seed)
        np.random.seed(seed)
        methods.append(build(values, device, target))
    return Trainer(methods, device, values.grad_clip, values.ema_decay)


# ----------------------------------------------------------------------------------------------------------------
# How the iteration runs on the device

MODE_NAMES = {"fast": "fast: compiled CUDA graph, TF32 hidden products", "exact": "exact: CUDA graph, float32",
              "eager": "eager, float32"}


def resolve_device(spec: str | None) -> torch.device:
    """The torch device for a --device value.

    None -> cuda if available else cpu. A CUDA device on a machine without CUDA warns once and falls back to
    the CPU; a CUDA index that does not exist, or a string torch does not understand, is a UsageError.
    """
    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {spec!r} is not a device torch understands; use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UsageError(f"--device {spec!r}: only cpu and cuda devices are supported")
    if not torch.cuda.is_available():
        print(f"warning: --device {spec}: CUDA is not available on this machine; running on the CPU",
              file=sys.stderr)
        return torch.device("cpu")
    count = torch.cuda.device_count()
    index = device.index if device.index is not None else 0
    if index >= count:
        names = ", ".join(f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(count))
        raise UsageError(f"--device {spec}: no such CUDA device; this machine has {names}")
    return torch.device("cuda", index)


def run_mode(mode: str, device: torch.device) -> str:
    """The --mode a device runs: the CPU always runs eager."""
    return mode if device.type == "cuda" else "eager"


def set_precision(mode: str, thin_layer_grad: str = "exact", hidden_dtype: str = "float32") -> None:
    """TF32 matrix products in the fast mode only. Every product of coordinates is computed without a matrix
    product (models.networks.exact_linear, the mixture score), so TF32 reaches only the hidden layers; with
    ``thin_layer_grad="matmul"`` it reaches the gradients of the first and last layers too, not their values.
    ``hidden_dtype="bfloat16"``: the hidden layers in bfloat16 (``models.networks.set_network_precision``)."""
    torch.set_float32_matmul_precision("high" if mode == "fast" else "highest")
    set_network_precision(thin_layer_grad, hidden_dtype)


def prepare(trainer: Trainer, mode: str, thin_layer_grad: str = "exact",
            hidden_dtype: str = "float32") -> EagerIteration | GraphedIteration:
    """The callable that runs one training iteration in ``--mode`` on the trainer's device: fast = TF32 hidden
    products, the losses compiled by torch.compile, the iteration replayed as one CUDA graph; exact = the eager
    kernels in float32 replayed as one CUDA graph; eager (and every CPU run) = kernels launched one by one.
    ``thin_layer_grad``, ``hidden_dtype`` (--thin_layer_grad, --hidden_dtype): ``set_precision``."""
    mode = run_mode(mode, trainer.device)
    set_precision(mode, thin_layer_grad, hidden_dtype)
    trainer.nets.compile = mode == "fast"
    return make_iteration_runner(trainer.iteration, trainer.device, mode != "eager")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
