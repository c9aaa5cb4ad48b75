"""The training console: a Textual app with a settings screen and a run screen.

The trainer runs in a thread worker. Its events reach the UI only through
`post_message`: the sink appends each event to a buffer and posts one wake-up message
per batch, and the app drains the buffer at most twice a second, so the redraw rate
does not follow the step rate and the trainer never waits for the UI.

One module a little past 450 lines: the app's run lifecycle (start, drain, pause, stop,
resume, quit) shares the worker, the buffer and the control; the screens and widgets
live in `screens/` and `widgets/`.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from mile_engine import events as ev
from mile_engine.config import FIELDS, Settings, SettingsError
from mile_engine.control import Control
from mile_tui.headless import resume_command
from mile_tui.preferences import (
    Preferences,
    load_preferences,
    preferences_path,
    remember_theme,
    save_preferences,
)
from mile_tui.screens.dialogs import ConfirmScreen
from mile_tui.screens.help import HELP_BINDING, open_help
from mile_tui.screens.run import RunScreen
from mile_tui.screens.settings import SettingsScreen
from mile_tui.screens.settings_form import SettingsForm
from mile_tui.widgets.run_view import RunView

# Seconds between two redraws of the run screen, at least: training panels need no
# more than two redraws a second, and fewer redraws leave the cores to the trainer.
# benchmarks/tui_overhead.py measures what the console costs (docs/speed.md).
DRAIN_INTERVAL = 0.5
DEFAULT_SETTINGS = Path("mile.toml")
# How a stopped run goes on from a shell (the console resumes from its run screen).
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


class MileApp(App[None]):
    """Edit the settings, start / pause / stop a run, watch it live."""

    CSS_PATH = "app.tcss"
    TITLE = "mile-tui"
    # The screens show the navigation keys that lead elsewhere in their own footers;
    # these app-wide ones work everywhere and are listed by the help (F1).
    BINDINGS = [
        HELP_BINDING,
        Binding("f2", "show_settings", "Settings", show=False),
        Binding("f3", "show_run", "Run", show=False),
        Binding("f4", "browse_checkpoints", "Saves", show=False,
                tooltip="browse, verify, prune and export the checkpoints"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, config_path: Path, overrides: Sequence[str] = (),
                 autostart: bool = False, preferences: Path | None = None,
                 notice: str | None = None) -> None:
        """Edit `config_path`; `preferences` is the file that remembers the theme and
        the settings file between launches (None: remember nothing, as in tests)."""
        super().__init__()
        self.form = SettingsForm(config_path, overrides)
        self.preferences_file = preferences
        self.prefs = Preferences()
        self._startup_notice = notice
        self.autostart = autostart
        self.control: Control | None = None
        self.worker: Worker[None] | None = None
        self.buffer = EventBuffer(lambda: self.post_message(EventsReady()))
        # The screen calls back after a save: it never needs to know the app's class.
        self.settings_screen = SettingsScreen(self.form, self.remember_settings_file)
        self.run_screen = RunScreen()
        self.drains = 0
        self._last_drain = 0.0
        self._drain_scheduled = False
        self._quit_after_run = False
        self.exit_note: str | None = None
        """Printed on the terminal once the app has closed (where a stopped run's save is)."""
        self.trainer: Any = None  # the live run's Trainer, set by its thread once built

    # ------------------------------------------------------------------ screens
    def on_mount(self) -> None:
        if self.preferences_file is not None:
            self.prefs = remember_theme(self, self.preferences_file)
            self.remember_settings_file()
        if self._startup_notice:
            self.notify(self._startup_notice, title="Settings")
        self.install_screen(self.settings_screen, "settings")
        self.install_screen(self.run_screen, "run")
        self.push_screen("settings")
        if self.autostart:
            self.action_start_run()
        elif self.form.missing:
            self.push_screen(
                ConfirmScreen(f"{self.form.path} does not exist. Create it with the default "
                              "settings, every key commented?", yes="Create", no="Not now"),
                self._create_missing,
            )

    def remember_settings_file(self) -> None:
        """Remember the settings file on screen for the next launch (when it exists)."""
        if self.preferences_file is None or not self.form.path.exists():
            return
        path = str(self.form.path.resolve())
        if path != self.prefs.settings_file:
            self.prefs.settings_file = path
            problem = save_preferences(self.prefs, self.preferences_file)
            if problem:
                self.notify(problem, severity="warning")

    def action_help(self) -> None:
        """List every key of the current screen and what it does (F1 or ?)."""
        open_help(self)

    def _create_missing(self, create: bool | None) -> None:
        if create:
            self.settings_screen.action_save()

    def action_show_settings(self) -> None:
        """Show the settings screen."""
        if self.screen is not self.settings_screen:
            self.switch_screen("settings")

    def action_show_run(self) -> None:
        """Show the run screen."""
        if self.screen is not self.run_screen:
            self.switch_screen("run")

    def action_inspect_run(self) -> None:
        """Open the sample inspector on the live run's networks (i on the run screen)."""
        if self.trainer is None:
            self.notify("No run yet: start one, or inspect a save from the checkpoints (F4, i).",
                        severity="warning")
            return
        from mile_tui.inspector import InspectorScreen

        self.push_screen(InspectorScreen(self.trainer))

    def action_browse_checkpoints(self) -> None:
        """Open the checkpoint browser on the runs under `checkpoint_path` (escape closes)."""
        from mile_tui.checkpoint_browser import CheckpointBrowser

        values = self.form.values
        run_dir = self.run_screen.view.run_dir or None
        self.push_screen(CheckpointBrowser(
            Path(values["checkpoint_path"]), Path(run_dir) if run_dir else None,
            keep_last=values["max_checkpoint_num"],
        ))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The command palette: the run's controls next to Textual's own commands."""
        yield from super().get_system_commands(screen)
        yield SystemCommand("Start run", "Train with the settings on screen",
                            self.action_start_run)
        yield SystemCommand("Pause / resume run", "Pause between steps, or go on",
                            self.action_toggle_pause)
        yield SystemCommand("Stop run", "Stop cleanly before the next step",
                            self.action_stop_run)
        yield SystemCommand("Save checkpoint now", "Write a checkpoint before the next step",
                            self.action_save_now)
        yield SystemCommand("Resume latest run",
                            "Continue the newest run under checkpoint_path",
                            self.action_resume_latest)
        yield SystemCommand("Resume from selected save",
                            "Continue from the save highlighted in the checkpoint panel",
                            self.action_resume_selected)
        yield SystemCommand("Browse checkpoints", "Verify, prune, export the saves (F4)",
                            self.action_browse_checkpoints)
        yield SystemCommand("Save settings", "Write the settings file (ctrl+s)",
                            self.settings_screen.action_save)
        yield SystemCommand("Reload settings", "Read the settings file again",
                            self.settings_screen.action_reload)
        yield SystemCommand("Show settings", "The settings screen (F2)",
                            self.action_show_settings)
        yield SystemCommand("Show run", "The run screen (F3)", self.action_show_run)

    # ------------------------------------------------------------------ run state
    @property
    def running(self) -> bool:
        """Whether a trainer thread is alive."""
        return self.worker is not None and self.worker.state in (
            WorkerState.PENDING, WorkerState.RUNNING
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Grey out run controls that do nothing in the current state."""
        if action in ("toggle_pause", "stop_run", "save_now"):
            return True if self.running else None
        if action in ("start_run", "resume_selected"):
            return None if self.running else True
        return True

    # ------------------------------------------------------------------ run control
    def action_start_run(self) -> None:
        """Start a run with the settings on screen (saved or not)."""
        self._start(resume=None)

    def action_resume_latest(self) -> None:
        """Continue the newest run under `checkpoint_path` from its newest good save."""
        self._start(resume="latest")

    def action_resume_selected(self) -> None:
        """Continue a run from the save highlighted in the checkpoint panel."""
        path = self.run_screen.selected_checkpoint if self.run_screen.is_mounted else None
        if path is None and not self.running:
            self.notify("Select a save in the checkpoint panel first.", severity="warning")
            return
        self._start(resume=path)

    def _start(self, resume: str | None) -> None:
        """Launch a new run (`resume` None) or continue one, unless a run is going."""
        if self.running:
            self.notify("A run is already in progress.", severity="warning")
            return
        try:
            settings = self.form.settings()
        except SettingsError as exc:
            self._refuse_start(str(exc))
            return
        self._launch(settings, resume=resume)

    def _refuse_start(self, message: str) -> None:
        self.notify(message, title="Cannot start", severity="error", timeout=8)
        self.action_show_settings()
        bad = next(iter(self.form.errors), None)
        if bad is None and "model" in message:
            bad = "model"
        if bad in FIELDS:
            self.call_after_refresh(self.settings_screen.focus_setting, bad)

    def _launch(self, settings: Settings, resume: str | None) -> None:
        self.control = Control()
        self.buffer.drain()  # nothing of a previous run leaks into this one
        self.run_screen.view.reset()
        if self.form.dirty:
            self.run_screen.view.note("warning", "the run uses unsaved settings")
        self.action_show_run()
        self.run_screen.set_status("starting")
        self.worker = self.run_worker(
            lambda: train_in_thread(settings, self.control or Control(), self.buffer.put,
                                    resume, started=lambda t: setattr(self, "trainer", t)),
            name="trainer", group="trainer", thread=True, exit_on_error=False,
        )
        self.refresh_bindings()

    def _no_run(self, what: str) -> bool:
        """Say so when a run control is used with no run (from the palette)."""
        if self.running and self.control is not None:
            return False
        self.notify(f"No run to {what}: start one with s on the run screen or F5.",
                    severity="warning")
        return True

    def action_toggle_pause(self) -> None:
        """Pause between two steps, or let a paused run go on."""
        if self._no_run("pause") or self.control is None:
            return
        if self.control.paused:
            self.control.resume()
        else:
            self.control.pause()
            self.run_screen.set_status("pausing")

    def action_stop_run(self) -> None:
        """Stop the run cleanly before its next step (a paused run is woken first)."""
        if self._no_run("stop") or self.control is None:
            return
        self.control.stop()
        self.run_screen.set_status("stopping")

    def action_save_now(self) -> None:
        """Ask for a checkpoint before the next step."""
        if self._no_run("save") or self.control is None:
            return
        self.control.save_now()
        self.run_screen.note("info", "checkpoint requested; written before the next step")

    async def action_quit(self) -> None:
        """Quit; during a run, ask first and stop it cleanly before leaving."""
        if self.running:
            self.push_screen(
                ConfirmScreen("A run is in progress. Stop it cleanly and quit?",
                              yes="Stop and quit", no="Keep running"),
                self._confirm_quit,
            )
        elif self.form.dirty:
            self.push_screen(
                ConfirmScreen(f"Unsaved changes to {self.form.path}. Quit without saving?",
                              yes="Quit", no="Stay"),
                lambda yes: self.exit() if yes else None,
            )
        else:
            self.exit()

    def _confirm_quit(self, yes: bool | None) -> None:
        if not yes:
            return
        if not self.running:
            self.exit()
            return
        self._quit_after_run = True
        self.action_stop_run()

    # ------------------------------------------------------------------ events
    def on_events_ready(self, _: EventsReady) -> None:
        """Drain now, or once the redraw interval has passed since the last drain."""
        if self._drain_scheduled:
            return
        wait = self._last_drain + DRAIN_INTERVAL - time.monotonic()
        if wait > 0:
            self._drain_scheduled = True
            self.set_timer(wait, self._drain)
        else:
            self._drain()

    def _drain(self) -> None:
        self._drain_scheduled = False
        self._last_drain = time.monotonic()
        events = self.buffer.drain()
        if not events:
            return
        self.drains += 1
        self.run_screen.apply_events(events)
        for event in events:
            if isinstance(event, ev.RunStarted) and event.resumed_from:
                self._show_earlier_saves(Path(event.run_dir))
            if isinstance(event, ev.RunEnded):
                self._run_ended(event)

    def _show_earlier_saves(self, run_dir: Path) -> None:
        """A resumed run continues in its folder: list the saves it already has."""
        try:
            changed = self.run_screen.view.load_saves(run_dir)
        except Exception as exc:  # a damaged manifest must not take the console down
            self.run_screen.note("warning", f"cannot list the saves of {run_dir}: {exc}")
            return
        self.run_screen.redraw(changed)

    def _run_ended(self, event: ev.RunEnded) -> None:
        if event.status == "failed":
            self.notify(event.error or "the run failed", title="Run failed",
                        severity="error", timeout=10)
        elif event.status == "stopped":
            self.notify(resume_hint(self.run_screen.view) + "\nIn the console: r on the "
                        "run screen resumes from the highlighted save.",
                        title="Run stopped", timeout=15)
        else:
            self.notify(f"Run {event.status} after {event.global_step} steps.", title="Run")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Refresh the footer's controls; leave once a stop asked by quitting is done."""
        if event.worker is not self.worker:
            return
        self.refresh_bindings()
        if event.state == WorkerState.ERROR:
            # train_in_thread reports errors itself; this is the last line of defence.
            self.run_screen.note("error", f"trainer thread crashed: {event.worker.error}")
            self.run_screen.set_status("failed")
        if event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            self._drain()
            if self._quit_after_run:
                self.exit_note = resume_hint(self.run_screen.view)
                self.exit()


def train_in_thread(settings: Settings, control: Control, sink: ev.Sink,
                    resume: str | None = None,
                    started: Callable[[Any], None] | None = None) -> None:
    """Build a run and train it, reporting everything (errors too) as events to `sink`.

    Runs in the worker thread: building the model and the data can take a while and
    must not freeze the screen.
    """
    try:
        from mile_engine.session import open_run

        trainer = open_run(settings, [sink], control, resume=resume)
    except Exception as exc:  # reported in the UI; the app stays usable
        error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, SettingsError) else str(exc)
        if not isinstance(exc, SettingsError):
            sink(ev.Message("error", traceback.format_exc()))
        sink(ev.RunEnded("failed", 0, 0.0, None, error))
        return
    if started is not None:
        started(trainer)  # lets the sample inspector look at the live networks
    trainer.train()


