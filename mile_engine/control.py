"""The control object a UI or a signal handler uses to steer a running trainer."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class Control:
    """Thread-safe pause / resume / stop / save-now requests, checked between steps."""

    def __init__(self) -> None:
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()
        self._save = threading.Event()
        self._saving = threading.Event()
        self._failure: str | None = None

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
