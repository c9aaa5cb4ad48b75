"""Where the run on the run screen comes from: one interface, two sources.

A run is a stream of events (DESIGN.md, "Runs as event streams"). The console either
trains it itself, in a thread worker (`LocalRun`), or follows a run folder that another
process trains (`FollowedRun`: a headless or torchrun run on this machine or a shared
file system). Both offer the same things, so the app never asks which it has: `poll()`
hands over the events that came since the last call, `pause()`, `resume()`, `stop()` and
`save()` steer the run (through its `Control`, or through the request file in its
folder), and `status` says where it stands, "paused" included.

The console's own trainer reaches the UI only through `post_message`: its sink appends
each event to an `EventBuffer` and posts one wake-up message per batch, so the trainer
never waits for a redraw; the app polls at a bounded rate.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from textual.dom import DOMNode
from textual.message import Message
from textual.worker import Worker, WorkerState

from mile_engine import events as ev
from mile_engine.config.schema import Settings, SettingsError
from mile_engine.control import Control
from mile_engine.runstore.history import MetricsFollower
from mile_engine.runstore.lock import run_is_active
from mile_engine.runstore.steering import Request, SteeringError, send_request
from mile_tui.widgets import run_view as rv
from mile_tui.widgets.log import MAX_LINES
from mile_tui.widgets.run_view import RunView

# Seconds between two looks at a followed run's lock when no record came: a run killed
# without its end record is noticed by its lock going free.
LOCK_CHECK_INTERVAL = 2.0
# Records of which a replayed history needs only the newest few (see fold_history).
THINNED = (ev.StepLogged, ev.PseudoLabelStats, ev.Position, ev.SystemStats)

SourceStatus = Literal["starting", "running", "paused", "finished", "stopped", "failed",
                       "interrupted"]
ENDINGS: dict[str, SourceStatus] = {"finished": "finished", "stopped": "stopped",
                                    "failed": "failed"}


class RunSource(Protocol):
    """A run the run screen shows and the run controls steer, wherever it trains."""

    run_dir: Path | None
    notes: Mapping[Request, str]
    """What the run screen's log says when a request is sent (none for some)."""

    def poll(self) -> list[ev.Event]:
        """The run's events that came since the last call, oldest first."""
        ...

    def pause(self) -> None:
        """Ask the trainer to wait before its next step."""
        ...

    def resume(self) -> None:
        """Let a paused trainer go on."""
        ...

    def stop(self) -> None:
        """Ask the trainer to stop cleanly (saving first) before its next step."""
        ...

    def save(self) -> None:
        """Ask for a checkpoint before the next step."""
        ...

    @property
    def status(self) -> SourceStatus:
        """starting, running, paused, finished, stopped, failed or interrupted."""
        ...

    @property
    def live(self) -> bool:
        """Whether a trainer is still there to steer."""
        ...


class _Lifecycle:
    """The run's state as its lifecycle events tell it (both sources fold them)."""

    def __init__(self) -> None:
        self.started = False
        self.paused = False
        self.ended: SourceStatus | None = None

    def observe(self, events: Sequence[ev.Event]) -> None:
        for event in events:
            if isinstance(event, ev.RunStarted):
                self.started, self.paused, self.ended = True, False, None
            elif isinstance(event, ev.Paused):
                self.paused = True
            elif isinstance(event, ev.Resumed):
                self.paused = False
            elif isinstance(event, ev.RunEnded):
                self.paused = False
                self.ended = ENDINGS.get(event.status, "failed")


# ---------------------------------------------------------------------------- local
class EventsReady(Message):
    """Posted by the trainer thread when its buffer goes from empty to non-empty."""


class EventBuffer:
    """A thread-safe queue of events between the trainer thread and the UI.

    `put` is the trainer's sink: an append under a lock, and at most one
    `post_message` per drained batch, so the trainer never waits for a redraw.
    """

    def __init__(self, wake: Callable[[], object]) -> None:
        self._events: deque[ev.Event] = deque()
        self._lock = threading.Lock()
        self._signalled = False
        self._wake = wake

    def put(self, event: ev.Event) -> None:
        """Queue one event (called from the trainer thread)."""
        with self._lock:
            self._events.append(event)
            if self._signalled:
                return
            self._signalled = True
        self._wake()

    def drain(self) -> list[ev.Event]:
        """Take every queued event (called from the UI)."""
        with self._lock:
            events = list(self._events)
            self._events.clear()
            self._signalled = False
        return events


