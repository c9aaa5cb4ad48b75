"""The two locks of a run folder: one writer at a time, and "a trainer is live here".

Writers (the run's checkpointer) and editors (prune, delete) of one folder serialise on
an advisory lock file; a running trainer also holds a second lock for its whole life, so
that tools can tell a live run from a finished or killed one. The kernel releases both
when their process dies, however it dies.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

try:  # POSIX advisory locks; on other systems the locks are no-ops.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from mile_engine.runstore.layout import ACTIVE_FILE, LOCK_FILE


@contextlib.contextmanager
def run_lock(run_dir: Path, timeout: float = 60.0) -> Iterator[None]:
    """Hold the run folder's edit lock: one saver, pruner or deleter at a time.

    Raises:
        RunBusyError: when another process holds it for longer than `timeout` seconds.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    # Imported here: reading a run's status (the runs list) must not load torch.
    from mile_engine.runstore.files import RunBusyError

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
    return active_holder(run_dir) is not None


def active_holder(run_dir: Path) -> tuple[str, int] | None:
    """(host, pid) of the live trainer of `run_dir`, or None when no trainer holds it.

    The holder writes "host pid" into the lock file when it takes the lock, so this is
    read without taking it for more than an instant, and needs only read permission (a
    shared lock on a read-only descriptor). A live lock whose file says nothing readable
    yet (the holder is between taking the lock and writing its name) gives ("", 0).
    """
    path = Path(run_dir) / ACTIVE_FILE
    if fcntl is None or not path.exists():
        return None
    try:
        fh = path.open("rb")
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return parse_holder(fh.read(256).decode("utf-8", errors="replace"))
    return None


def parse_holder(text: str) -> tuple[str, int]:
    """The (host, pid) written in an active lock file: "host pid"; ("", 0) if unreadable."""
    host, _, pid = text.strip().rpartition(" ")
    try:
        return host, int(pid)
    except ValueError:
        return "", 0


def hold_active(run_dir: Path) -> IO[bytes] | None:
    """Take the run's "active" lock for a trainer; closing the file releases it.

    None where the system has no advisory locks.

    Raises:
        RunBusyError: another process is training in this run folder.
    """
    if fcntl is None:  # pragma: no cover - Windows
        return None
    from mile_engine.runstore.files import RunBusyError

    fh = (Path(run_dir) / ACTIVE_FILE).open("a+b")
    if not _try_exclusive(fh, patience=0.5):
        fh.close()
        holder = active_holder(run_dir)
        who = f" ({holder[0]} pid {holder[1]})" if holder and holder[1] else ""
        raise RunBusyError(
            f"{run_dir}: another process is training in this run folder{who}."
        ) from None
    # Who holds it, for tools that read the folder without taking the lock (the runs list).
    with contextlib.suppress(OSError):
        fd = fh.fileno()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)
    return fh


def _try_exclusive(fh: IO[bytes], patience: float) -> bool:
    """Take an exclusive lock on `fh`, trying for up to `patience` seconds: a reader of the
    runs list holds a shared lock for an instant, which must not look like a live run."""
    assert fcntl is not None
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
