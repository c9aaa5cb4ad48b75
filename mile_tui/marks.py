"""One notation for what the console and the command line both show: the marks of the
best and the newest save, counts, file sizes, run names cut to a width."""

from __future__ import annotations

import re
from collections.abc import Sequence

BEST_MARK, NEWEST_MARK = "★", "●"
BEST, NEWEST = f"{BEST_MARK} best", f"{NEWEST_MARK} newest"


def plural(count: int, noun: str) -> str:
    """`1 checkpoint`, `2 checkpoints`: counts read as sentences, not `checkpoint(s)`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def file_size(n: int) -> str:
    """A file size as people write it: 512 KB, 128 MB, 1.2 GB."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 9.95 else f"{value:.0f} {unit}"
    return f"{n} B"


# Run folder names: `20261203-220143-digits-mile` (a date, a time, then what the run is).
_STAMP = re.compile(r"\d{8}-\d{6}-")


def shared_date(names: Sequence[str]) -> str:
    """The `20261203-` that every one of two or more run names starts with, or "": a
    list of one day's runs reads better without it (the time tells them apart)."""
    if len(names) < 2 or not all(_STAMP.match(n) for n in names):
        return ""
    dates = {n[:9] for n in names}
    return dates.pop() if len(dates) == 1 else ""


def cut_name(name: str, width: int) -> str:
    """A run name in at most `width` cells, keeping what tells runs apart.

    A stamped name keeps its leading date and time (or time, once the shared date is
    dropped) and its end (dataset and schema), the middle gives way; any other name
    keeps its end, where names written by hand usually differ (`lr-0.1`, `lr-0.01`).
    """
    if len(name) <= width:
        return name
    if width <= 1:
        return name[-width:] if width else ""
    stamp = re.match(r"(\d{8}-)?\d{6}-", name)
    if stamp is not None:
        head = stamp.group(0)
        if stamp.group(1) and width - len(head) - 1 < 6:
            head = head[9:]  # too narrow for the date too: the time and the end
        tail = width - len(head) - 1
        if tail >= 4:
            return head + "…" + name[len(name) - tail:]
    return "…" + name[len(name) - width + 1:]


def cut_left(text: str, width: int) -> str:
    """`text` in at most `width` cells, its start cut (a path keeps its file name)."""
    if len(text) <= width:
        return text
    return "…" + text[len(text) - width + 1:] if width > 0 else ""
