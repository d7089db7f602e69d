"""Stopping training cleanly on Ctrl-C (SIGINT) or SIGTERM.

While :func:`stop_on_signals` is active, the first SIGINT or SIGTERM only records itself; the
training loop checks :func:`requested` after every step, writes its checkpoint there and raises
:class:`Stopped`, which the command line turns into one line and exit status 128 + the signal
(130 for SIGINT, 143 for SIGTERM). A second signal stops at once (Python's default behaviour).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

_received: list[int] = []


class Stopped(Exception):
    """Training stopped at a safe point on a signal; its checkpoint is written."""

    def __init__(self, signum: int, epoch: int, step: int, checkpoint: Path | None) -> None:
        self.signum, self.epoch, self.step, self.checkpoint = signum, epoch, step, checkpoint
        name = signal.Signals(signum).name
        where = "its checkpoint is written" if checkpoint else "no checkpoint could be written"
        super().__init__(f"{name}: stopped at epoch {epoch}, step {step}; {where}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def requested() -> int | None:
    """The signal received since :func:`stop_on_signals` began, if any."""
    return _received[0] if _received else None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Record the first SIGINT/SIGTERM instead of dying (see the module docstring)."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def record(signum: int, _frame: FrameType | None) -> None:
        if _received:  # the second one: stop now
            signal.signal(signum, previous[signal.Signals(signum)])
            signal.raise_signal(signum)
        _received.append(signum)

    try:
        for s in previous:
            signal.signal(s, record)
    except ValueError:  # not the main thread: leave the handlers alone
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _received.clear()
