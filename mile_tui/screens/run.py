"""The run screen: live panels for the phase, loss, pseudo-labels, metrics, saves, log and
the training process's load.

It has one input, events, whatever their source (a `RunSource`): the console's own
trainer thread, or a run folder's `metrics.jsonl` replayed and followed from disk (a
headless or torchrun run). The screen polls its source at most twice a second, so the
redraw rate does not follow the step rate and the trainer never waits for the UI.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Header

from mile_engine import events as ev
from mile_engine.runstore.catalog import RunSummary
from mile_tui.headless import resume_command
from mile_tui.marks import cut_name
from mile_tui.sources import FollowedRun, RunSource, fold_history
from mile_tui.widgets import run_view as rv
from mile_tui.widgets.checkpoints import CheckpointPanel
from mile_tui.widgets.evaluation import EvalTable
from mile_tui.widgets.log import LogPanel
from mile_tui.widgets.loss_chart import LossChart
from mile_tui.widgets.phase import PhasePanel
from mile_tui.widgets.pseudo import PseudoPanel
from mile_tui.widgets.system import SystemPanel

# Seconds between two redraws of the run screen, at least: training panels need no
# more than two redraws a second, and fewer redraws leave the cores to the trainer.
# benchmarks/tui_overhead.py measures what the console costs (docs/speed.md).
DRAIN_INTERVAL = 0.5

class Panel(Protocol):
    """What every run panel offers: redraw from the run's state."""

    def show(self, view: rv.RunView) -> None: ...


