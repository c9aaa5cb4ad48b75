"""Steering a run from outside its process: a request file in the run folder.

A tool (the console, `mile-tui runs pause RUN`) appends one request per line to
`control.request` in the run folder; the trainer looks for the file between steps (one
`stat` when there is none), takes it by renaming it, applies each request to its
`Control` in order, deletes it, and acknowledges each with a `Steered` event, which
reaches metrics.jsonl, so a watcher sees it. Under torchrun only rank 0 reads the file;
the ranks agree on what it asked through the same collective as for Ctrl-C.

Only the owner of the run folder can steer it: the request file is created in the folder
with the folder's own permission bits, and a sender who does not own the folder, or whose
folder has no owner write permission, is refused with a `SteeringError`.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Literal, cast, get_args

from mile_engine.runstore.layout import METRICS_FILE, REQUEST_FILE, SETTINGS_FILE, TAKEN_PREFIX
from mile_engine.runstore.lock import active_holder

Request = Literal["pause", "resume", "stop", "save"]
REQUESTS: tuple[Request, ...] = get_args(Request)


class SteeringError(Exception):
    """A request that cannot be sent: not a run folder, not running, or not permitted."""


def send_request(run_dir: Path, request: Request) -> None:
    """Ask the live trainer of `run_dir` to pause, resume, stop or save now.

    The request is one line appended to the folder's request file in a single write (a
    concurrent sender never interleaves with it); the file is created with the folder's
    permission bits, so an owner-only folder gets an owner-only request file.

    Raises:
        SteeringError: `run_dir` is not a run folder, no trainer is running in it, the
            caller does not own it or it is not writable, or the request is unknown.
    """
    if request not in REQUESTS:
        raise SteeringError(f"unknown request {request!r}; use one of {', '.join(REQUESTS)}.")
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not any(
        (run_dir / name).is_file() for name in (SETTINGS_FILE, METRICS_FILE)
    ):
        raise SteeringError(f"{run_dir}: not a run folder.")
    if active_holder(run_dir) is None:
        raise SteeringError(f"{run_dir}: not running (no trainer holds this run folder).")
    folder = run_dir.stat()
    if folder.st_uid != os.geteuid() or not folder.st_mode & stat.S_IWUSR:
        raise SteeringError(
            f"{run_dir}: not permitted: only the run folder's owner can steer it, and the "
            "folder must be writable by its owner."
        )
    mode = stat.S_IMODE(folder.st_mode) & 0o666  # the folder's bits, minus execute
    path = run_dir / REQUEST_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed the creation mode
            os.write(fd, f"{request}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise SteeringError(f"{path}: cannot write the request: {exc.strerror or exc}.") from None


class RequestPoller:
    """The trainer's side: takes the requests found in the run folder between steps."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / REQUEST_FILE
        # A request left over from an earlier process of this run (sent as it ended) is
        # not meant for this one.
        with contextlib.suppress(OSError):
            self.path.unlink()

    def poll(self) -> list[Request]:
        """The requests sent since the last call, oldest first ([] costs one stat)."""
        try:
            os.stat(self.path)
        except OSError:
            return []
        taken = self.path.with_name(f"{TAKEN_PREFIX}{os.getpid()}")
        try:
            # Renamed before reading: a request appended from now on starts a new file.
            os.replace(self.path, taken)
            text = taken.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        finally:
            with contextlib.suppress(OSError):
                taken.unlink()
        words = (line.strip() for line in text.splitlines())
        return [cast(Request, word) for word in words if word in REQUESTS]
