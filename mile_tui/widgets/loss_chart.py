"""The loss chart: one column per progress record, coloured by phase."""

from __future__ import annotations

from collections.abc import Sequence

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from mile_tui.widgets.run_view import LossPoint, RunView

# Eighths of a cell, from empty to full: the vertical resolution of the bars.
BLOCKS = " ▁▂▃▄▅▆▇█"
AXIS_WIDTH = 7


def bar_rows(values: Sequence[float], height: int, low: float, high: float) -> list[str]:
    """Draw `values` as vertical bars `height` cells tall; return the rows, top first."""
    span = (high - low) or 1.0
    levels = [max(1, round((v - low) / span * height * 8)) for v in values]
    rows = []
    for row in range(height - 1, -1, -1):
        base = row * 8
        rows.append("".join(BLOCKS[min(8, max(0, level - base))] for level in levels))
    return rows


class LossChart(Widget):
    """Training loss over the most recent records; interactive and imitation differ in colour."""

    COMPONENT_CLASSES = {"loss-chart--interactive", "loss-chart--imitation", "loss-chart--axis"}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.points: list[LossPoint] = []

    def on_mount(self) -> None:
        self.border_title = "Loss"

    def show(self, view: RunView) -> None:
        """Take the run's loss history and redraw."""
        self.points = list(view.losses)
        self.refresh()

    def _legend(self, interactive: Style, imitation: Style) -> Text:
        legend = Text()
        legend.append("█", interactive)
        legend.append(" interactive  ")
        legend.append("█", imitation)
        legend.append(" imitation")
        return legend

    def render(self) -> Text:
        interactive = self.get_component_rich_style("loss-chart--interactive")
        imitation = self.get_component_rich_style("loss-chart--imitation")
        axis = self.get_component_rich_style("loss-chart--axis")
        width, height = self.content_size.width, self.content_size.height
        text = self._legend(interactive, imitation)
        chart_height = height - 1
        columns = width - AXIS_WIDTH
        if chart_height < 1 or columns < 1:
            return text
        points = self.points[-columns:]
        if not points:
            text.append("\n")
            text.append("waiting for the first steps…", "dim")
            return text
        values = [p.loss for p in points]
        high, low = max(values), min(values)
        # A margin below the minimum so the lowest record still shows as a bar.
        low = max(0.0, low - 0.1 * ((high - low) or abs(high) or 1.0))
        rows = bar_rows(values, chart_height, low, high)
        styles = [imitation if p.phase == "imitation" else interactive for p in points]
        for index, row in enumerate(rows):
            text.append("\n")
            label = f"{high:.3g}" if index == 0 else f"{low:.3g}" if index == len(rows) - 1 else ""
            text.append(f"{label:>{AXIS_WIDTH - 1}}┤", axis)
            for char, style in zip(row, styles, strict=True):
                text.append(char, style)
        return text
