"""Shared helpers: run an entry script as a user would (a subprocess in the repo root)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Small networks and sample counts so an end-to-end run takes a few seconds on 2 CPU cores.
TINY = ["--width", "32", "--depth", "2", "--batch_size", "64", "--eval_samples", "400", "--no_progress"]


def run_script(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture
def tiny():
    return list(TINY)
