"""The run screen: live panels for the phase, loss, pseudo-labels, metrics, saves and log."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header

from mile_engine import events as ev
from mile_tui.widgets import run_view as rv
from mile_tui.widgets.checkpoints import CheckpointPanel
from mile_tui.widgets.evaluation import EvalTable
from mile_tui.widgets.log import LogPanel
from mile_tui.widgets.loss_chart import LossChart
from mile_tui.widgets.phase import PhasePanel
from mile_tui.widgets.pseudo import PseudoPanel


class Panel(Protocol):
    """What every run panel offers: redraw from the run's state."""

    def show(self, view: rv.RunView) -> None: ...


class RunScreen(Screen[None]):
    """Start, pause, stop and watch a run."""

    BINDINGS = [
        Binding("s", "app.start_run", "Start"),
        Binding("p", "app.toggle_pause", "Pause/resume"),
        Binding("x", "app.stop_run", "Stop"),
        Binding("n", "app.save_now", "Save now"),
        Binding("r", "app.resume_selected", "Resume from save"),
        Binding("i", "app.inspect_run", "Inspect samples", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="run")
        self.view = rv.RunView()

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="run-left"):
            yield PhasePanel(id="phase")
            yield LossChart(id="loss")
            yield PseudoPanel(id="pseudo")
        with Vertical(id="run-right"):
            yield EvalTable(id="eval")
            yield CheckpointPanel(id="checkpoints")
            yield LogPanel(id="log")
        yield Footer()

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
            widget: Panel = self.query_one(f"#{panel}")  # type: ignore[assignment]
            widget.show(self.view)
        self.sub_title = f"run · {self.view.status}" + (
            f" · {self.view.run_dir}" if self.view.run_dir else ""
        )

    @property
    def selected_checkpoint(self) -> str | None:
        """The save highlighted in the checkpoint panel."""
        return self.query_one(CheckpointPanel).selected_path
