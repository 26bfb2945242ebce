"""Vectorised seeds: K independent copies of a step's networks trained in one process.

``Networks`` holds the trainable networks of a training step (generator, posterior, student, ...). With one seed
they are ordinary modules and ``call(fn, ...)`` is simply ``fn(modules, ...)``. ``Networks.stack`` turns K
single-seed sets (each initialised under its own seed) into one set whose parameters are stacked along a new
leading dimension, and ``call`` then runs ``fn`` once per seed under ``torch.func.vmap`` (batched matrix
products, one kernel for all seeds). Random draws inside ``fn`` differ between seeds (``randomness="different"``);
parameters, gradients, gradient clipping and Adam moments stay separate per seed, so each seed is an ordinary
independent run. Checkpoints are written per seed in the single-seed format.
"""
from __future__ import annotations

import copy
import functools
import re
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.func import functional_call, vmap

from utils.errors import UsageError


def parse_seeds(spec: str) -> list[int]:
    """'0-9' -> [0, ..., 9]; '0,3,7' -> [0, 3, 7]; '1-3,8' -> [1, 2, 3, 8]. Raises UsageError on bad input."""
    seeds: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise UsageError(f"--seeds {spec!r}: expected a range like 0-9 or a list like 0,3,7")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise UsageError(f"--seeds {spec!r}: range {lo}-{hi} is empty")
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {spec!r} names a seed twice")
    return seeds


class _Apply(nn.Module):
    """Holds the networks under one root so ``functional_call`` can swap all their parameters at once."""

    def __init__(self, modules: dict[str, nn.Module]):
        super().__init__()
        self.nets = nn.ModuleDict(modules)

    def forward(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(dict(self.nets.items()), *args)


class Networks:
    """The trainable networks of a run, for one seed (plain modules) or K seeds (stacked parameters)."""

    def __init__(self, **modules: nn.Module):
        self.num_seeds = 1
        self.modules: dict[str, nn.Module] = modules
        self.compile = False  # the fast path sets this: each function given to call() runs through torch.compile
        self._compiled: dict[int | str, Callable[..., Any]] = {}
        self._stacked: dict[str, dict[str, torch.Tensor]] = {}  # name -> {param/buffer name: [K, ...]}
        self._root: _Apply | None = None
        self._eval_copies: dict[str, nn.Module] = {}

    @classmethod
    def stack(cls, per_seed: list[dict[str, nn.Module]]) -> "Networks":
        """Networks of K = len(per_seed) seeds, each given as the modules of one seed (initialised under its own
        seed). One seed: the modules themselves. Several: their parameters stacked along a new leading
        dimension; the first seed's modules then serve only as the template that ``functional_call`` fills."""
        if len(per_seed) == 1:
            return cls(**per_seed[0])
        first = per_seed[0]
        out = cls(**first)
        out.num_seeds = len(per_seed)
        for name, module in first.items():
            params = [dict(m[name].named_parameters()) for m in per_seed]
            buffers = [dict(m[name].named_buffers()) for m in per_seed]
            state = {key: nn.Parameter(torch.stack([ps[key].detach() for ps in params]), requires_grad=p.requires_grad)
                     for key, p in module.named_parameters()}
            state |= {key: torch.stack([bs[key] for bs in buffers]) for key, _ in module.named_buffers()}
            out._stacked[name] = state
        out._root = _Apply(first)
        return out

    def module_for_seed(self, name: str, index: int = 0, weights: list[torch.Tensor] | None = None) -> nn.Module:
        """Seed ``index``'s network ``name`` as a plain single-seed module, for evaluation: for one seed and live
        weights the trained module itself; otherwise a frozen copy loaded with that seed's slice of the live
        parameters or of ``weights`` (a list in ``parameters(name)`` order, e.g. an EMA)."""
        source = self.parameters(name) if weights is None else weights
        if self.num_seeds == 1 and weights is None:
            return self.modules[name]
        if name not in self._eval_copies:
            self._eval_copies[name] = copy.deepcopy(self.modules[name]).requires_grad_(False)
        module = self._eval_copies[name]
        with torch.no_grad():
            for t, p in zip(module.parameters(), source):
                t.copy_(p[index] if self.num_seeds > 1 else p)
        return module

    def parameters(self, name: str) -> list[torch.Tensor]:
        """Parameters of one network (stacked [K, ...] for several seeds), in ``named_parameters`` order."""
        if self.num_seeds == 1:
            return list(self.modules[name].parameters())
        names = [k for k, _ in self.modules[name].named_parameters()]
        return [self._stacked[name][k] for k in names]

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(modules: dict[str, nn.Module], *args) for each seed. Tensors fn returns gain a leading [K] dim
        when there are several seeds; args are shared by all seeds. With ``compile`` set, the call (forward and,
        through AOTAutograd, backward) is compiled by torch.compile once per fn: fewer, fused kernels."""
        if not self.compile:
            return self._call(fn, *args)
        if id(fn) not in self._compiled:
            # fallback_random: random draws stay PyTorch's own (same numbers as eager), not inductor's generator
            self._compiled[id(fn)] = torch.compile(functools.partial(self._call, fn), dynamic=False,
                                                   options={"fallback_random": True})
        return self._compiled[id(fn)](*args)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.num_seeds == 1:
            return fn(self.modules, *args)
        flat = {f"nets.{name}.{key}": t for name, state in self._stacked.items() for key, t in state.items()}

        def one_seed(state: dict[str, torch.Tensor], *a: Any) -> Any:
            return functional_call(self._root, state, (fn, *a))

        return vmap(one_seed, in_dims=(0,) + (None,) * len(args), randomness="different")(flat, *args)

    def clip_grad_norm_(self, name: str, max_norm: float) -> None:
        """Scale each seed's gradient of one network to norm <= max_norm (no host synchronisation). With
        ``compile`` set, the per-seed version runs as one compiled function (a few fused kernels)."""
        params = [p for p in self.parameters(name) if p.grad is not None]
        if not params:
            return
        if self.num_seeds == 1:
            torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
            return
        clip = per_seed_clip_
        if self.compile:
            if "clip" not in self._compiled:
                self._compiled["clip"] = torch.compile(per_seed_clip_, dynamic=False)
            clip = self._compiled["clip"]
        clip([p.grad for p in params], max_norm)

    def state_dict(self, name: str, seed_index: int = 0) -> dict[str, torch.Tensor]:
        """One seed's state dict of a network, in the single-seed module's format."""
        if self.num_seeds == 1:
            return self.modules[name].state_dict()
        return {k: self._stacked[name][k][seed_index].detach().clone()
                for k in self.modules[name].state_dict()}

    def load_state_dict(self, name: str, state: dict[str, torch.Tensor], seed_index: int = 0) -> None:
        """Load one seed's state dict (single-seed format) into a network."""
        if self.num_seeds == 1:
            self.modules[name].load_state_dict(state)
            return
        template = self.modules[name]
        template.load_state_dict(state)  # checks keys and shapes
        with torch.no_grad():
            for key, value in template.state_dict().items():
                self._stacked[name][key][seed_index].copy_(value)


def per_seed_clip_(grads: list[torch.Tensor], max_norm: float) -> None:
    """Clip stacked gradients [K, ...] in place so that each seed's norm over all of them is at most max_norm."""
    k = grads[0].shape[0]
    sq = torch.stack([g.reshape(k, -1).pow(2).sum(1) for g in grads]).sum(0)  # [K]
    coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.reshape((-1,) + (1,) * (g.dim() - 1)))


