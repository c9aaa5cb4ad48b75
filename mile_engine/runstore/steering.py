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

The request file must be a plain regular file of at most `MAX_REQUEST_BYTES`. Anything
else at its name (a folder, a named pipe, a symbolic link to `/dev/zero`) is refused by
the sender, and the trainer, which never opens it then, says once in the run's log why it
cannot take requests. A sender may wait for the acknowledgement (`wait_for_ack`), so that
a request nobody takes is a failure, not a silent success.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, cast, get_args

from mile_engine.oserrors import describe_os_error, open_regular, open_regular_fd, read_regular
from mile_engine.runstore.layout import METRICS_FILE, REQUEST_FILE, SETTINGS_FILE, TAKEN_PREFIX
from mile_engine.runstore.lock import active_holder

Request = Literal["pause", "resume", "stop", "save"]
REQUESTS: tuple[Request, ...] = get_args(Request)
# A request is a word a line; a few hundred pending ones are a few KiB.
MAX_REQUEST_BYTES = 64 * 1024
# How long a sender waits for the trainer's acknowledgement by default: a trainer looks
# between every two steps, and while paused every fraction of a second; an evaluation or
# a save in progress delays it.
ACK_TIMEOUT_S = 30.0
ACK_POLL_S = 0.1


class SteeringError(Exception):
    """A request that cannot be sent: not a run folder, not running, or not permitted."""


def send_request(run_dir: Path, request: Request) -> int:
    """Ask the live trainer of `run_dir` to pause, resume, stop or save now.

    The request is one line appended to the folder's request file in a single write (a
    concurrent sender never interleaves with it); the file is created with the folder's
    permission bits, so an owner-only folder gets an owner-only request file.

    Returns the size metrics.jsonl had before the request was sent: where `wait_for_ack`
    looks for its acknowledgement.

    Raises:
        SteeringError: `run_dir` is not a run folder, no trainer is running in it, the
            caller does not own it or it is not writable, the request file is not a
            regular file, or the request is unknown.
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
    since = _size(run_dir / METRICS_FILE)
    try:
        # A plain file only: a named pipe would block this write (or swallow it), a link
        # to a device would take it and tell nobody.
        fd = open_regular_fd(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                             mode)
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed the creation mode
            os.write(fd, f"{request}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise SteeringError(
            f"cannot write the request: {_request_file_problem(exc, path)}; remove it so "
            "that the run can take requests again."
        ) from None
    return since


def _request_file_problem(exc: OSError, path: Path) -> str:
    """Why the request file cannot be used, in plain words, naming it."""
    if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a link
        return f"is a symbolic link, not a regular file: {path}"
    if exc.errno == errno.ENXIO:  # a named pipe nobody reads
        return f"not a regular file (a named pipe): {path}"
    return describe_os_error(exc, path)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def wait_for_ack(
    run_dir: Path, request: Request, since: int, timeout: float = ACK_TIMEOUT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait until the trainer of `run_dir` acknowledges `request`: a `Steered` record for
    it in metrics.jsonl after byte `since` (what `send_request` returned).

    Raises:
        SteeringError: no acknowledgement within `timeout` seconds, or the run ended (or
            lost its trainer) before taking the request.
    """
    path = Path(run_dir) / METRICS_FILE
    deadline = time.monotonic() + timeout
    offset, pending = since, b""
    while True:
        try:
            with open_regular(path) as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            data = b""  # nothing recorded yet
        except OSError as exc:
            raise SteeringError(
                f"{request} sent, but its acknowledgement cannot be read: "
                f"{describe_os_error(exc, path)}."
            ) from None
        offset += len(data)
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if not isinstance(record, dict):
                    continue
                if record.get("event") == "Steered" and record.get("request") == request:
                    return
                if record.get("event") == "RunEnded":
                    raise SteeringError(
                        f"{run_dir}: the run ended ({record.get('status')}) before taking the "
                        f"{request} request."
                    )
        if active_holder(run_dir) is None:
            raise SteeringError(f"{run_dir}: the run stopped before taking the {request} "
                                "request (no trainer holds the folder any more).")
        if time.monotonic() >= deadline:
            raise SteeringError(
                f"{run_dir}: the run did not take the {request} request within "
                f"{timeout:g} s (no acknowledgement in {METRICS_FILE}). A trainer takes "
                "requests between two steps: it may be evaluating, saving or stuck; the "
                f"request stays in {REQUEST_FILE} until it is taken. See the run's log."
            )
        sleep(ACK_POLL_S)


class RequestPoller:
    """The trainer's side: takes the requests found in the run folder between steps.

    `report` hears, once per problem, why a request file cannot be taken (it is not a
    regular file, or too large); the trainer turns that into a warning in its log.
    """

    def __init__(self, run_dir: Path, report: Callable[[str], None] | None = None) -> None:
        self.report = report
        self._reported: tuple[int, int] | None = None  # (inode, mode) last reported
        self.path = Path(run_dir) / REQUEST_FILE
        # A request left over from an earlier process of this run (sent as it ended) is
        # not meant for this one.
        with contextlib.suppress(OSError):
            self.path.unlink()

    def poll(self) -> list[Request]:
        """The requests sent since the last call, oldest first ([] costs one stat)."""
        try:
            st = os.lstat(self.path)  # a link is not followed: to /dev/zero, it reads for ever
        except OSError:
            self._reported = None
            return []
        if not stat.S_ISREG(st.st_mode):
            self._complain(st, f"{_kind(st.st_mode)}, not a regular file")
            return []
        taken = self.path.with_name(f"{TAKEN_PREFIX}{os.getpid()}")
        try:
            # Renamed before reading: a request appended from now on starts a new file.
            os.replace(self.path, taken)
            # Checked again as opened: it may have been swapped since the lstat.
            text = read_regular(taken, MAX_REQUEST_BYTES).decode("utf-8", errors="replace")
        except OSError as exc:
            self._complain(st, f"{exc.strerror or exc}; its requests are dropped")
            return []
        finally:
            with contextlib.suppress(OSError):
                taken.unlink()
        self._reported = None
        words = (line.strip() for line in text.splitlines())
        return [cast(Request, word) for word in words if word in REQUESTS]

    def _complain(self, st: os.stat_result, why: str) -> None:
        """Tell the run's log, once per file, why the request file cannot be taken."""
        key = (st.st_ino, st.st_mode)
        if self.report is None or key == self._reported:
            return
        self._reported = key
        self.report(
            f"{self.path}: {why}: steering requests (runs pause/resume/stop/save) cannot be "
            "taken until it is removed."
        )


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"
