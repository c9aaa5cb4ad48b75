"""The pseudo-label panel: precision and recall per generation, LL's rejections."""

from __future__ import annotations

from textual.app import App, ComposeResult

from mile_engine import events as ev
from mile_tui.widgets.pseudo import PseudoPanel, generations_line, per_generation
from mile_tui.widgets.run_view import RunView


def record(generation: int, step: int, precision: float | None = None,
           recall: float | None = None, rejected: float | None = None,
           rejected_true: float | None = None) -> ev.PseudoLabelStats:
    return ev.PseudoLabelStats(generation, step, step, 2.0, 0.9, precision, recall,
                               rejected, rejected_true)


def test_per_generation_means_and_the_newest_that_fit() -> None:
    records = [record(1, 1, 0.5, 0.2), record(1, 2, 0.7, 0.4), record(2, 1, 0.9, None),
               record(3, 1)]
    assert per_generation(records, "precision") == [(1, 0.6), (2, 0.9)]
    assert per_generation(records, "recall") == [(1, 0.30000000000000004)]
    line = generations_line("gen P/R", [per_generation(records, "precision"),
                                        per_generation(records, "recall")],
                            [".2f", ".2f"], 80)
    assert line == "gen P/R  1 0.60/0.30  2 0.90/–"
    narrow = generations_line("gen P/R", [per_generation(records, "precision")], [".2f"], 15)
    assert narrow == "gen P/R  2 0.90"  # the newest generation first to stay


class PanelApp(App[None]):
    def compose(self) -> ComposeResult:
        yield PseudoPanel(id="pseudo")


async def test_panel_shows_quality_only_where_records_carry_it() -> None:
    app = PanelApp()
    async with app.run_test(size=(80, 12)) as pilot:
        panel = app.query_one(PseudoPanel)
        view = RunView(schema="LL-Ct")
        panel.show(view)
        assert str(panel.content) == "shown during training"
        view.schema = "EM"
        panel.show(view)
        assert str(panel.content) == "MILe and LL only"
        view.schema = "MILe"
        view.pseudo.extend([record(1, 5), record(1, 10)])
        panel.show(view)
        await pilot.pause()
        plain = str(panel.content)
        assert "labels/image" in plain and "gen P/R" not in plain and "rejected" not in plain
        view.schema = "LL-R"
        view.pseudo.extend([record(2, 5, 1.0, 0.4, 0.5, 0.25),
                            record(2, 10, 0.8, 0.2, 1.0, 0.5)])
        panel.show(view)
        plain = str(panel.content)
        assert "rejected/image 1.00, 50.0% true" in plain
        assert "gen P/R  2 0.90/0.30" in plain
        assert "gen rejected true  2 38%" in plain
