"""Did repeated runs log the same numbers? Compares the metrics.csv of run folders, every pair, on every column but
the clock (``wall_time``, ``train_time``), value for value as written (so "identical" means to the last bit of the
float32 metrics).

    python experiments/compare_runs.py results/gpu_repro/di_A_seed0 results/gpu_repro/di_B_seed0 results/gpu_repro/di_C_seed0

One line per pair: ``identical at all N evaluations``, or the first iteration where they differ with both runs'
log density there, or that one stopped earlier (identical on the evaluations both have). A last row that a running
or killed run left half-written is left out, with a warning, so such a run reads as one that stopped earlier. Exit
code 0 when every pair is identical on every evaluation both have and both have the same number, 1 otherwise (as
``cmp``); 2 for a folder without metrics.csv.
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

from utils.cli import Parser, UsageError, exit_on_usage_error
from utils.run_io import read_metric_rows

CLOCK_COLUMNS = ("wall_time", "train_time")


def read_metrics(folder: Path) -> list[dict]:
    """The complete rows of ``folder/metrics.csv`` (each a dict column -> text), the clock columns removed."""
    path = Path(folder) / "metrics.csv"
    if not path.is_file():
        raise UsageError(f"{folder}: no metrics.csv; give run folders (e.g. results/gpu_repro/di_A_seed0)")
    return [{k: v for k, v in row.items() if k not in CLOCK_COLUMNS} for row in read_metric_rows(path)]


def compare(a: list[dict], b: list[dict]) -> tuple[bool, str]:
    """(same, description) of two runs' metric rows: same is True only when the runs have equally many rows and
    every row is equal."""
    for row_a, row_b in zip(a, b):
        if row_a != row_b:
            return False, (f"differ from iteration {row_a.get('iteration')} "
                           f"(log density {row_a.get('logpd')} against {row_b.get('logpd')})")
    if len(a) != len(b):
        return False, f"identical on the {min(len(a), len(b))} evaluations both have; {len(a)} against {len(b)} rows"
    return True, f"identical at all {len(a)} evaluations"


@exit_on_usage_error
def main(argv: list[str] | None = None) -> int:
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", help="run folders holding metrics.csv (at least two)")
    a = p.parse_args(argv)
    if len(a.folders) < 2:
        raise UsageError("give at least two run folders to compare")
    runs = {folder: read_metrics(Path(folder)) for folder in a.folders}
    all_same = True
    for x, y in itertools.combinations(a.folders, 2):
        same, text = compare(runs[x], runs[y])
        all_same &= same
        print(f"{Path(x).name} vs {Path(y).name}: {text}")
    return 0 if all_same else 1


if __name__ == "__main__":
    sys.exit(main())
