"""One writer per run folder: an exclusive lock held while a process trains, resumes or evaluates
the run.

The lock is ``fcntl.flock`` on ``RUN/.lock``: the operating system releases it when the holder
ends, however it ends (a ``kill -9`` leaves no stale lock). The file also names its holder — pid,
host, start time, command — so a second writer is refused with one line that says who holds it.
A folder the lock had to create is removed again if the work inside fails before writing
anything else (bad input leaves nothing behind).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOCK = ".lock"

#: folders this process holds (the lock is re-entrant within a process)
_HELD: set[Path] = set()


class RunBusy(ValueError):
    """Another process holds the run folder."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {started}"


def _busy(folder: Path, path: Path) -> RunBusy:
    return RunBusy(
        f"{folder} is in use by {_holder(path)}: wait for it to finish, or choose another --out"
    )


def check_free(folder: Path) -> None:
    """RunBusy if another process holds ``folder`` now (checked before the folder's state is
    judged: a live run is not an interrupted one)."""
    folder = Path(folder).resolve()
    path = folder / LOCK
    if folder in _HELD or not path.is_file():
        return
    with open(path) as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(folder, path) from None


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock for the block (creating the folder if needed); RunBusy at once if
    another process holds it."""
    folder = Path(folder).resolve()
    if folder in _HELD:
        yield
        return
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    handle = open(path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunBusy(
            f"{folder} is in use by {_holder(path)}: wait for it to finish, or choose another --out"
        ) from None
    handle.seek(0)
    handle.truncate()
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "command": " ".join(sys.argv)[:500],
    }
    handle.write(json.dumps(holder))
    handle.flush()
    _HELD.add(folder)
    try:
        yield
    except BaseException:
        if created and [p.name for p in folder.iterdir()] == [LOCK]:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        _HELD.discard(folder)
        handle.close()  # releases the lock
