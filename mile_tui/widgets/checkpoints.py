"""The checkpoint panel: the run's saves as they appear, best and newest marked."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from mile_tui.marks import BEST, NEWEST
from mile_tui.widgets.run_view import CheckpointRow, RunView


class CheckpointPanel(OptionList):
    """Saves of the current run; the highlighted one is what "resume" continues."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[CheckpointRow] = []

    def on_mount(self) -> None:
        self.border_title = "Checkpoints"

    def show(self, view: RunView) -> None:
        """List the run's saves, newest last."""
        self.rows = list(view.checkpoints)
        self.clear_options()
        if not self.rows:
            self.add_option(Option(Text("no saves yet", "dim"), disabled=True))
            return
        for index, row in enumerate(self.rows):
            # A generation's save is the usual case; other reasons (request, stop) are named.
            reason = "" if row.reason == "generation" else f" {row.reason}"
            text = Text(f"gen {row.generation} · step {row.global_step}{reason}")
            if row.best:
                text.append(f"  {BEST}", "bold")
            if index == len(self.rows) - 1:
                text.append(f"  {NEWEST}")
            self.add_option(Option(text, id=row.path))
        self.highlighted = len(self.rows) - 1

    @property
    def selected_path(self) -> str | None:
        """The path of the highlighted save, if any."""
        if self.highlighted is None or not self.rows or self.highlighted >= len(self.rows):
            return None
        return self.rows[self.highlighted].path
