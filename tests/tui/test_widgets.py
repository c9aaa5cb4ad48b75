"""The run screen's panels and the `RunView` they draw: what the log keeps, the phase
between records, the evaluation panel's title when the sets are the single labels."""

from __future__ import annotations

import dataclasses

from textual.app import App, ComposeResult

from mile_engine import events as ev
from mile_tui.widgets.evaluation import EvalTable
from mile_tui.widgets.run_view import RunView
from tests.helpers.settings import tiny

SINGLE = "single labels (no val_labels_path)"


def started(label_sets: str) -> ev.RunStarted:
    return ev.RunStarted(run_dir="runs/r", settings=tiny().to_dict(),
                         device="cpu", precision="fp32", parameters=1, total_steps=10,
                         global_step=0, reference={"ref_f1_all": 0.4, "ref_f1_label": 0.5},
                         label_sets=label_sets)


class Panel(App[None]):
    def compose(self) -> ComposeResult:
        yield EvalTable(id="evals")


async def test_the_evaluation_panel_says_when_the_sets_are_the_single_labels() -> None:
    app = Panel()
    async with app.run_test() as pilot:
        table = app.query_one(EvalTable)
        for label_sets, title in ((SINGLE, "Evaluation · sets = single labels"),
                                  ("val.csv (CSV)", "Evaluation"), ("", "Evaluation")):
            view = RunView()
            view.apply(started(label_sets))
            table.show(view)
            await pilot.pause()
            assert table.border_title == title


def test_the_log_panel_keeps_tracebacks_out_and_errors_in() -> None:
    from mile_engine import events as ev
    from mile_tui.widgets.run_view import RunView

    view = RunView()
    view.apply(ev.Message("error", "no space left on device: /runs/x/step-1.pt"))
    view.apply(ev.Message(ev.DETAIL, "Traceback (most recent call last):\n  ..."))
    assert view.log == [("error", "no space left on device: /runs/x/step-1.pt")]


def test_the_phase_panel_follows_positions_between_records() -> None:
    from mile_engine import events as ev
    from mile_tui.widgets.run_view import RunView

    view = RunView()
    view.apply(ev.PhaseStarted(2, 8, "imitation", 50))
    assert view.apply(ev.Position(2, "imitation", 7, 50, 157, 1200, 30.0)) == {"phase"}
    assert (view.generation, view.phase, view.step, view.global_step) == (2, "imitation",
                                                                          7, 157)
    assert not view.losses  # a position carries no loss


def test_a_rewound_best_goes_to_the_best_left_by_the_runs_monitor() -> None:
    """Generation 3 was the best and a resume from step 20 undoes it: the star goes to
    the best of generations 1 and 2 by the run's `monitor` (there, mAP and F1 disagree)."""
    for monitor, starred in (("map", 1), ("real_f1", 2)):
        settings = tiny(monitor=monitor).to_dict()
        first = ev.RunStarted(run_dir="runs/r", settings=settings, device="cpu",
                              precision="fp32", parameters=1, total_steps=30, global_step=0,
                              reference={"ref_f1_all": 0.4, "ref_f1_label": 0.5})
        view = RunView()
        view.apply(first)
        for generation, f1, ap, best in ((1, 0.4, 0.7, True), (2, 0.5, 0.6, monitor != "map"),
                                         (3, 0.6, 0.8, True)):
            metrics = {"top1": 0.5, "real_accuracy": 0.5, "real_f1": f1, "real_precision": 0.5,
                       "real_recall": 0.5, "coverage": 1.0, "map": ap}
            view.apply(ev.Evaluated(generation, 10 * generation, metrics, best, 1.0))
        for row in view.evals:
            row.best = row.generation == 3  # the one best mark the panel keeps
        view.apply(dataclasses.replace(first, global_step=20, resumed_from="runs/r/s.pt"))
        assert [row.generation for row in view.evals if row.best] == [starred]