class RunScreen(Screen[None]):
    """Start, pause, stop and watch a run."""

    # Short descriptions and the secondary keys hidden, so that the footer fits 80
    # columns; the help (F1) lists every key with its tooltip.
    BINDING_GROUP_TITLE = "Run screen"
    BINDINGS = [
        Binding("s", "app.start_run", "Start", tooltip="train with the settings on screen"),
        Binding("p", "app.toggle_pause", "Pause",
                tooltip="pause between two steps; p again goes on"),
        # The same key while paused (the app shows one of the two).
        Binding("p", "app.unpause", "Unpause", tooltip="let the paused run go on"),
        Binding("x", "app.stop_run", "Stop",
                tooltip="stop cleanly before the next step, saving first"),
        Binding("r", "app.resume_selected", "Resume",
                tooltip="continue from the save highlighted in the checkpoint panel"),
        Binding("n", "app.save_now", "Save now", show=False,
                tooltip="write a checkpoint before the next step"),
        Binding("i", "app.inspect_run", "Inspect", show=False,
                tooltip="validation images with the live networks' predictions"),
        Binding("f2", "app.show_settings", "Settings", tooltip="the settings screen"),
        Binding("f4", "app.browse_checkpoints", "Saves",
                tooltip="browse, verify, prune and export the checkpoints"),
        # Not in the footer (it would push F1 out of 80 columns): F1 and the palette list it.
        Binding("f6", "app.show_runs", "Runs", show=False,
                tooltip="every run: open, watch, resume, compare"),
    ]

    def __init__(self) -> None:
        super().__init__(id="run")
        self.view = rv.RunView()
        self.source = ""
        """Where the events come from when not from this console ("watching host pid 7")."""
        self._reading = 0  # counts the runs shown: a history read for an older one is dropped
        self.run_source: RunSource | None = None
        """The run whose events this screen shows and the run controls steer."""
        self.drains = 0
        self._last_drain = 0.0
        self._drain_scheduled = False
        self._follow_timer: Timer | None = None
        self._shown_status = ""  # the source's status when the footer was last refreshed

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="run-left"):
            yield PhasePanel(id="phase")
            yield LossChart(id="loss")
            yield PseudoPanel(id="pseudo")
        with Vertical(id="run-right"):
            yield EvalTable(id="eval")
            yield CheckpointPanel(id="checkpoints")
            # Shown from the run's first load record on: old runs and tests have none.
            # On the right, where the evaluation and the log scroll: on the left it
            # would take its rows from the loss chart, which cannot.
            yield SystemPanel(id="system")
            yield LogPanel(id="log")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.redraw(rv.ALL_PANELS)

    def on_screen_resume(self) -> None:
        self.redraw(rv.ALL_PANELS)

    def on_resize(self) -> None:
        # Charts draw as many records as they have columns.
        self.redraw({rv.LOSS, rv.PSEUDO})

    def begin(self, status: str, run_dir: str = "", warning: str | None = None) -> None:
        """Clear every panel at once for another run (nothing of the previous one stays
        on screen), with a first warning line in the log if given."""
        self._reading += 1
        self.view.reset(status=status)
        self.view.run_dir = run_dir
        self.source = ""
        if warning:
            self.view.note("warning", warning)
        self.redraw(rv.ALL_PANELS)

    def open_history(self, run: RunSummary, on_live: Callable[[FollowedRun], None]) -> None:
        """Show `run`'s whole history, read and folded in a thread worker; while another
        process trains it, `on_live` gets the source that follows it. A reading that
        another run overtook (`begin`) is dropped."""
        self.begin("reading", run_dir=str(run.path))
        token = self._reading

        def read() -> None:
            source = FollowedRun(run.path)
            try:
                folded = source.history()
            except Exception as exc:  # a damaged folder is a line on screen, not a crash
                self.app.call_from_thread(self._history_failed, run, token, exc)
                return
            self.app.call_from_thread(self._history_read, run, source, folded, token, on_live)

        self.app.run_worker(read, thread=True, group="history", exit_on_error=False)

    def replay(self, run_dir: Path) -> None:
        """In the thread of a resumed run's trainer, before the run is opened: fold the
        run's history and show it, so its panels hold every earlier evaluation and loss."""
        try:
            folded = fold_history(run_dir)
        except Exception as exc:  # the run can go on without its history on screen
            self.app.call_from_thread(self.note, "warning",
                                      f"cannot read the history of {run_dir}: {exc}")
            return
        folded.status = "starting"
        self.app.call_from_thread(self.show_history, folded)

    def _history_failed(self, run: RunSummary, token: int, exc: Exception) -> None:
        if token == self._reading:
            self.view.status = run.status
            self.note("error", f"cannot read the history of {run.path}: {exc}")

    def _history_read(self, run: RunSummary, source: FollowedRun, folded: rv.RunView,
                      token: int, on_live: Callable[[FollowedRun], None]) -> None:
        if token != self._reading:
            return  # another run was opened or started meanwhile
        live = run.status == "running" and source.live
        if not live:
            # The folder knows best how it ended (a killed run wrote no end record).
            folded.status = run.status
        watching = (f"watching {run.holder}" if run.holder else "watching") if live else ""
        self.show_history(folded, str(run.path), watching)
        if live:
            on_live(source)

    def show_history(self, folded: rv.RunView, run_dir: str | None = None,
                     source: str = "") -> None:
        """Show a run's history folded elsewhere (a worker thread) in place of what was
        there; `source` says where further events come from ("watching host pid 7")."""
        self.view.take_over(folded)
        if run_dir is not None:
            self.view.run_dir = run_dir
        self.source = source
        self.redraw(rv.ALL_PANELS)

    def show_live(self, events: list[ev.Event]) -> None:
        """Show events as they happen, whichever source they come from: a resumed run
        lists the saves it already has, and the run's end is announced."""
        self.apply_events(events)
        for event in events:
            if isinstance(event, ev.RunStarted) and event.resumed_from:
                self._show_earlier_saves(Path(event.run_dir))
            if isinstance(event, ev.RunEnded):
                self._announce_end(event)

    # ------------------------------------------------------------------ polling
    @property
    def followed(self) -> FollowedRun | None:
        """The run folder this screen follows as another process trains it."""
        return self.run_source if isinstance(self.run_source, FollowedRun) else None

    def follow(self, source: FollowedRun) -> None:
        """Follow a run another process trains: its folder is polled at the redraw rate."""
        self.run_source = source
        self._follow_timer = self.app.set_interval(DRAIN_INTERVAL, self.drain)
        self.refresh_controls()

    def stop_following(self) -> None:
        """Stop polling a followed run's folder (the console's own run is left alone)."""
        if self._follow_timer is not None:
            self._follow_timer.stop()
            self._follow_timer = None
        if self.followed is not None:
            self.run_source = None
            self.source = ""
            self.redraw(())  # the title no longer says "watching"
            self.refresh_controls()

    def refresh_controls(self) -> None:
        """Refresh the footer's run controls: they follow the run's status."""
        self._shown_status = self.run_source.status if self.run_source is not None else ""
        self.app.refresh_bindings()

    def events_ready(self) -> None:
        """Drain now, or once the redraw interval has passed since the last drain."""
        if self._drain_scheduled:
            return
        wait = self._last_drain + DRAIN_INTERVAL - time.monotonic()
        if wait > 0:
            self._drain_scheduled = True
            self.app.set_timer(wait, self.drain)
        else:
            self.drain()

    def drain(self) -> None:
        """Fold in what the run's source has sent since the last look; notice the end
        of a followed run."""
        self._drain_scheduled = False
        self._last_drain = time.monotonic()
        source = self.run_source
        if source is None:
            return
        events = source.poll()
        if events:
            self.drains += 1
            self.show_live(events)
        if self._follow_timer is not None and not source.live:
            if source.status == "interrupted":
                self.set_status("interrupted")
                self.note("error", "the run's process is gone without an end "
                          "record (killed?): resume it from its newest save (r)")
            self.stop_following()
        elif source.status != self._shown_status:
            self.refresh_controls()

    def _show_earlier_saves(self, run_dir: Path) -> None:
        try:
            changed = self.view.load_saves(run_dir)
        except Exception as exc:  # a damaged manifest must not take the console down
            self.note("warning", f"cannot list the saves of {run_dir}: {exc}")
            return
        self.redraw(changed)

    def _announce_end(self, event: ev.RunEnded) -> None:
        if event.status == "failed":
            self.notify(event.error or "the run failed", title="Run failed",
                        severity="error", timeout=10)
        elif event.status == "stopped":
            self.notify(resume_hint(self.view) + "\nIn the console: r on the run screen "
                        "resumes from the highlighted save.", title="Run stopped", timeout=15)
        else:
            self.notify(f"Run {event.status} after {event.global_step} steps.", title="Run")

    def apply_events(self, events: Iterable[ev.Event]) -> None:
        """Fold a batch of events into the view and redraw the panels it touched, once."""
        self.redraw(self.view.apply_all(list(events)))

    def note(self, level: str, text: str) -> None:
        """Add a line of the console's own to the log panel."""
        self.view.note(level, text)
        self.redraw({rv.LOG})

    def set_status(self, status: str) -> None:
        """Show a status the console knows before the trainer reports it (stopping...)."""
        self.view.status = status
        self.redraw({rv.PHASE})

    def redraw(self, panels: Iterable[str]) -> None:
        """Redraw the named panels (only once the screen is mounted)."""
        if not self.is_mounted:
            return
        for panel in panels:
            if panel == rv.SYSTEM:
                self._show_system()
                continue
            widget: Panel = self.query_one(f"#{panel}")  # type: ignore[assignment]
            widget.show(self.view)
        self.sub_title = header_text(
            Path(self.view.run_dir).name if self.view.run_dir else "",
            [self.view.status, self.source],
            self.app.size.width - len(self.app.title) - HEADER_CHROME)

    def _show_system(self) -> None:
        panel = self.query_one(SystemPanel)
        stats = self.view.system
        panel.display = stats is not None
        if stats is not None:
            panel.show(stats)

    @property
    def selected_checkpoint(self) -> str | None:
        """The save highlighted in the checkpoint panel."""
        return self.query_one(CheckpointPanel).selected_path


