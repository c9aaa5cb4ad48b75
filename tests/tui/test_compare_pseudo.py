"""The compare screen's pseudo-label table: precision/recall (and LL's share of rejected
labels that were true) per generation, the mean of each generation's records."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from textual.app import App
from textual.widgets import DataTable, Static

from mile_engine import events as ev
from mile_engine.config.schema import Settings
from mile_engine.runstore.records import event_record
from mile_tui.screens.compare import CompareScreen
from tests.helpers.pilot import wait_for


def write_run(root: Path, name: str, events: Sequence[ev.Event], **settings: Any) -> Path:
    """A run folder as a trainer leaves it: its settings and its metrics records."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    values = dataclasses.replace(Settings(), **settings)
    (run_dir / "settings.toml").write_text(values.to_toml(), encoding="utf-8")
    lines = []
    for event in events:
        record = event_record(event)
        if isinstance(event, ev.RunStarted):
            record.pop("settings")
        lines.append(json.dumps(record))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return run_dir


def stats(generation: int, step: int, precision: float | None, recall: float | None,
          rejected_true: float | None = None) -> ev.PseudoLabelStats:
    return ev.PseudoLabelStats(generation, step, step, 1.0, 1.0, precision, recall,
                               None if rejected_true is None else 0.5, rejected_true)


class CompareApp(App[None]):
    def __init__(self, run_dirs: list[Path]) -> None:
        super().__init__()
        self.run_dirs = run_dirs

    def on_mount(self) -> None:
        self.push_screen(CompareScreen(self.run_dirs))


def rows(table: DataTable[Any]) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_pseudo_label_table_per_generation(tmp_path: Path) -> None:
    start = ev.RunStarted("runs/x", {}, "cpu", "fp32", 1000, 20, 0, {})
    mile: list[ev.Event] = [start, stats(1, 5, 0.5, 0.2), stats(1, 10, 0.7, 0.4),
                            stats(2, 15, 0.9, 0.5)]
    ll: list[ev.Event] = [start, stats(1, 5, 1.0, 0.3, None), stats(2, 15, 0.8, 0.35, 0.25)]
    softmax: list[ev.Event] = [start]
    dirs = [write_run(tmp_path, "a-mile", mile), write_run(tmp_path, "b-ll", ll, schema="LL-R"),
            write_run(tmp_path, "c-softmax", softmax, schema="softmax")]
    app = CompareApp(dirs)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen)
                       and app.screen.comparison is not None)
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        table = screen.query_one("#cmp-pseudo", DataTable)
        assert table.display
        assert [row[1:] for row in rows(table)] == [
            ["0.600/0.300", "0.900/0.500"],
            ["1.000/0.300", "0.800/0.350 · 25%"],
            ["–", "–"],
        ]
        assert "precision/recall" in str(screen.query_one("#cmp-pseudo-title", Static).content)


async def test_no_pseudo_label_table_without_true_sets(tmp_path: Path) -> None:
    start = ev.RunStarted("runs/x", {}, "cpu", "fp32", 1000, 20, 0, {})
    dirs = [write_run(tmp_path, "a", [start, stats(1, 5, None, None)]),
            write_run(tmp_path, "b", [start], schema="sigmoid")]
    app = CompareApp(dirs)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen)
                       and app.screen.comparison is not None)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not app.screen.query_one("#cmp-pseudo", DataTable).display
        assert not app.screen.query_one("#cmp-pseudo-title", Static).display
