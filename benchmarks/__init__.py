"""Benchmarks of the training step (bench_step.py), of whole runs (bench_wall.py) and of two modes' curves
(equality_study.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def write_results(path: str | Path, script: str, argv: list[str] | None, rows: list[dict], **header) -> Path:
    """Write ``{**header, "command": ..., "rows": rows}`` as JSON to ``path`` (folders made as needed), the command
    being ``python benchmarks/<script>`` with the given arguments (default: this process's), and say so."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", f"benchmarks/{script}", *(argv or sys.argv[1:])])
    out.write_text(json.dumps({**header, "command": command, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return out
