"""The training console: a Textual app with a Runs screen, a settings screen and a run
screen.

The run screen renders and polls the events of one `RunSource` (`mile_tui.sources`;
DESIGN.md, "Runs as event streams"): the console's own trainer in a thread worker, or a
run folder that another process trains. The app launches runs and steers either source
the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from mile_engine.config.schema import Settings, SettingsError
from mile_engine.runstore.catalog import RunSummary, summarize_run
from mile_engine.runstore.steering import Request, SteeringError
from mile_tui.palette import console_commands
from mile_tui.preferences import (
    Preferences,
    load_preferences,
    preferences_path,
    remember_theme,
    save_preferences,
)
from mile_tui.resume import Resumer
from mile_tui.screens.dialogs import ConfirmScreen
from mile_tui.screens.help import HELP_BINDING, open_help
from mile_tui.screens.run import RunScreen, resume_hint
from mile_tui.screens.runs import RunsScreen, any_runs
from mile_tui.screens.settings import SettingsScreen
from mile_tui.screens.settings_form import SettingsForm
from mile_tui.sources import EventBuffer, EventsReady, FollowedRun, LocalRun, RunSource

DEFAULT_SETTINGS = Path("mile.toml")


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
        Binding("f6", "show_runs", "Runs", show=False,
                tooltip="every run: open, watch, resume, compare"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, config_path: Path, overrides: Sequence[str] = (),
                 autostart: bool = False, preferences: Path | None = None,
                 notice: str | None = None, runs: Sequence[Path] = (),
                 watch: Path | None = None) -> None:
        """Edit `config_path`; `preferences` is the file that remembers the theme and
        the settings file between launches (None: remember nothing, as in tests).
        `runs`: folders of runs listed besides `checkpoint_path`'s; `watch`: a run
        folder to open at once."""
        super().__init__()
        self.extra_roots = [Path(r) for r in runs]
        self.watch_dir = Path(watch) if watch is not None else None
        self.form = SettingsForm(config_path, overrides)
        self.preferences_file = preferences
        self.prefs = Preferences()
        self._startup_notice = notice
        self.autostart = autostart
        self.buffer = EventBuffer(lambda: self.post_message(EventsReady()))
        """Where the console's own trainer thread puts its events."""
        # The screen calls back after a save: it never needs to know the app's class.
        self.settings_screen = SettingsScreen(self.form, self.remember_settings_file)
        self.run_screen = RunScreen()
        self.resumer = Resumer(self, lambda: self.running, self._resume_now)
        self.runs_screen = RunsScreen(self.run_roots, self.open_run, self.resumer.resume)
        self._quit_after_run = False
        self.exit_note: str | None = None
        """Printed on the terminal once the app has closed (where a stopped run's save is)."""

    # ------------------------------------------------------------------ screens
    def on_mount(self) -> None:
        if self.preferences_file is not None:
            self.prefs = remember_theme(self, self.preferences_file)
            self.remember_settings_file()
        if self._startup_notice:
            # Long enough to read: it may say that the runs shown come from elsewhere.
            self.notify(self._startup_notice, title="Settings", severity="warning",
                        timeout=30)
        self.install_screen(self.settings_screen, "settings")
        self.install_screen(self.run_screen, "run")
        self.install_screen(self.runs_screen, "runs")
        # The Runs screen is home once there are runs; a first launch opens the settings.
        self.push_screen("runs" if self.watch_dir is not None or any_runs(self.run_roots())
                         else "settings")
        if self.autostart:
            self.action_start_run()
        elif self.watch_dir is not None:
            self.open_run(summarize_run(self.watch_dir))
        elif self.form.missing:
            self.settings_screen.offer_to_create()

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

    def action_show_settings(self) -> None:
        """Show the settings screen."""
        if self.screen is not self.settings_screen:
            self.switch_screen("settings")

    def action_show_run(self) -> None:
        """Show the run screen."""
        if self.screen is not self.run_screen:
            self.switch_screen("run")

    def action_show_runs(self) -> None:
        """Show the Runs screen: every run, to open, watch, resume or compare."""
        if self.screen is not self.runs_screen:
            self.switch_screen("runs")

    def run_roots(self) -> list[Path]:
        """The folders whose runs the Runs screen lists: `checkpoint_path` (as on the
        settings screen now) and the `--runs` folders."""
        roots = [Path(str(self.form.values.get("checkpoint_path") or "runs"))]
        return roots + [r for r in self.extra_roots if r not in roots]

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
        from mile_tui.checkpoint_browser import ConsoleCheckpointBrowser

        values = self.form.values
        run_dir = self.run_screen.view.run_dir or None
        if self.screen is self.runs_screen and self.runs_screen.highlighted is not None:
            run_dir = str(self.runs_screen.highlighted)
        self.push_screen(ConsoleCheckpointBrowser(
            Path(values["checkpoint_path"]), Path(run_dir) if run_dir else None,
            keep_last=values["max_checkpoint_num"], on_resume=self.resumer.from_browser,
        ))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The command palette: the run's controls next to Textual's own commands."""
        yield from super().get_system_commands(screen)
        yield from console_commands(self)

    # ------------------------------------------------------------------ run state
    @property
    def source(self) -> RunSource | None:
        """The run on the run screen, which the run controls steer (None: none yet)."""
        return self.run_screen.run_source

    @source.setter
    def source(self, source: RunSource | None) -> None:
        self.run_screen.run_source = source

    @property
    def running(self) -> bool:
        """Whether this console's own trainer thread is alive."""
        return isinstance(self.source, LocalRun) and self.source.alive

    @property
    def worker(self) -> Worker[None] | None:
        """This console's own trainer thread (None when the run on screen is not its own)."""
        return self.source.worker if isinstance(self.source, LocalRun) else None

    @property
    def trainer(self) -> Any:
        """This console's own run's Trainer once built (the sample inspector reads it)."""
        return self.source.trainer if isinstance(self.source, LocalRun) else None

    @property
    def followed(self) -> FollowedRun | None:
        """The run folder the run screen follows as another process trains it."""
        return self.run_screen.followed

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Grey out run controls that do nothing in the current state; while the run
        is paused, p offers to go on and r (resume from a save) is not offered."""
        live = self.source is not None and self.source.live
        paused = live and self.source is not None and self.source.status == "paused"
        if action == "toggle_pause":
            return False if paused else (True if live else None)
        if action == "unpause":
            return paused
        if action in ("stop_run", "save_now"):
            return True if live else None
        if action == "resume_selected" and paused:
            return False
        if action in ("start_run", "resume_selected"):
            return None if self.running else True
        return True

    # ------------------------------------------------------------------ run control
    def action_start_run(self) -> None:
        """Start a run with the settings on screen (saved or not), unless a run is going;
        settings that cannot start one are pointed at on the settings screen."""
        if self.running:
            self.notify("A run is already in progress.", severity="warning")
            return
        try:
            settings = self.form.settings()
        except SettingsError as exc:
            self.notify(str(exc), title="Cannot start", severity="error", timeout=8)
            self.action_show_settings()
            bad = self.settings_screen.setting_at_fault(str(exc))
            if bad is not None:
                self.call_after_refresh(self.settings_screen.focus_setting, bad)
            return
        self._launch(settings, resume=None)

    def action_resume_latest(self) -> None:
        """Continue the newest run under `checkpoint_path` from its newest good save
        (refused, in one line, when another process trains it)."""
        self.resumer.latest(self.run_roots()[0])

    def action_resume_selected(self) -> None:
        """Continue a run from the save highlighted in the checkpoint panel; on the Runs
        screen, the highlighted run from its newest good save."""
        if self.screen is self.runs_screen and self.runs_screen.selected is not None:
            self.resumer.resume(self.runs_screen.selected)
            return
        path = self.run_screen.selected_checkpoint if self.run_screen.is_mounted else None
        if path is None:
            run_dir = self.run_screen.view.run_dir
            if not self.running and run_dir and Path(run_dir).is_dir():
                self.resumer.resume(summarize_run(Path(run_dir)))
                return
            self.notify("Open a run first (F6, the Runs screen), or select a save in the "
                        "checkpoint panel.", severity="warning")
            return
        self.resumer.resume(summarize_run(Path(path).parent), Path(path))

    def _resume_now(self, run: RunSummary, checkpoint: Path | None,
                    overrides: Sequence[str]) -> None:
        """Launch the resume of `run` (checked already), `overrides` applied on top of
        its saved settings by the engine, as `--resume RUN --set key=value` does."""
        from mile_tui.checkpoint_browser import CheckpointBrowser

        if isinstance(self.screen, CheckpointBrowser):
            self.pop_screen()
        try:
            settings = self.form.settings()
        except SettingsError:
            # A resumed run uses its own saved settings; the form's only matter for
            # checkpoint_path, and a path given in full needs none.
            settings = Settings(checkpoint_path=str(run.path.parent))
        target = checkpoint if checkpoint is not None else run.path
        self._launch(settings, resume=str(target), history=run.path, overrides=overrides)

    def _launch(self, settings: Settings, resume: str | None,
                history: Path | None = None, overrides: Sequence[str] = ()) -> None:
        """Start the trainer thread; with `history` (the resumed run's folder) its
        earlier events are read and shown first, before the trainer adds to them.
        `overrides`: `key=value` changes to a resumed run's saved settings."""
        self.run_screen.stop_following()
        unsaved = self.form.dirty and resume is None
        self.run_screen.begin("starting", warning="the run uses unsaved settings" if unsaved
                              else None)
        self.action_show_run()
        before = None if history is None else (lambda: self.run_screen.replay(history))
        local = LocalRun(self.buffer)
        self.source = local
        local.start(self, settings, resume, before=before, overrides=overrides)
        self.run_screen.refresh_controls()

    # ------------------------------------------------------------------ open / follow
    def open_run(self, run: RunSummary) -> None:
        """Show `run` on the run screen: its whole history, then, while another process
        trains it, what it adds (the console's own run is simply shown)."""
        if self.running:
            if run.holder is not None and run.holder.is_this_process():
                self.action_show_run()
                return
            self.notify("A run is training in this console: its run screen (F3) shows it. "
                        "Watch other runs with `mile-tui watch RUN` in another terminal.",
                        severity="warning", timeout=8)
            return
        if self.followed is not None and self.followed.run_dir == run.path:
            self.action_show_run()
            return
        self.run_screen.stop_following()
        self.run_screen.open_history(run, self.run_screen.follow)
        self.action_show_run()

    def _request(self, request: Request, what: str) -> None:
        """Send `request` to the run on screen, wherever it trains; say so when there is
        no run to steer (from the palette) or the request cannot be sent."""
        source = self.source
        if source is None or not source.live:
            self.notify(f"No run to {what}: start one with s on the run screen or F5.",
                        severity="warning")
            return
        send = {"pause": source.pause, "resume": source.resume, "stop": source.stop,
                "save": source.save}[request]
        try:
            send()
        except SteeringError as exc:
            self.notify(str(exc), title="Cannot steer", severity="error", timeout=8)
            return
        if request in source.notes:
            self.run_screen.note("info", source.notes[request])
        status = {"pause": "pausing", "stop": "stopping"}.get(request)
        if status:
            self.run_screen.set_status(status)
        self.run_screen.refresh_controls()

    def action_toggle_pause(self) -> None:
        """Pause between two steps, or let a paused run go on."""
        paused = self.source is not None and self.source.status == "paused"
        self._request("resume" if paused else "pause", "pause")

    def action_unpause(self) -> None:
        """Let the paused run go on (p while paused)."""
        self._request("resume", "resume")

    def action_stop_run(self) -> None:
        """Stop the run cleanly before its next step (a paused run is woken first)."""
        self._request("stop", "stop")

    def action_save_now(self) -> None:
        """Ask for a checkpoint before the next step."""
        self._request("save", "save")

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
        """The console's own trainer sent events: the run screen draws them in time."""
        self.run_screen.events_ready()

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
            self.run_screen.drain()
            if self._quit_after_run:
                self.exit_note = resume_hint(self.run_screen.view)
                self.exit()


def create_app(config_path: Path, overrides: Sequence[str] = (),
               autostart: bool = False, preferences: Path | None = None,
               notice: str | None = None, runs: Sequence[Path] = (),
               watch: Path | None = None) -> MileApp:
    """Build the console app: one factory for the command line and the tests."""
    return MileApp(Path(config_path), list(overrides), autostart=autostart,
                   preferences=preferences, notice=notice, runs=runs, watch=watch)


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
    return last, (f"No {DEFAULT_SETTINGS} in this folder: reopened {last}, your last "
                  "session's settings (the Runs screen lists its checkpoint_path). To "
                  f"start afresh here: mile-tui --config {DEFAULT_SETTINGS}")


def run_app(config_path: Path | None, overrides: list[str], autostart: bool,
            runs: Sequence[Path] = (), watch: Path | None = None) -> None:
    """Open the console on `config_path` (None: ./mile.toml or the last session's file;
    a missing file starts from the defaults), remembering preferences between launches.
    `runs`: more folders of runs to list; `watch`: a run folder to open at once."""
    prefs_file = preferences_path()
    prefs, _ = load_preferences(prefs_file)  # a bad file is reported once the app is up
    path, notice = choose_settings_file(config_path, prefs, autostart)
    try:
        app = create_app(path, overrides, autostart, preferences=prefs_file, notice=notice,
                         runs=runs, watch=watch)
    except SettingsError:
        if path == DEFAULT_SETTINGS:
            raise
        # The remembered file went bad since: fall back to the usual one.
        app = create_app(DEFAULT_SETTINGS, overrides, autostart, preferences=prefs_file,
                         notice=f"ignored the last session's settings file {path}: invalid",
                         runs=runs, watch=watch)
    app.run()
    if app.exit_note:
        # Plain print, after the screen is gone: the command stays one line to copy.
        print(app.exit_note)
