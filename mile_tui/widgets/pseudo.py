"""The pseudo-label panel: how many labels the teacher hands the student, and how right."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from mile_engine import events as ev
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


def per_generation(records: Sequence[ev.PseudoLabelStats],
                   field: str) -> list[tuple[int, float]]:
    """(generation, mean of `field` over its records) for the generations that have it."""
    sums: dict[int, list[float]] = {}
    for record in records:
        value = getattr(record, field)
        if value is not None:
            sums.setdefault(record.generation, []).append(value)
    return [(g, sum(v) / len(v)) for g, v in sorted(sums.items())]


def generations_line(label: str, columns: Sequence[list[tuple[int, float]]],
                     formats: Sequence[str], width: int) -> str:
    """"label  g1 a/b  g2 a/b ...": the newest generations that fit `width`."""
    table: dict[int, list[str]] = {}
    for i, column in enumerate(columns):
        for g, value in column:
            table.setdefault(g, ["–"] * len(columns))[i] = format(value, formats[i])
    cells = [f"{g} {'/'.join(v)}" for g, v in sorted(table.items())]
    kept: list[str] = []
    for cell in reversed(cells):
        if len(label) + sum(len(c) + 2 for c in [*kept, cell]) > width:
            break
        kept.insert(0, cell)
    return f"{label}  " + "  ".join(kept)


class PseudoPanel(Static):
    """What the student trains towards: MILe's pseudo-labels (density, the label kept,
    precision and recall against the true sets where known), LL's rejected labels."""

    def on_mount(self) -> None:
        self.border_title = "Pseudo-labels"
        self.show(RunView())

    def show(self, view: RunView) -> None:
        """Redraw from the run's pseudo-label records."""
        if not view.pseudo:
            waiting = view.schema in ("", "MILe", "LL-R", "LL-Ct")
            note = "shown during imitation" if view.schema in ("", "MILe") else (
                "shown during training" if waiting else "MILe and LL only")
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
        full = max(self.content_size.width, 20)
        if last.rejected_per_image is not None:
            true = "" if last.rejected_true is None else f", {last.rejected_true:.1%} true"
            text.append(f"\nrejected/image {last.rejected_per_image:.2f}{true}")
        precision = per_generation(view.pseudo, "precision")
        if precision:
            recall = per_generation(view.pseudo, "recall")
            text.append("\n" + generations_line("gen P/R", [precision, recall],
                                                 [".2f", ".2f"], full))
        truly = per_generation(view.pseudo, "rejected_true")
        if truly:
            text.append("\n" + generations_line("gen rejected true", [truly], [".0%"], full))
        text.append(f"\ngen {last.generation}, step {last.step}", "dim")
        self.update(text)
