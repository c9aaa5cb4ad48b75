"""The run screen: live panels for the phase, loss, pseudo-labels, metrics, saves, log and
the training process's load.

It has one input, events, whatever their source: the console's own trainer thread, or a
run folder's `metrics.jsonl` replayed and followed from disk (a headless or torchrun run).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header

from mile_engine import events as ev
from mile_tui.headless import resume_command
from mile_tui.widgets import run_view as rv
from mile_tui.widgets.checkpoints import CheckpointPanel
from mile_tui.widgets.evaluation import EvalTable
from mile_tui.widgets.log import LogPanel
from mile_tui.widgets.loss_chart import LossChart
from mile_tui.widgets.phase import PhasePanel
from mile_tui.widgets.pseudo import PseudoPanel
from mile_tui.widgets.system import SystemPanel


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

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="run-left"):
            yield PhasePanel(id="phase")
            yield LossChart(id="loss")
            yield PseudoPanel(id="pseudo")
            # Shown from the run's first load record on: old runs and tests have none.
            yield SystemPanel(id="system")
        with Vertical(id="run-right"):
            yield EvalTable(id="eval")
            yield CheckpointPanel(id="checkpoints")
            yield LogPanel(id="log")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.redraw(rv.ALL_PANELS)

    def on_screen_resume(self) -> None:
        self.redraw(rv.ALL_PANELS)

    def on_resize(self) -> None:
        # Charts draw as many records as they have columns.
        self.redraw({rv.LOSS, rv.PSEUDO})

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
        self.sub_title = " · ".join(part for part in (
            "run", self.view.status, self.source, self.view.run_dir) if part)

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
