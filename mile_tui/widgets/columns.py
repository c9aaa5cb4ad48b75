"""Table columns that give way by priority when a screen is too narrow (the checkpoint
browser's saves, the Runs screen). No engine imports: the console opens without torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CELL_PADDING = 1  # DataTable's default, on each side of a cell


@dataclass(frozen=True)
class Column:
    """A column of a table; the narrower the screen, the fewer are shown."""

    key: str
    label: str
    priority: int
    """0 is always shown; higher numbers give way first when the table is too narrow."""


def visible_columns(columns: Sequence[Column], widths: dict[str, int],
                    available: int) -> list[Column]:
    """The columns that fit in `available` cells, the important ones first.

    Columns are taken by priority (then display order) while they fit; the result is in
    display order. Priority 0 columns are always kept.
    """
    chosen: set[str] = set()
    used = 0
    for column in sorted(columns, key=lambda c: c.priority):
        need = widths[column.key] + 2 * CELL_PADDING
        if column.priority == 0 or used + need <= available:
            chosen.add(column.key)
            used += need
    return [c for c in columns if c.key in chosen]
