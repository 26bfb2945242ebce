"""Benchmarks of the training step (bench_step.py), of whole runs (bench_wall.py), of two modes' curves
(equality_study.py) and of a teacher's samples (teacher_quality.py)."""
from __future__ import annotations

from utils.errors import UsageError


def chosen_methods(flag: str, known) -> list[str]:
    """The comma-separated rows a --methods flag names, each one of ``known`` (a name it lacks is a UsageError)."""
    methods = flag.split(",")
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise UsageError(f"--methods {','.join(unknown)}: unknown; pick from {', '.join(known)}")
    return methods