class LocalRun:
    """The console's own run: a Trainer in a thread worker, steered through its Control;
    its events arrive in `buffer`."""

    notes: Mapping[Request, str] = {"save": "checkpoint requested; written before the next step"}

    def __init__(self, buffer: EventBuffer) -> None:
        self.buffer = buffer
        self.control = Control()
        self.worker: Worker[None] | None = None
        self.trainer: Any = None
        """The live run's Trainer, set by its thread once built (for the inspector)."""
        self.run_dir: Path | None = None
        self._lifecycle = _Lifecycle()
        self._closed = False  # the thread ended and its last events were taken
        buffer.drain()  # nothing of a previous run leaks into this one

    def start(self, host: DOMNode, settings: Settings, resume: str | None,
              before: Callable[[], None] | None = None,
              overrides: Sequence[str] = ()) -> Worker[None]:
        """Train in a thread worker of `host` (see `train_in_thread` for the arguments)."""
        sink = self.buffer.put

        def started(trainer: Any) -> None:
            self.trainer = trainer

        self.worker = host.run_worker(
            lambda: train_in_thread(settings, self.control, sink, resume, started=started,
                                    before=before, overrides=overrides),
            name="trainer", group="trainer", thread=True, exit_on_error=False,
        )
        return self.worker

    @property
    def alive(self) -> bool:
        """Whether the run goes on: its thread alive, or its last events not yet polled
        (so that a run seen ended has shown its end)."""
        return self.worker is not None and not self._closed

    live = alive

    def poll(self) -> list[ev.Event]:
        """The events the trainer sent since the last call."""
        # Looked at before draining: a thread seen ended has put its last event already.
        ended = self.worker is not None and self.worker.state not in (
            WorkerState.PENDING, WorkerState.RUNNING)
        events = self.buffer.drain()
        self._closed = self._closed or ended
        self._lifecycle.observe(events)
        for event in events:
            if isinstance(event, ev.RunStarted):
                self.run_dir = Path(event.run_dir)
        return events

    def pause(self) -> None:
        """Pause between two steps."""
        self.control.pause()

    def resume(self) -> None:
        """Let the paused trainer go on."""
        self.control.resume()

    def stop(self) -> None:
        """Stop cleanly before the next step (a paused run is woken first)."""
        self.control.stop()

    def save(self) -> None:
        """Write a checkpoint before the next step."""
        self.control.save_now()

    @property
    def status(self) -> SourceStatus:
        """From the events seen and the Control: "paused" as soon as a pause is asked."""
        if self._lifecycle.ended is not None:
            return self._lifecycle.ended
        if self._closed:
            return "failed"  # the thread ended without an end record
        if self.control.paused and not self.control.stop_requested:
            return "paused"
        return "running" if self._lifecycle.started else "starting"


def train_in_thread(settings: Settings, control: Control, sink: ev.Sink,
                    resume: str | None = None,
                    started: Callable[[Any], None] | None = None,
                    before: Callable[[], None] | None = None,
                    overrides: Sequence[str] = ()) -> None:
    """Build a run and train it, reporting everything (errors too) as events to `sink`.

    Runs in the worker thread: building the model and the data can take a while and
    must not freeze the screen. `before` runs first, in this thread (a resumed run's
    history is read there, before the trainer appends to it). `overrides` change a
    resumed run's saved settings, checked by the engine (`mile_engine.session.RESUMABLE`).
    A settings or checkpoint problem (a busy run, a missing or damaged save, a setting
    a resume must keep) is one line, without a traceback.
    """
    from mile_engine.runstore.files import CheckpointError

    if before is not None:
        before()
    try:
        from mile_engine.session import open_run

        trainer = open_run(settings, [sink], control, resume=resume, overrides=overrides)
    except Exception as exc:  # reported in the UI; the app stays usable
        plain = isinstance(exc, (SettingsError, CheckpointError))
        error = str(exc) if plain else f"{type(exc).__name__}: {exc}"
        if not plain:
            sink(ev.Message("error", traceback.format_exc()))
        sink(ev.RunEnded("failed", 0, 0.0, None, error))
        return
    if started is not None:
        started(trainer)  # lets the sample inspector look at the live networks
    trainer.train()