def optimizer_state_for_seed(opt: torch.optim.Optimizer, num_seeds: int, seed_index: int) -> dict:
    """One seed's optimizer state dict: per-parameter state tensors with a leading [K] dim are sliced."""
    state = opt.state_dict()
    if num_seeds == 1:
        return state
    sliced = {idx: {k: v[seed_index].clone() if torch.is_tensor(v) and v.dim() > 0 else v for k, v in s.items()}
              for idx, s in state["state"].items()}
    return {"state": sliced, "param_groups": state["param_groups"]}


def load_optimizer_state_for_seed(opt: torch.optim.Optimizer, state: dict, num_seeds: int, seed_index: int) -> None:
    """Load one seed's optimizer state (single-seed format) into an optimizer over stacked parameters.
    Every seed of a vectorised run shares the Adam step count, so the last seed loaded sets it."""
    if num_seeds == 1:
        opt.load_state_dict(state)
        return
    params = [p for group in opt.param_groups for p in group["params"]]
    for idx, s in state["state"].items():
        p = params[int(idx)]
        slot = opt.state[p]
        for k, v in s.items():
            if torch.is_tensor(v) and v.dim() > 0:
                if k not in slot:
                    slot[k] = torch.zeros((num_seeds,) + tuple(v.shape), dtype=v.dtype, device=p.device)
                slot[k][seed_index].copy_(v)
            else:
                on_device = opt.defaults.get("capturable") or opt.defaults.get("fused")
                slot[k] = v.to(p.device) if torch.is_tensor(v) and on_device else v
