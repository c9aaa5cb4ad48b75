"""Hostile files for the hardening tests: named pipes, and a guard that turns a call
blocked on one into a test failure instead of a hung test session."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# Far beyond what any of the guarded calls needs; it only bounds a call that is stuck.
HANG_GUARD_S = 30.0


def make_fifo(path: Path) -> Path:
    """A named pipe at `path` (its parent folders made), nobody writing to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.mkfifo(path)
    return path


def _unplug(fifo: Path) -> None:
    """Release a reader blocked on `fifo`: open its write end and close it (EOF)."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def call_unblocked(fn: Callable[[], T], fifos: Iterable[Path] = ()) -> T:
    """`fn()`, which must not block on the named pipes `fifos`.

    The call runs in a thread; if it has not returned after HANG_GUARD_S, every pipe is
    given an end of file (so the thread can finish) and the test fails as "blocked".
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # handed to the test thread below
            error.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    if thread.is_alive():
        for _ in range(50):
            for fifo in fifos:
                _unplug(fifo)
            thread.join(0.1)
            if not thread.is_alive():
                break
        raise AssertionError(f"blocked on a named pipe: {[str(f) for f in fifos]}")
    if error:
        raise error[0]
    return result[0]