def resume_hint(view: rv.RunView) -> str:
    """Where a stopped run's newest save is and the command that continues it."""
    if not view.run_dir:
        return "The run stopped before it started: nothing was saved."
    where = f"Run {view.status} after {view.global_step} steps"
    if not view.checkpoints:
        return f"{where}; no checkpoint was written in {view.run_dir}."
    return (f"{where}. Newest save: {view.checkpoints[-1].path}\n"
            f"Resume with:\n  {resume_command(view.run_dir)}")


# The header's own cells around "title — sub_title": its icon, padding and the dash.
HEADER_CHROME = 14


def header_text(run_name: str, states: list[str], width: int) -> str:
    """The run screen's header: the run folder's name, then its status and where its
    events come from, in at most `width` cells where it can.

    The folder's name, not its path (the log has the whole path); when all of it does
    not fit, the name gives way first, keeping its time stamp and end (what tells one
    day's runs apart), so the status and "watching" stay readable at 80 columns.
    """
    rest = " · ".join(state for state in states if state)
    if not run_name:
        return " · ".join(part for part in ("run", rest) if part)
    room = width - len("run ") - (len(rest) + 3 if rest else 0)
    name = run_name if len(run_name) <= room else cut_name(run_name, max(room, 12))
    return " · ".join(part for part in (f"run {name}", rest) if part)
