"""The control object a UI or a signal handler uses to steer a running trainer."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Snapshot:
    """A copy of a trainer's weights, taken between two steps: CPU tensors that the
    trainer never touches again."""

    student: dict[str, Any]  # the student's state_dict
    teacher: dict[str, Any]  # the teacher's state_dict
    global_step: int


class Control:
    """Thread-safe pause / resume / stop / save-now requests, checked between steps."""

    def __init__(self) -> None:
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()
        self._save = threading.Event()
        self._saving = threading.Event()
        self._failure: str | None = None
        # Weight snapshots: asked for from any thread, taken by the trainer's thread
        # between two steps while it trains, or at once while it does not (its weights
        # are still then). The lock keeps a training loop from starting mid-copy.
        self._snap_lock = threading.Lock()
        self._snap_wanted: list[Future[Snapshot]] = []
        self._snap_take: Callable[[], Snapshot] | None = None
        self._snap_training = False

    def fail(self, reason: str) -> None:
        """Stop the run as failed: it saves, then ends "failed" with `reason` (the first
        one given). For the run's own sinks, e.g. a record the disk refused."""
        if self._failure is None:
            self._failure = reason
        self.stop()

    @property
    def failure(self) -> str | None:
        """Why the run was made to fail, if it was."""
        return self._failure

    @contextlib.contextmanager
    def saving(self) -> Iterator[None]:
        """Mark a checkpoint write in progress, so that a second Ctrl-C waits for it."""
        self._saving.set()
        try:
            yield
        finally:
            self._saving.clear()

    @property
    def saving_now(self) -> bool:
        """Whether a checkpoint is being written."""
        return self._saving.is_set()

    def pause(self) -> None:
        """Ask the trainer to wait before its next step."""
        self._running.clear()

    def resume(self) -> None:
        """Let a paused trainer go on."""
        self._running.set()

    def stop(self) -> None:
        """Ask the trainer to stop cleanly before its next step (also wakes a paused one)."""
        self._stop.set()
        self._running.set()

    def save_now(self) -> None:
        """Ask for a checkpoint before the next step."""
        self._save.set()

    @property
    def paused(self) -> bool:
        """Whether a pause is requested."""
        return not self._running.is_set()

    @property
    def stop_requested(self) -> bool:
        """Whether a stop is requested."""
        return self._stop.is_set()

    def take_save_request(self) -> bool:
        """Return True once per save-now request."""
        if self._save.is_set():
            self._save.clear()
            return True
        return False

    def wait_while_paused(self, timeout: float = 0.1) -> bool:
        """Block up to `timeout` seconds while paused; return True if still paused."""
        return not self._running.wait(timeout)

    # ------------------------------------------------------------------ snapshots
    def request_snapshot(self) -> Future[Snapshot]:
        """Ask for a copy of the trainer's weights (`Snapshot`, CPU tensors).

        While the trainer trains, it copies them between two steps (and while paused), so
        the copy is never half of one update; `future.result(timeout)` waits for it.
        Before the trainer trains, or after, the copy is taken at once. A request made
        before any trainer uses this control waits for the first one to train.
        """
        future: Future[Snapshot] = Future()
        with self._snap_lock:
            if self._snap_training or self._snap_take is None:
                self._snap_wanted.append(future)
                return future
            _fulfil(future, self._snap_take)  # no step runs: the lock keeps it so
        return future

    def attach_snapshots(self, take: Callable[[], Snapshot]) -> None:
        """For the trainer: the function that copies its weights."""
        with self._snap_lock:
            self._snap_take = take

    @contextlib.contextmanager
    def training(self) -> Iterator[None]:
        """For the trainer: its steps run inside; requests wait for `serve_snapshots`."""
        with self._snap_lock:
            self._snap_training = True
        try:
            yield
        finally:
            with self._snap_lock:
                self._snap_training = False
                self._serve_locked()

    def serve_snapshots(self) -> None:
        """For the trainer, between two steps: answer every pending snapshot request."""
        if not self._snap_wanted:  # read without the lock: a request made now waits a step
            return
        with self._snap_lock:
            self._serve_locked()

    def _serve_locked(self) -> None:
        pending, self._snap_wanted = self._snap_wanted, []
        if self._snap_take is None:
            self._snap_wanted = pending
            return
        for future in pending:
            _fulfil(future, self._snap_take)


def _fulfil(future: Future[Snapshot], take: Callable[[], Snapshot]) -> None:
    """Run `take` into `future`, passing an error on to whoever waits."""
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(take())
    except Exception as exc:  # the asker sees it; the trainer goes on
        future.set_exception(exc)
