"""One notation for the best and the newest save: the run panel, the checkpoint browser
and the command line all mark saves with these."""

from __future__ import annotations

BEST_MARK, NEWEST_MARK = "★", "●"
BEST, NEWEST = f"{BEST_MARK} best", f"{NEWEST_MARK} newest"


def plural(count: int, noun: str) -> str:
    """`1 checkpoint`, `2 checkpoints`: counts read as sentences, not `checkpoint(s)`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
