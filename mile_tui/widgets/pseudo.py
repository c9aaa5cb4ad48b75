"""The pseudo-label panel: how many labels the teacher hands the student, and how right."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from mile_tui.widgets.run_view import RunView

SPARKS = "▁▂▃▄▅▆▇█"
LABEL_WIDTH = 22


def sparkline(values: Sequence[float], width: int, low: float | None = None,
              high: float | None = None) -> str:
    """The last `width` values as one row of block characters."""
    values = list(values)[-width:] if width > 0 else []
    if not values:
        return ""
    lo = min(values) if low is None else low
    hi = max(values) if high is None else high
    span = (hi - lo) or 1.0
    return "".join(SPARKS[min(7, max(0, int((v - lo) / span * 7.999)))] for v in values)


class PseudoPanel(Static):
    """Labels per image and the share containing the ground-truth label, over imitation."""

    def on_mount(self) -> None:
        self.border_title = "Pseudo-labels"
        self.show(RunView())

    def show(self, view: RunView) -> None:
        """Redraw from the run's pseudo-label records."""
        if not view.pseudo:
            note = "shown during imitation" if view.schema in ("", "MILe") else "MILe only"
            self.update(Text(note, style="dim"))
            return
        last = view.pseudo[-1]
        width = max(self.content_size.width - LABEL_WIDTH, 4)
        per_image = [p.labels_per_image for p in view.pseudo]
        contains = [p.contains_label for p in view.pseudo]
        text = Text()
        text.append(f"labels/image {last.labels_per_image:6.2f}  ")
        text.append(sparkline(per_image, width, low=0.0), "bold")
        text.append(f"\nhas GT label {last.contains_label:6.1%}  ")
        text.append(sparkline(contains, width, low=0.0, high=1.0), "bold")
        text.append(f"\ngen {last.generation}, step {last.step}", "dim")
        self.update(text)
