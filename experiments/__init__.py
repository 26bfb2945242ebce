"""Experiments and the closed-form problems they (and the tests) use."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def write_result(script: str, argv: list[str] | None, out: str | Path, result: dict) -> dict:
    """Write an experiment's ``result`` to the JSON file ``out`` (making its folder), headed by the command that
    produced it (``experiments/<script>`` and its arguments: ``argv``, or the command line's); returns what was
    written."""
    result = {"command": f"experiments/{script} " + " ".join(argv if argv is not None else sys.argv[1:]), **result}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return result