def resume_hint(view: RunView) -> str:
    """Where a stopped run's newest save is and the command that continues it."""
    if not view.run_dir:
        return "The run stopped before it started: nothing was saved."
    where = f"Run {view.status} after {view.global_step} steps"
    if not view.checkpoints:
        return f"{where}; no checkpoint was written in {view.run_dir}."
    return (f"{where}. Newest save: {view.checkpoints[-1].path}\n"
            f"Resume with:\n  {resume_command(view.run_dir)}")


def create_app(config_path: Path, overrides: Sequence[str] = (),
               autostart: bool = False, preferences: Path | None = None,
               notice: str | None = None) -> MileApp:
    """Build the console app: one factory for the command line and the tests."""
    return MileApp(Path(config_path), list(overrides), autostart=autostart,
                   preferences=preferences, notice=notice)


def choose_settings_file(config_path: Path | None, prefs: Preferences,
                         autostart: bool) -> tuple[Path, str | None]:
    """The file the console opens, and a notice when it is the remembered one.

    `--config` wins, then ./mile.toml; with neither, the plain console reopens the file
    of the last session (a run started from the command line never does: it uses
    exactly what the command line says).
    """
    if config_path is not None:
        return config_path, None
    last = Path(prefs.settings_file) if prefs.settings_file else None
    if autostart or DEFAULT_SETTINGS.exists() or last is None or not last.is_file():
        return DEFAULT_SETTINGS, None
    return last, f"no {DEFAULT_SETTINGS} here: opened {last}, the file of your last session"


def run_app(config_path: Path | None, overrides: list[str], autostart: bool) -> None:
    """Open the console on `config_path` (None: ./mile.toml or the last session's file;
    a missing file starts from the defaults), remembering preferences between launches."""
    prefs_file = preferences_path()
    prefs, _ = load_preferences(prefs_file)  # a bad file is reported once the app is up
    path, notice = choose_settings_file(config_path, prefs, autostart)
    try:
        app = create_app(path, overrides, autostart, preferences=prefs_file, notice=notice)
    except SettingsError:
        if path == DEFAULT_SETTINGS:
            raise
        # The remembered file went bad since: fall back to the usual one.
        app = create_app(DEFAULT_SETTINGS, overrides, autostart, preferences=prefs_file,
                         notice=f"ignored the last session's settings file {path}: invalid")
    app.run()
    if app.exit_note:
        # Plain print, after the screen is gone: the command stays one line to copy.
        print(app.exit_note)
