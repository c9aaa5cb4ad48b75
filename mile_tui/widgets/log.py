"""The log panel: run lifecycle notes, warnings and errors (tracebacks included)."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import RichLog

from mile_tui.widgets.run_view import RunView

MAX_LINES = 2000  # the newest lines kept; a replayed history keeps no more either
LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "info": ""}


class LogPanel(RichLog):
    """Lines the run writes for people: what happened, what went wrong."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, wrap=True, markup=False, highlight=False, max_lines=MAX_LINES,
                         min_width=20)
        self.timestamps = True
        self._run_number = 0

    def on_mount(self) -> None:
        self.border_title = "Log"

    def show(self, view: RunView) -> None:
        """Write the lines the run added since the last redraw (a new run's first
        redraw clears the previous run's lines)."""
        if view.run_number != self._run_number:
            self._run_number = view.run_number
            self.clear()
        lines, view.log[:] = list(view.log), []
        replayed, view.replayed = view.replayed, 0
        for index, (level, text) in enumerate(lines):
            live = self.timestamps and index >= replayed
            stamp = time.strftime("%H:%M:%S ") if live else ""
            prefix = "" if level == "info" else f"{level}: "
            self.write(Text(f"{stamp}{prefix}{text}", LEVEL_STYLE.get(level, "")))
