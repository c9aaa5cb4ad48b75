"""The log panel: run lifecycle notes, warnings and errors (tracebacks included)."""

from __future__ import annotations

import re
import time

from rich.text import Text
from textual.widgets import RichLog

from mile_tui.widgets.run_view import RunView

MAX_LINES = 2000  # the newest lines kept; a replayed history keeps no more either
LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "info": ""}
# Where a word too long for a line (a path) may break: after these characters.
BREAK_AFTER = "/-_.,:="


def break_offsets(text: str, width: int) -> list[int]:
    """Where to break `text` into lines of at most `width` characters: at spaces, and a
    word longer than a line (a path) after a `/` (else a `-`, `_`, `.`...), never inside
    a name where another place will do (Rich would cut it at the width, mid-word)."""
    offsets: list[int] = []
    column = 0
    for match in re.finditer(r"\S+\s*", text):
        start, word = match.start(), match.group()
        length = len(word.rstrip())
        if column and column + length > width:
            offsets.append(start)
            column = 0
        while length > width - column:
            room = text[start:start + width - column]
            # After a "/" first (whole folder names), else after any other separator,
            # else (no place after a third of the line) at the width.
            cut = room.rfind("/") + 1
            if cut < (width - column) // 3:
                cut = max(room.rfind(c) for c in BREAK_AFTER) + 1
            if cut < (width - column) // 3:
                cut = width - column
            offsets.append(start + cut)
            start, word = start + cut, word[cut:]
            length, column = len(word.rstrip()), 0
        column += len(word)
    return [o for o in offsets if 0 < o < len(text)]


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
        # Paths inside the run's folder, by their file name: the header names the run.
        inside = view.run_dir.rstrip("/") + "/" if view.run_dir else None
        width = self.scrollable_content_region.width
        for index, (level, text) in enumerate(lines):
            live = self.timestamps and index >= replayed
            stamp = time.strftime("%H:%M:%S ") if live else ""
            prefix = "" if level == "info" else f"{level}: "
            if inside:
                text = text.replace(inside, "")
            line = Text(f"{stamp}{prefix}{text}", LEVEL_STYLE.get(level, ""))
            if width < 8:  # not laid out yet: RichLog wraps it once it knows its width
                self.write(line)
                continue
            for part in line.divide(break_offsets(line.plain, width)):
                part.rstrip()
                self.write(part)
