"""The system panel: the training process's CPU and memory, and its GPU's, at the last
log interval (from `SystemStats` records, so a watcher of a run elsewhere sees them too)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from mile_engine import events as ev
from mile_tui.marks import file_size

WAITING = "waiting for the first log interval"


def describe_stats(stats: ev.SystemStats) -> Text:
    """`CPU 153% · RSS 1.2 GB` and `GPU 87% · 10/80 GB` on a second line, or one line
    `CPU 5% · RSS 512 KB · no GPU` (the panel shares a column with panels that need
    the rows more).

    CPU is in percent of one core, so a process busy on four cores reads 400%.
    """
    text = Text()
    text.append("CPU ", "dim")
    text.append(f"{stats.cpu_percent:.0f}%")
    text.append(" · RSS ", "dim")
    text.append(file_size(stats.rss_bytes))
    gpu_known = (stats.gpu_util_percent is not None or stats.gpu_memory_bytes is not None)
    if not gpu_known:
        text.append(" · no GPU", "dim")
        return text
    text.append("\n")
    text.append("GPU ", "dim")
    # nvidia-ml-py may be missing: then torch's own counters give memory but no use.
    util = stats.gpu_util_percent
    text.append(f"{util:.0f}%" if util is not None else "–%")
    if stats.gpu_memory_bytes is not None:
        text.append(" · mem ", "dim")
        used = file_size(stats.gpu_memory_bytes)
        total = stats.gpu_memory_total_bytes
        text.append(f"{used} / {file_size(total)}" if total else used)
    return text


class SystemPanel(Static):
    """CPU %, resident memory, and GPU use and memory of the training process."""

    DEFAULT_CSS = """
    SystemPanel { height: auto; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(Text(WAITING, "dim"), id=id)
        self.stats: ev.SystemStats | None = None

    def on_mount(self) -> None:
        self.border_title = "System"

    def show(self, event: ev.SystemStats) -> None:
        """Show the load at the newest log interval."""
        self.stats = event
        self.border_subtitle = f"step {event.global_step:,}"
        self.update(describe_stats(event))

    def clear(self) -> None:
        """Back to the state before any record (a new run starts)."""
        self.stats = None
        self.border_subtitle = ""
        self.update(Text(WAITING, "dim"))
