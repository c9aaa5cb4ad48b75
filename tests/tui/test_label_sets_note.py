"""Folder data without a label file: the run says its ReaL sets are the single labels."""

from __future__ import annotations

from pathlib import Path

import torch
from textual.app import App, ComposeResult

from mile_engine import events as ev
from mile_engine.data import Batch
from mile_engine.trainer import Trainer
from mile_tui.widgets.evaluation import EvalTable
from mile_tui.widgets.run_view import RunView
from tests.helpers.settings import tiny
from tests.helpers.sources import FixedSource, random_batches

SINGLE = "single labels (no val_labels_path)"


def started(label_sets: str) -> ev.RunStarted:
    return ev.RunStarted(run_dir="runs/r", settings=tiny().to_dict(),
                         device="cpu", precision="fp32", parameters=1, total_steps=10,
                         global_step=0, reference={"ref_f1_all": 0.4, "ref_f1_label": 0.5},
                         label_sets=label_sets)


def test_the_trainer_announces_where_its_source_takes_the_sets(tmp_path: Path) -> None:
    (val,) = random_batches(1)
    val = Batch(val.images, val.labels, torch.nn.functional.one_hot(val.labels, 10).bool())
    source = FixedSource(random_batches(1), [val])
    source.sets_from = SINGLE  # type: ignore[attr-defined]
    trainer = Trainer(tiny(), tmp_path, source=source)
    assert trainer._run_started().label_sets == SINGLE
    del source.sets_from  # type: ignore[attr-defined]
    assert trainer._run_started().label_sets == ""  # the grids and ImageNet say nothing


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
