"""The evaluation table: one row per generation, the best (by the run's `monitor`
metric, ReaL F1 by default) highlighted."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from mile_tui.widgets.run_view import RunView

COLUMNS = (("gen", None), ("mAP", "map"), ("top-1", "top1"), ("ReaL acc", "real_accuracy"),
           ("ReaL F1", "real_f1"), ("cov", "coverage"))


class EvalTable(DataTable[Text]):
    """Validation metrics per generation; the best row is bold and starred."""

    COMPONENT_CLASSES = DataTable.COMPONENT_CLASSES | {"eval-table--best"}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.border_title = "Evaluation"
        for label, _ in COLUMNS:
            self.add_column(label, key=label)

    def show(self, view: RunView) -> None:
        """Rebuild the rows (a handful) from the run's evaluations."""
        if view.reference:
            self.border_subtitle = (
                f"ref F1 all {view.reference.get('ref_f1_all', 0):.3f}"
                f" · label {view.reference.get('ref_f1_label', 0):.3f}"
            )
        if view.label_sets.startswith("single labels"):
            # Without a label file the "ReaL" sets are the single labels: say so where
            # the ReaL columns are read (the full text is in the log's first lines).
            self.border_title = "Evaluation · sets = single labels"
        else:
            self.border_title = "Evaluation"
        best_style = self.get_component_rich_style("eval-table--best")
        self.clear()
        for index, row in enumerate(view.evals):
            style = best_style if row.best else ""
            cells = [Text(f"{'★' if row.best else ' '}{row.generation}", style)]
            for _label, key in COLUMNS[1:]:
                value = row.metrics.get(key or "", float("nan"))
                digits = 2 if key == "coverage" else 3
                cells.append(Text(f"{value:.{digits}f}", style, justify="right"))
            self.add_row(*cells, key=str(index))
        if view.evals:
            self.move_cursor(row=len(view.evals) - 1)
