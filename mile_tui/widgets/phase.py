"""The phase panel: schema, generation, phase and step, progress, speed, elapsed and ETA."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static

from mile_tui.widgets.run_view import RunView, format_duration

STATUS_STYLE = {
    "running": "bold $success",
    "paused": "bold $warning",
    "stopping": "bold $warning",
    "starting": "bold $accent",
    "finished": "bold $success",
    "stopped": "bold $warning",
    "failed": "bold $error",
    "interrupted": "bold $error",
}


class PhasePanel(Vertical):
    """Where the run is: generation g/N, phase step i/k with a bar, images/s, time."""

    def compose(self) -> ComposeResult:
        yield Static(id="phase-head")
        yield ProgressBar(total=1, show_eta=False, id="phase-bar")
        yield Static(id="phase-stats")

    def on_mount(self) -> None:
        self.border_title = "Phase"
        self.show(RunView())

    def show(self, view: RunView) -> None:
        """Redraw from the run's state."""
        self.border_subtitle = f"[{STATUS_STYLE.get(view.status, 'dim')}]{view.status}[/]"
        if view.preparing is not None and not view.generations:
            self._show_preparing(*view.preparing)
            return
        head = Text()
        if view.generations:
            head.append(f"{view.schema or '–'}", style="bold")
            head.append(f"  gen {view.generation}/{view.generations}")
            if view.phase:
                head.append("  ")
                head.append(view.phase, style="bold")
                head.append(f" {view.step}/{view.steps}")
        elif view.status == "starting":
            head.append("Starting the run…", style="bold")
        else:
            head.append("No run yet: s starts one.", style="dim")
        self.query_one("#phase-head", Static).update(head)
        bar = self.query_one("#phase-bar", ProgressBar)
        bar.update(total=max(view.steps, 1), progress=view.step)
        speed = f"{view.images_per_s:,.0f} img/s" if view.images_per_s else "– img/s"
        stats = (
            f"{speed}  step {view.global_step}/{view.total_steps or '–'}\n"
            f"elapsed {format_duration(view.elapsed_s if view.generations else None)}"
            f"  ETA {format_duration(view.eta_s)}"
        )
        self.query_one("#phase-stats", Static).update(stats)

    def _show_preparing(self, task: str, done: int, total: int) -> None:
        """Before the run starts: the data work under way (a download, a folder scan)."""
        head = Text()
        head.append("Preparing data  ", style="bold")
        head.append(task)
        self.query_one("#phase-head", Static).update(head)
        self.query_one("#phase-bar", ProgressBar).update(total=max(total, 1), progress=done)
        self.query_one("#phase-stats", Static).update(f"{done:,}/{total:,}")
