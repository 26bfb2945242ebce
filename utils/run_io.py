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

import argparse
import csv
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # type hints only: run_io does not depend on the training code
    from utils.resume import Clock
    from utils.step import Trainer

from utils.errors import RunIOError, UsageError
from utils.interrupt import deferred

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


def write_result(path: str | Path, script: str, argv: list[str] | None, result: dict) -> dict:
    """Write a benchmark's or experiment's ``result`` as JSON to ``path`` (folders made as needed), headed by the
    command that produced it (``python <script>`` and ``argv``, by default this process's arguments), and say so.
    Returns what was written."""
    result = {"command": " ".join(["python", script, *(sys.argv[1:] if argv is None else argv)]),
              "date": time.strftime("%Y-%m-%d", time.gmtime()), **result}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return result


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
        if self.history:
            self._write_lists()

    def _rewrite_csv(self) -> None:
        with open(self.run_dir / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, restval="nan")
            writer.writeheader()
            writer.writerows(self.history)

    def append(self, row: dict) -> None:
        """Add one evaluation's row; a write that fails (a full disk, a folder made unwritable) is a RunIOError
        naming what is kept: the rows written so far and the last checkpoint."""
        try:
            self._append(row)
        except OSError as err:
            raise RunIOError(f"could not write the metrics of {self.run_dir} at iteration {row.get('iteration')} "
                             f"({err.strerror or err}); the rows before it and checkpoints/last.pt are kept; fix the "
                             "folder and continue with --load") from None

    def _append(self, row: dict) -> None:
        self.history.append(row)
        columns = metric_columns(self.history)
        if columns != self.columns:
            self.columns = columns
            self._rewrite_csv()
        else:
            with open(self.run_dir / "metrics.csv", "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns, restval="nan").writerow(row)
        self._write_lists()

    def _write_lists(self) -> None:
        """lists/*.json: the reference code's per-evaluation lists, from the rows."""
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
    """torch.save to a temporary file, then rename: the previous checkpoint survives a crash mid-write."""
    save_checkpoints([(path, state)])


def save_checkpoints(files: list[tuple[Path, dict]]) -> None:
    """Write several checkpoints as one: every temporary file first, then every rename, with stop signals held
    back meanwhile (``utils.interrupt.deferred``), so that all of them change together or none does. A failed
    write (a full disk, say) removes the temporary files and is a RunIOError naming what remains."""
    with deferred():
        written = []
        try:
            for path, state in files:
                tmp = path.with_suffix(path.suffix + ".tmp")
                written.append(tmp)
                torch.save(state, tmp)
        except (OSError, RuntimeError) as err:  # torch's zip writer reports a full disk as a RuntimeError
            for tmp in written:
                tmp.unlink(missing_ok=True)
            path = files[len(written) - 1][0]
            kept = f"the previous {path.name} is kept" if path.exists() else "no earlier checkpoint exists"
            reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
            raise RunIOError(f"could not write the checkpoint {path} ({reason}); {kept}. Free some space and "
                             "continue with --load") from None
        for (path, _), tmp in zip(files, written):
            os.replace(tmp, path)


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


# ----------------------------------------------------------------------------------------------------------------
# The run folders of one training command

def device_name(device: torch.device) -> str:
    """What the run's wall time was measured on: the GPU's model ("NVIDIA H100 80GB HBM3") for a CUDA device, else
    "cpu". Recorded per command in config.json, since a run resumed over several commands may change machines."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def default_run_name(prefix: str, flags: argparse.Namespace, seed: int) -> str:
    """prefix_target[_dD][_score][_weight]_seedN, e.g. vardiu_gaussian_mog40_true_score_sigma2_seed0 (the dimension
    is named when it is not 2: vardiu_gaussian_mog40_d8_true_score_uniform_seed0)."""
    parts = [prefix, flags.target] + ([f"d{flags.dim}"] if getattr(flags, "dim", 2) != 2 else [])
    if hasattr(flags, "true_score"):
        parts.append("true_score" if flags.true_score else f"{flags.teacher}_teacher")
    if hasattr(flags, "weight"):
        parts.append(flags.weight)
    return "_".join(parts + [f"seed{seed}"])


@dataclass
class SeedRun:
    """One seed's run folder and its logs (a vectorised run has one per seed)."""

    index: int
    seed: int
    run_dir: Path
    config: dict
    log: MetricsLog
    loggers: ExternalLoggers
    # This seed's wall and training time minus the shared clock's: nonzero only for seeds resumed together after
    # being resumed apart, so that each goes on counting its own.
    wall_offset: float = 0.0
    train_offset: float = 0.0
    lock: Any = None  # the open lock file that makes this process the folder's one writer (``lock_run_folder``)

    def times(self, clock: Clock) -> dict:
        """This seed's ``wall_time`` and ``train_time`` (seconds) on the shared clock."""
        return {"wall_time": clock.wall_time() + self.wall_offset, "train_time": clock.train_time + self.train_offset}


def earlier_segments(checkpoint: dict, segment_keys: list[str]) -> list[dict]:
    """The earlier commands of a resumed run, oldest first, for its config.json: the checkpoint's own list plus the
    command that wrote the checkpoint (its ``segment_keys`` values and ``until_iteration``, the checkpoint's
    iteration, where this command takes over). So a run that went over several commands records each one's device,
    --mode and --time_limit, not only the last one's."""
    config = checkpoint["config"]
    last = {key: config.get(key) for key in segment_keys} | {"until_iteration": checkpoint["iteration"]}
    return config.get("segments", []) + [last]


LOCK_FILE = ".lock"


def lock_run_folder(run_dir: Path) -> Any:
    """Make this process the one writer of ``run_dir``: an exclusive flock on run_dir/.lock, held while the file
    stays open and released by the system however the process ends (a lock left by a dead process is no lock).
    The file names its holder. A folder another process holds is a UsageError naming it. Returns the open file
    (None where the system has no flock)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None
    handle = open(run_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise UsageError(f"{run_dir} is in use by {holder}; one process writes a run folder at a time: wait for "
                         "it to end, or stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
    handle.flush()
    return handle


def release_run_folders(runs: list[SeedRun]) -> None:
    """Give up the run folders' locks (the process's end does the same)."""
    for run in runs:
        if run.lock is not None:
            run.lock.close()
            run.lock = None


def reached_iteration(run_dir: Path, last_pt_iteration: int | None = None) -> int:
    """The furthest iteration a run folder records: its last metrics row or its last.pt, whichever is later
    (``last_pt_iteration``: last.pt's iteration when the caller has loaded it already)."""
    reached = 0
    try:
        rows = read_metric_rows(run_dir / "metrics.csv")
        reached = int(float(rows[-1]["iteration"])) if rows else 0
    except (OSError, ValueError, KeyError, UsageError):
        pass
    last = run_dir / "checkpoints" / "last.pt"
    if last_pt_iteration is not None:
        reached = max(reached, last_pt_iteration)
    elif last.is_file():
        try:
            reached = max(reached, int(torch.load(last, map_location="cpu", weights_only=True)["iteration"]))
        except Exception:  # a damaged last.pt: the rows decide
            pass
    return reached


def check_rewind(path: Path, state: dict, run_dir: Path, rewind: bool) -> None:
    """Resuming ``run_dir`` from checkpoint ``path`` older than what the folder has reached drops the later rows:
    refused (UsageError) unless ``rewind``, which says what it cuts."""
    at = int(state["iteration"])
    is_last = path.resolve() == (run_dir / "checkpoints" / "last.pt").resolve()  # then it is loaded already
    reached = reached_iteration(run_dir, at if is_last else None)
    if at >= reached:
        return
    if not rewind:
        raise UsageError(f"--load {path}: that checkpoint is at iteration {at:,}, but {run_dir} has reached "
                         f"{reached:,}; to continue the run load {run_dir} (its last.pt), or add --rewind to go back "
                         f"to {at:,} (metrics.csv and lists/ are cut there)")
    print(f"--rewind: {run_dir} goes back from iteration {reached:,} to {at:,}; metrics.csv and lists/ are cut "
          f"there, and its numbered checkpoints after {at:,} are replaced as the run reaches them again",
          file=sys.stderr)


def open_run_folders(values: argparse.Namespace, seeds: list[int], checkpoints: list[tuple[Path, dict]],
                     script: str, run_prefix: str, device: torch.device, segment_keys: list[str]) -> list[SeedRun]:
    """One run folder per seed: a resumed run's own folders (``checkpoints``), or new ones (never reusing a
    folder). Each is locked for this process first (``lock_run_folder``); a resumed folder must not be rewound
    unless --rewind says so (``check_rewind``), and loses the temporary files of a writer that died. Each gets
    config.json (every flag, the resolved device and its model, the torch version, and for a resumed run its
    earlier commands) and its metrics log."""
    runs: list[SeedRun] = []
    locks = []
    try:
        for i, seed in enumerate(seeds):
            wall_offset = train_offset = 0.0
            if checkpoints:
                path, state = checkpoints[i]
                run_dir, history, segments = path.parent.parent, state["history"], earlier_segments(state, segment_keys)
                first = checkpoints[0][1]  # restore() starts the shared clock at the first seed's times
                wall_offset = state["wall_time"] - first["wall_time"]
                train_offset = state["train_time"] - first["train_time"]
                locks.append(lock_run_folder(run_dir))
                check_rewind(path, state, run_dir, getattr(values, "rewind", False))
                for stale in (run_dir / "checkpoints").glob("*.tmp"):
                    stale.unlink()
            else:
                name = run_folder_name(values.name, seed, len(seeds)) if values.name else \
                    default_run_name(run_prefix, values, seed)
                run_dir, history, segments = unique_run_dir(values.out_dir, name), [], []
                locks.append(lock_run_folder(run_dir))
            for sub in ("plots", "checkpoints"):
                (run_dir / sub).mkdir(exist_ok=True)
            config = dict(vars(values), seed=seed, seeds=None, vectorised_seeds=seeds if len(seeds) > 1 else None,
                          script=script, run_dir=str(run_dir), device_resolved=str(device),
                          device_name=device_name(device), torch_version=str(torch.__version__), segments=segments)
            write_json(run_dir / "config.json", config)
            runs.append(SeedRun(i, seed, run_dir, config, MetricsLog(run_dir, history),
                                ExternalLoggers(run_dir, config, values.tensorboard, values.wandb,
                                                values.wandb_project),
                                wall_offset, train_offset, locks[-1]))
    except BaseException:
        for lock in locks:
            if lock is not None:
                lock.close()
        raise
    return runs


def save_run_checkpoints(trainer: Trainer, runs: list[SeedRun], clock: Clock, iteration: int, save_every: int,
                         rng: dict, between_evaluations: bool = False) -> None:
    """checkpoints/last.pt of every seed (and iter_XXXXXXX.pt at multiples of ``save_every``), with the random
    state ``rng``. Written ``between_evaluations`` (on a signal), it also holds the running sums of the logged
    terms and the number of iterations since the last evaluation, so that a resumed run logs what the
    uninterrupted one would."""
    files = []
    for run in runs:
        state = {"iteration": iteration, "config": run.config, "history": run.log.history, "rng": rng,
                 **trainer.seed_state(run.index), **run.times(clock)}
        if between_evaluations:
            state["interval"] = {"steps": clock.steps,
                                 "sums": {k: v[run.index].detach().cpu().clone() for k, v in trainer.sums.items()}}
        files.append((run.run_dir / "checkpoints" / "last.pt", state))
        if save_every and iteration % save_every == 0 and iteration > 0:
            files.append((run.run_dir / "checkpoints" / f"iter_{iteration:07d}.pt", state))
    save_checkpoints(files)
    clock.checkpoint_iteration, clock.checkpoint_time = iteration, time.perf_counter()
