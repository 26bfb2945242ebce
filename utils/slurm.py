"""``run_grid.py --launcher slurm``: a recipe's jobs as one SLURM job array, through submitit.

Each array task runs the command the local launcher runs for its method and seed block (``run_grid.job_command``,
what ``--dry_run`` prints), continuing the block's run folders when they exist. Time limits and preemption use
submitit's own mechanism: SLURM signals the task (``--signal=USR2@<slurm_signal_delay>`` before the time limit,
or a preemption), submitit calls ``GridTask.checkpoint``, which stops the training process with SIGTERM (it saves
every seed at the current iteration and exits 143), and submitit requeues the task with itself; the requeued
task finds the folders and continues them with ``--load``, ending where an uninterrupted run ends. A task that
SLURM itself requeues (``scontrol requeue``, which sends SIGTERM to every process of the job) continues the
same way. The training process ignores SIGUSR2, which is the task's to act on.

submitit is optional (``pip install submitit``); without it ``--launcher slurm`` is a one-line error.
"""
from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from utils.errors import UsageError


def require_submitit():
    """The submitit module, or a UsageError saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise UsageError("--launcher slurm needs submitit: pip install submitit (or pip install -r "
                         "requirements-test.txt)") from None
    return submitit


def _ignore_usr2() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def wait_for(process: subprocess.Popen) -> int:
    """The process's exit code, polled: a blocking Popen.wait holds a lock that the signal handler (which runs
    ``checkpoint`` in the same thread) would wait on for ever."""
    while (code := process.poll()) is None:
        time.sleep(0.2)
    return code


@dataclass
class GridTask:
    """One array task: ``method``'s ``seeds`` of ``recipe`` to ``max_iter`` in ``out_dir`` (absolute), with the
    extra training flags ``extra``. Called in the task's process; returns the training command's exit code (0)
    or raises when it failed."""

    recipe: str
    method: str
    seeds: str
    max_iter: int
    out_dir: str
    extra: list[str] = field(default_factory=list)

    def command(self) -> list[str] | None:
        from run_grid import job_command  # the local launcher's commands, with --load when folders exist
        return job_command(self.recipe, self.method, self.seeds, self.max_iter, Path(self.out_dir), self.extra,
                           resume=True)

    def __call__(self) -> int:
        cmd = self.command()
        if cmd is None:
            print(f"{self.method} (seeds {self.seeds}): already at --max_iter {self.max_iter}", flush=True)
            return 0
        print(" ".join(cmd), flush=True)
        self._process = subprocess.Popen(cmd, preexec_fn=_ignore_usr2)
        code = wait_for(self._process)
        if code != 0:
            raise RuntimeError(f"{self.method} (seeds {self.seeds}): the training command exited with {code}")
        return code

    def checkpoint(self) -> object:
        """submitit's hook on the time-limit or preemption signal: let the training save and stop, then requeue
        this task (which resumes its folders)."""
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            wait_for(process)
        submitit = require_submitit()
        return submitit.helpers.DelayedSubmission(dataclasses.replace(self))  # a fresh task: no process yet


@dataclass(frozen=True)
class SlurmOptions:
    """The sbatch settings of ``run_grid.py``'s --slurm_* flags."""

    partition: str | None
    gpus_per_task: int
    time_minutes: int
    cpus_per_task: int
    signal_delay_s: int
    sbatch: tuple[str, ...]  # extra sbatch options, as "--key=value" or "--flag"

    def check(self) -> None:
        if self.gpus_per_task < 0 or self.cpus_per_task < 1 or self.time_minutes < 1 or self.signal_delay_s < 1:
            raise UsageError("--slurm_gpus_per_task must be >= 0, --slurm_cpus_per_task, --slurm_time and "
                             "--slurm_signal_delay >= 1")
        for option in self.sbatch:
            if not option.startswith("--") or len(option) < 3:
                raise UsageError(f"--slurm_sbatch {option!r}: give sbatch options as --key=value or --flag")

    def additional(self) -> dict:
        pairs = [option[2:].split("=", 1) for option in self.sbatch]
        return {kv[0]: (kv[1] if len(kv) == 2 else True) for kv in pairs}


def submit(tasks: list[GridTask], log_dir: Path, options: SlurmOptions, job_name: str):
    """Submit ``tasks`` as one job array; returns submitit's jobs (one per task, in order)."""
    submitit = require_submitit()
    executor = submitit.SlurmExecutor(folder=log_dir / "%j", python=sys.executable)
    executor.update_parameters(job_name=job_name, time=options.time_minutes, cpus_per_task=options.cpus_per_task,
                               signal_delay_s=options.signal_delay_s, additional_parameters=options.additional(),
                               **({"partition": options.partition} if options.partition else {}),
                               **({"gpus_per_node": options.gpus_per_task} if options.gpus_per_task else {}))
    try:
        return executor.submit_array(tasks)
    except Exception as err:  # sbatch refused (no controller, a bad option): its message, one line
        raise UsageError(f"sbatch refused the array: {str(err).strip().splitlines()[-1]}") from None


def wait(jobs, tasks: list[GridTask]) -> int:
    """Block until every task ends; one line per task with its state; 0 when every task succeeded, else 1."""
    failed = 0
    for job, task in zip(jobs, tasks):
        try:
            job.result()
            state = "done"
        except Exception as err:  # the task raised, or SLURM ended it
            failed += 1
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            state = f"FAILED ({lines[0][:200] if lines else type(err).__name__})"
        print(f"{state} {task.method} seeds {task.seeds} (job {job.job_id})", flush=True)
    return 1 if failed else 0
