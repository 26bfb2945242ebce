"""Resuming a run: the flags a resumed run takes from its checkpoint, its seeds, the restored state and random
state, and the clock a run stands at.

A resumed run takes every training flag from its checkpoint; only ``RESUME_OVERRIDABLE`` flags may be given anew.
Seeds of one vectorised run resume together; seeds resumed apart may join again at one iteration.
"""
from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from utils.errors import UsageError
from utils.step import Trainer

# Flags that may differ when a run is resumed with --load; every other flag comes from the checkpoint.
RESUME_OVERRIDABLE = {"max_iter", "device", "show_iter", "plot_every", "save_every", "eval_samples", "load",
                      "time_limit", "tensorboard", "wandb", "wandb_project", "no_progress", "mode", "thin_layer_grad",
                      "hidden_dtype", "checkpoint_minutes"}
PER_SEED_CONFIG = {"seed", "run_dir", "name", "load", "rewind", "vectorised_seeds", "segments"}
COMMAND_ONLY = {"load", "rewind"}  # flags about this command alone: taken as given, never from the checkpoint
# What config.json keeps of each earlier command of a resumed run (its "segments"): what a resume may change.
SEGMENT_KEYS = sorted(RESUME_OVERRIDABLE | {"vectorised_seeds", "device_resolved", "device_name", "torch_version"})

_UNSET = object()


def typed_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """Names of the flags the user actually typed: parse again with every default replaced by a sentinel."""
    quiet = copy.deepcopy(parser)
    quiet.set_defaults(**{name: _UNSET for name in vars(parser.parse_args(argv))})
    return {name for name, value in vars(quiet.parse_args(argv)).items() if value is not _UNSET}


def resume_flags(flags: argparse.Namespace, typed: set[str], config: dict, script: str) -> argparse.Namespace:
    """The flags of a resumed run: the checkpoint's config, with only RESUME_OVERRIDABLE flags replaced."""
    if config.get("script") != script:
        raise UsageError(f"--load: that checkpoint was written by {config.get('script')}, not {script}; "
                         f"resume it with {config.get('script')}")
    for name in sorted(typed - RESUME_OVERRIDABLE - COMMAND_ONLY):
        if name in config and config[name] != getattr(flags, name):
            raise UsageError(f"--{name} cannot change when resuming (the run has {config[name]!r}); "
                             "start a new run instead")
    merged = dict(vars(flags))  # flags newer than the checkpoint keep their defaults
    merged.update({k: v for k, v in config.items() if k in merged})
    merged.update({k: getattr(flags, k) for k in (typed & RESUME_OVERRIDABLE) | COMMAND_ONLY})
    return argparse.Namespace(**merged)


def resumed_seeds(checkpoints: list[tuple[Path, dict]]) -> list[int]:
    """Seeds of the checkpoints given to --load; several must be seeds of one run stopped at one iteration. Seeds
    that were resumed apart (other --max_iter, --time_limit, device, ...) may be resumed together again: only the
    flags a resume cannot change must agree."""
    def training_flags(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in PER_SEED_CONFIG and k not in SEGMENT_KEYS}
    first_path, first = checkpoints[0]
    shared = training_flags(first["config"])
    for path, ckpt in checkpoints[1:]:
        if training_flags(ckpt["config"]) != shared:
            raise UsageError(f"--load: {path} and {first_path} are not seeds of one run (their flags differ); "
                             "resume them separately")
        if ckpt["iteration"] != first["iteration"]:
            raise UsageError(f"--load: {path} is at iteration {ckpt['iteration']}, {first_path} at "
                             f"{first['iteration']}; seeds resumed together must be at the same iteration")
    seeds = [ckpt["config"]["seed"] for _, ckpt in checkpoints]
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--load: two of these checkpoints are of the same seed ({seeds})")
    return seeds


@dataclass
class Flags:
    """Parsed, validated flags: ``values`` (the script's flags), the seeds to train, and for a resumed run its
    checkpoints, one per seed (path, state)."""

    values: argparse.Namespace
    seeds: list[int]
    checkpoints: list[tuple[Path, dict]] = field(default_factory=list)


@dataclass
class Clock:
    """Where a run stands: the next iteration, the iterations since the last evaluation, wall time and training
    time so far (carried over a resume), and when and at which iteration the last checkpoint was written."""

    iteration: int = 0
    steps: int = 0
    wall_offset: float = 0.0
    train_time: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    checkpoint_iteration: int = 0
    checkpoint_time: float = field(default_factory=time.perf_counter)

    def wall_time(self) -> float:
        return self.wall_offset + time.perf_counter() - self.started

    def elapsed(self) -> float:
        """Wall seconds of this command (what --time_limit counts)."""
        return self.wall_time() - self.wall_offset


def restore(trainer: Trainer, checkpoints: list[tuple[Path, dict]], max_iter: int) -> Clock:
    """Load every seed's checkpoint into the trainer and the random state of the first; the clock they stopped at."""
    try:
        for i, (_, state) in enumerate(checkpoints):
            trainer.load_seed_state(i, state)
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise UsageError(f"--load {' '.join(str(p) for p, _ in checkpoints)}: the checkpoint does not fit these "
                         f"networks ({str(err).splitlines()[0]})") from None
    first = checkpoints[0][1]
    set_rng_state(first["rng"], trainer.device)
    if first["iteration"] >= max_iter:
        raise UsageError(f"--load: the run is already at iteration {first['iteration']}; pass --max_iter above "
                         f"{first['iteration']} to continue it")
    interval = first.get("interval")  # a checkpoint written between evaluations (on a signal)
    if interval:
        trainer.sums = {key: torch.stack([state["interval"]["sums"][key] for _, state in checkpoints]).to(
            trainer.device).reshape(-1) for key in interval["sums"]}
    return Clock(iteration=first["iteration"], steps=interval["steps"] if interval else 0,
                 wall_offset=first["wall_time"], train_time=first["train_time"],
                 checkpoint_iteration=first["iteration"])


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.random.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.random.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