# ---------------------------------------------------------------------------- followed
class FollowedRun:
    """A run folder that another process trains: its `metrics.jsonl` followed, its lock
    checked, steered through the request file in the folder."""

    notes: Mapping[Request, str] = {
        r: f"{r} requested; the trainer answers between steps"
        for r in ("pause", "resume", "stop", "save")
    }

    def __init__(self, run_dir: Path) -> None:
        self.run_dir: Path | None = Path(run_dir)
        self.follower = MetricsFollower(Path(run_dir))
        self._lifecycle = _Lifecycle()
        self._gone = False  # the lock went free
        self._last_lock_check = time.monotonic()

    def read_new(self, keep_newest: Mapping[str, int] | None = None) -> list[ev.Event]:
        """The follower's new events (see `MetricsFollower.read_new`), observed."""
        events = self.follower.read_new(keep_newest=keep_newest)
        self._lifecycle.observe(events)
        return events

    def history(self) -> RunView:
        """The run's history so far, folded (slow on a long run: call it in a thread);
        `poll` reads on from where it stopped."""
        return fold_history(self.follower.run_dir, self)

    def poll(self) -> list[ev.Event]:
        """The records appended since the last call; when none came for a while, a look
        at the lock: a run whose lock went free without an end record was killed."""
        events = self.read_new()
        if events or self._gone:
            return events
        now = time.monotonic()
        if now - self._last_lock_check < LOCK_CHECK_INTERVAL:
            return []
        self._last_lock_check = now
        if not run_is_active(self.follower.run_dir):
            # Its last records may have come just now.
            events = self.read_new()
            self._gone = True
        return events

    def _send(self, request: Request) -> None:
        try:
            send_request(self.follower.run_dir, request)
        except OSError as exc:  # the folder went away under us
            raise SteeringError(f"{self.follower.run_dir}: {exc.strerror or exc}.") from None

    def pause(self) -> None:
        """Ask the trainer to pause (raises `SteeringError` when it cannot be asked)."""
        self._send("pause")

    def resume(self) -> None:
        """Ask the paused trainer to go on (raises `SteeringError`)."""
        self._send("resume")

    def stop(self) -> None:
        """Ask the trainer to stop cleanly (raises `SteeringError`)."""
        self._send("stop")

    def save(self) -> None:
        """Ask the trainer for a checkpoint (raises `SteeringError`)."""
        self._send("save")

    @property
    def status(self) -> SourceStatus:
        """From its records (the newest Paused or Resumed tells "paused") and its lock."""
        if self._lifecycle.ended is not None:
            return self._lifecycle.ended
        if self._gone:
            return "interrupted"
        return "paused" if self._lifecycle.paused else "running"

    @property
    def live(self) -> bool:
        """Whether its trainer is still there: no end record, and its lock held."""
        return self._lifecycle.ended is None and not self._gone


class _Reader(Protocol):
    def read_new(self, keep_newest: Mapping[str, int] | None = None) -> list[ev.Event]: ...


def fold_history(run_dir: Path, follower: _Reader | None = None) -> RunView:
    """A run's history so far as the run screen shows it: every record of its
    `metrics.jsonl` folded, in order, by the code that folds live events, and its saves
    as its manifest lists them. `follower` (if given) then reads on from where this
    stopped. Slow on a long run: call it in a thread."""
    reader: _Reader = follower or MetricsFollower(run_dir)
    view = RunView()
    skipped = 0
    # The follower gives each RunStarted the settings.toml it left out of the file.
    events = reader.read_new(keep_newest={kind.__name__: rv.HISTORY for kind in THINNED})
    # The charts keep the newest HISTORY progress records and the panels the newest
    # position and load: older ones of those kinds are passed over, which makes a long
    # run (a 100 MB file, half a million records) open several times faster.
    totals = Counter(type(e) for e in events if isinstance(e, THINNED))
    seen: Counter[type] = Counter()
    for event in events:
        if isinstance(event, THINNED):
            seen[type(event)] += 1
            if seen[type(event)] <= totals[type(event)] - rv.HISTORY:
                continue
        try:
            view.apply(event)
        except Exception:  # a record of another version must not hide all the others
            skipped += 1
    if skipped:
        view.note("warning", f"{skipped} records of {run_dir} could not be shown")
    del view.log[:-MAX_LINES]  # the log panel keeps no more
    view.replayed = len(view.log)
    view.run_dir = str(run_dir)
    try:
        view.load_saves(run_dir)  # what is on disk now: retention removed older saves
    except Exception as exc:  # a damaged manifest leaves the saves the records named
        view.note("warning", f"cannot list the saves of {run_dir}: {exc}")
    return view
