"""Run folders: unique creation, config, metrics (CSV + the reference repo's JSON lists), checkpoints, loggers.

Layout of a run folder::

    config.json                 every flag and derived setting of the run (after a --load: this command's, and
                                under "segments" what each earlier command set that a resume may change)
    metrics.csv                 one row per evaluation: METRIC_COLUMNS, the scalars the method's losses return (means
                                since the previous evaluation), power
    lists/logpd_list.json       the reference repo's lists: log density, MMD, training time per evaluation
    lists/MMD_list.json
    lists/time_list.json
    plots/samples_XXXXXXX.png   generator samples over the target's contours
    plots/metrics.png           log density and log MMD against iterations
    checkpoints/last.pt         latest good checkpoint (written atomically after each evaluation)
    checkpoints/iter_XXXXXXX.pt numbered checkpoints every --save_every iterations
    samples.npy                 the samples the last metrics row was computed on
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from utils.cli import UsageError

# The columns every metrics.csv starts with; the method's logged scalars follow, and "power" comes last.
METRIC_COLUMNS = ["iteration", "wall_time", "train_time", "logpd", "mmd", "log_mmd", "modes", "near_mode"]
REQUIRED_CHECKPOINT_KEYS = {"iteration", "config", "modules", "optimizers", "rng", "history"}


def run_folder_name(name: str, seed: int, num_seeds: int) -> str:
    """The folder a run given --name gets for ``seed``: the name itself when it trains one seed, ``<name>_seed<N>``
    for each seed of a vectorised run."""
    return name if num_seeds == 1 else f"{name}_seed{seed}"


def unique_run_dir(out_dir: str | Path, name: str) -> Path:
    """Create and return out_dir/name, or out_dir/name_1, name_2, ... if taken: never reuse a folder."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for k in range(10_000):
            path = out_dir / (name if k == 0 else f"{name}_{k}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as err:
        raise UsageError(f"cannot create a run folder in {out_dir} ({err.strerror or err}); pass another --out_dir") \
            from None
    raise UsageError(f"too many runs named {name!r} in {out_dir}; pass another --name")


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (a reader never sees a half-written file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def metric_columns(rows: list[dict]) -> list[str]:
    """metrics.csv's header for these rows: METRIC_COLUMNS, every other key in order of first appearance, power."""
    extra = dict.fromkeys(k for row in rows for k in row if k not in METRIC_COLUMNS and k != "power")
    return METRIC_COLUMNS + list(extra) + ["power"]


class MetricsLog:
    """The run's evaluation history, mirrored to metrics.csv and lists/*.json after every evaluation. A row may
    bring new columns (the losses' scalars first appear after iteration 0): the CSV is then rewritten whole, and
    earlier rows read nan there."""

    def __init__(self, run_dir: Path, history: list[dict] | None = None):
        self.run_dir = run_dir
        self.history: list[dict] = list(history or [])
        self.columns = metric_columns(self.history)
        (run_dir / "lists").mkdir(exist_ok=True)
        self._rewrite_csv()

    def _rewrite_csv(self) -> None:
        with open(self.run_dir / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, restval="nan")
            writer.writeheader()
            writer.writerows(self.history)

    def append(self, row: dict) -> None:
        self.history.append(row)
        columns = metric_columns(self.history)
        if columns != self.columns:
            self.columns = columns
            self._rewrite_csv()
        else:
            with open(self.run_dir / "metrics.csv", "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns, restval="nan").writerow(row)
        lists = self.run_dir / "lists"
        write_json(lists / "logpd_list.json", [r["logpd"] for r in self.history])
        write_json(lists / "MMD_list.json", [r["mmd"] for r in self.history])
        write_json(lists / "time_list.json", [r["train_time"] for r in self.history])


def read_metric_rows(path: Path) -> list[dict]:
    """The rows of a metrics.csv (each a dict column -> text, as written), without a last row that a running or
    killed writer left half-written (one missing its line end or a field, or with a METRIC_COLUMNS value that is not
    a number), which is left out with a warning on stderr."""
    text = Path(path).read_text()
    rows = list(csv.DictReader(text.splitlines()))
    if rows and (not text.endswith("\n") or not _complete(rows[-1])):
        print(f"warning: {path}: the last row is incomplete (a run still writing, or killed mid-write); it is left "
              "out", file=sys.stderr)
        return rows[:-1]
    return rows


def _complete(row: dict) -> bool:
    """Every field present (csv gives None for a missing one, and a None key for extra ones) and the row's
    METRIC_COLUMNS numbers."""
    if None in row or any(v is None for v in row.values()):
        return False
    try:
        for key in METRIC_COLUMNS:
            if key in row:
                float(row[key])
    except ValueError:
        return False
    return True


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file, then rename: the previous checkpoint survives a crash mid-write. A failed
    write (a full disk, say) removes the temporary file and is a UsageError naming the checkpoint that remains."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch's zip writer reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        kept = f"the previous {path.name} is kept" if path.exists() else "no earlier checkpoint exists"
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise UsageError(f"could not write the checkpoint {path} ({reason}); {kept}. Free some space and "
                         "continue with --load") from None


def checkpoint_path(spec: str | Path) -> Path:
    """The checkpoint file for a --load value: a .pt file, or a run folder (its checkpoints/last.pt)."""
    path = Path(spec)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise UsageError(f"--load {spec}: no checkpoint at {path}; pass a .pt file or a run folder")
    return path


def load_checkpoint(spec: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict]:
    """Load and sanity-check a training checkpoint; a missing or corrupt file is a UsageError."""
    path = checkpoint_path(spec)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise UsageError(f"--load {spec}: {path} is not a readable checkpoint ({type(err).__name__}); "
                         "it may be corrupt or truncated: pick another checkpoint") from None
    if not isinstance(state, dict) or not REQUIRED_CHECKPOINT_KEYS <= state.keys():
        raise UsageError(f"--load {spec}: {path} is not a training checkpoint of this project")
    return path, state


class ExternalLoggers:
    """Optional TensorBoard and Weights & Biases scalar logging (neither is a hard dependency)."""

    def __init__(self, run_dir: Path, config: dict, tensorboard: bool, wandb: bool, project: str):
        self.tb = None
        self.wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UsageError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
            self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError:
                raise UsageError("--wandb needs the wandb package, which is not installed: "
                                 "pip install wandb, or drop --wandb (metrics are in metrics.csv anyway)") from None
            self.wandb = wandb_module.init(project=project, name=run_dir.name, config=config, dir=str(run_dir))

    def log(self, row: dict) -> None:
        step = row["iteration"]
        scalars = {k: v for k, v in row.items()
                   if k != "iteration" and isinstance(v, (int, float)) and math.isfinite(v)}
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(key, value, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
