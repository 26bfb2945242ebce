"""The two kinds of error a run reports as one line instead of a traceback.

``UsageError``: bad input (a flag, a file the user named); the entry point exits with 2. ``RunIOError``: a
run-time I/O failure (a full disk, a folder that became unwritable mid-run); the entry point exits with 1 and the
message names what is kept. Core modules raise them; only the entry points (``utils.cli.exit_on_usage_error``)
turn them into exit codes.
"""
from __future__ import annotations


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit code 2, never as a traceback."""


class RunIOError(Exception):
    """A run-time I/O failure: reported as one line on stderr (saying what is kept) with exit code 1."""
