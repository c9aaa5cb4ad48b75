"""One notation for what the console and the command line both show: the marks of the
best and the newest save, counts, file sizes."""

from __future__ import annotations

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
