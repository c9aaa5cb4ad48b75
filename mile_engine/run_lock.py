"""The two locks of a run folder: one writer at a time, and "a trainer is live here".

Writers (the run's checkpointer) and editors (prune, delete) of one folder serialise on
an advisory lock file; a running trainer also holds a second lock for its whole life, so
that tools can tell a live run from a finished or killed one. The kernel releases both
when their process dies, however it dies.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from mile_engine.checkpoint_files import RunBusyError

try:  # POSIX advisory locks; on other systems the locks are no-ops.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".checkpoints.lock"
ACTIVE_FILE = ".active.lock"


@contextlib.contextmanager
def run_lock(run_dir: Path, timeout: float = 60.0) -> Iterator[None]:
    """Hold the run folder's edit lock: one saver, pruner or deleter at a time.

    Raises:
        RunBusyError: when another process holds it for longer than `timeout` seconds.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fh = (Path(run_dir) / LOCK_FILE).open("a+b")
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RunBusyError(
                        f"{run_dir}: another process is editing this run's checkpoints; "
                        "try again later."
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        fh.close()  # closing the descriptor releases the lock


def run_is_active(run_dir: Path) -> bool:
    """Whether a live trainer (in any process) is writing into `run_dir`.

    A killed trainer's lock is released by the kernel, so this never reports a dead run.
    """
    path = Path(run_dir) / ACTIVE_FILE
    if fcntl is None or not path.exists():
        return False
    with path.open("a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False



def hold_active(run_dir: Path) -> IO[bytes] | None:
    """Take the run's "active" lock for a trainer; closing the file releases it.

    None where the system has no advisory locks.

    Raises:
        RunBusyError: another process is training in this run folder.
    """
    if fcntl is None:  # pragma: no cover - Windows
        return None
    fh = (Path(run_dir) / ACTIVE_FILE).open("a+b")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise RunBusyError(f"{run_dir}: another process is training in this run folder.") from None
    return fh
