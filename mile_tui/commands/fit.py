"""Tables of the command line that fit the terminal: columns give way by priority, the
rest are cut with an ellipsis, and no row wraps (`runs list`, `checkpoints list`)."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

GAP = 2  # cells between two columns


@dataclass(frozen=True)
class Col:
    """A column: its key in the row dicts, its header, and how soon it gives way."""

    key: str
    header: str
    priority: int = 0
    """0 is always shown; higher numbers give way first when the terminal is narrow."""
    justify: str = "left"


def terminal_width() -> int | None:
    """The width to fit: the terminal's (or $COLUMNS); None when the output goes to a
    file or a pipe, where a whole row on one line is worth more than a width."""
    if os.environ.get("COLUMNS") or sys.stdout.isatty():
        return Console().width
    return None


def natural_width(columns: Sequence[Col], rows: Sequence[dict[str, str]],
                  header: bool = True) -> int:
    """The width of the rows with every column whole."""
    widths = [max([len(c.header) if header else 0] + [len(r[c.key]) for r in rows])
              for c in columns]
    return sum(widths) + GAP * (len(columns) - 1)


def choose(columns: Sequence[Col], rows: Sequence[dict[str, str]], width: int,
           header: bool = True) -> list[Col]:
    """The columns that fit in `width`, by priority (then display order), in display
    order; priority 0 always."""
    def need(c: Col) -> int:
        return max([len(c.header) if header else 0] + [len(r[c.key]) for r in rows]) + GAP

    chosen: set[str] = set()
    used = -GAP
    for column in sorted(columns, key=lambda c: c.priority):
        if column.priority == 0 or used + need(column) <= width:
            chosen.add(column.key)
            used += need(column)
    return [c for c in columns if c.key in chosen]


def render(columns: Sequence[Col], rows: Sequence[dict[str, str]], width: int | None,
           header: bool = True, indent: int = 0) -> list[str]:
    """The rows as lines of at most `width` cells (None: as wide as they are): Rich
    cuts the widest columns with an ellipsis when the chosen ones still do not fit."""
    table = Table(box=None, show_header=header, header_style="bold", pad_edge=False,
                  padding=(0, GAP // 2), show_edge=False, expand=False)
    for c in columns:
        table.add_column(c.header, justify=c.justify,  # type: ignore[arg-type]
                         no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*(row[c.key] for c in columns))
    out = io.StringIO()
    inner = None if width is None else max(width - indent, 10)
    console = Console(file=out, width=inner or 100_000, color_system=None,
                      highlight=False, soft_wrap=False, emoji=False, markup=False)
    console.print(table)
    return [" " * indent + line.rstrip() for line in out.getvalue().splitlines()]
