"""Stop signals (SIGINT: Ctrl-C; SIGTERM: what schedulers send before killing a job) from a script's first line.

Three phases, one handler:

1. An entry script run as a program calls ``install()`` before its other imports (torch takes seconds). Until its
   entry point starts (``exit_on_usage_error``) nothing has been written: a signal prints one line and exits
   128 + its number.
2. Inside the entry point, until the training loop takes over, a signal raises ``Interrupted`` wherever the
   program is; whoever made run folders removes the new ones on the way out (``utils.run_io.open_run_folders``),
   and the entry point turns it into one line and exit 128 + its number.
3. While the loop trains (``StopSignals``), the first signal only asks the loop to save and stop after the current
   iteration; a second one exits at once, except inside ``deferred()`` (a checkpoint write of every seed, and a new
   run's start until its first checkpoint), which it lets finish first, so every seed's last.pt stays at one
   iteration, no temporary file is left and no run folder lacks a checkpoint.

Standard library only, so that importing it costs nothing.
"""
from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from typing import Iterator

NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class Interrupted(BaseException):
    """A stop signal that arrived before the training loop could take it (a BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(NAMES.get(signum, str(signum)))
        self.signum = signum

    @property
    def name(self) -> str:
        return NAMES.get(self.signum, str(self.signum))


class _State:
    started = False      # phase 2 or later: raise Interrupted instead of exiting at once
    loop = None          # the StopSignals of phase 3, while the loop trains
    critical = 0         # depth of deferred() sections
    pending = 0          # a signal that arrived inside one, acted on at its end


def _handle(signum: int, frame) -> None:
    loop = _State.loop
    if loop is not None and not loop.signal:
        loop.signal = signum  # the first: the loop saves and stops after the current iteration
        return
    if _State.critical:
        _State.pending = _State.pending or signum
        return
    if loop is not None:
        loop.exit_again(signum)
    if not _State.started:
        prog = os.path.basename(sys.argv[0]) or "vardiu"
        print(f"{prog}: {NAMES.get(signum, signum)} received while starting: stopped, nothing was written",
              file=sys.stderr)
        os._exit(128 + signum)
    raise Interrupted(signum)


def install() -> dict:
    """Route SIGINT and SIGTERM to this module's handler (main thread only: elsewhere Python cannot). Returns the
    handlers it replaced, for ``uninstall``."""
    previous = {}
    try:
        for signum in NAMES:
            previous[signum] = signal.signal(signum, _handle)
    except ValueError:
        pass
    return previous


def uninstall(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@contextmanager
def started() -> Iterator[None]:
    """An entry point runs: inside, a signal raises ``Interrupted`` until a loop takes it; afterwards the handlers
    that were there before come back."""
    previous, _State.started = install(), True
    try:
        yield
    finally:
        _State.started = False
        uninstall(previous)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold back an immediate exit until the block ends (a checkpoint write of every seed); a signal that came in
    meanwhile then acts as it would have."""
    _State.critical += 1
    try:
        yield
    finally:
        _State.critical -= 1
        if not _State.critical and _State.pending:
            signum, _State.pending = _State.pending, 0
            _handle(signum, None)


def stop_requested() -> bool:
    """Whether a stop signal has asked the training loop to save and stop."""
    return bool(_State.loop is not None and _State.loop.signal)


class StopSignals:
    """While a run trains: ``signal`` holds the first stop signal's number (0: none), which asks the loop to save
    and stop after the current iteration; a second one exits at once (outside ``deferred()``). ``restore`` hands
    signals back to the entry point's handling."""

    def __init__(self):
        self.signal = 0
        self._previous = install()
        _State.loop = self

    @property
    def name(self) -> str:
        return NAMES.get(self.signal, str(self.signal))

    @staticmethod
    def exit_again(signum: int) -> None:
        print(f"\n{NAMES.get(signum, signum)} received again: exiting at once (the last checkpoint stays)",
              file=sys.stderr)
        raise SystemExit(128 + signum)

    def restore(self) -> None:
        if _State.loop is self:
            _State.loop = None
        uninstall(self._previous)
        self._previous = {}
