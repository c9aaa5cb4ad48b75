"""The compare screen over run folders written here (settings.toml and metrics.jsonl from
real events): charts' data, the best, settings and pseudo-label tables, layout at 80 and
120 columns, unreadable runs, Escape; SVG snapshots at 80×24 and 120×36.

Update the snapshots after an intended change with:
pytest tests/tui/test_compare.py --snapshot-update
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from textual.app import App
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import DataTable, Static, TabbedContent
from textual_plotext import PlotextPlot

from mile_engine import events as ev
from mile_engine.config.schema import Settings
from mile_engine.runstore.layout import METRICS_FILE, SETTINGS_FILE
from mile_engine.runstore.lock import hold_active
from mile_engine.runstore.records import event_record
from mile_tui.app import create_app
from mile_tui.screens.compare import (
    LOG_MANTISSAS,
    CompareScreen,
    Legend,
    linear_ticks,
    log_ticks,
    step_ticks,
)
from tests.helpers.pilot import wait_for

SMALL = (80, 24)
LARGE = (120, 36)
SIZES = pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "120x36"])
TOTAL = 30


def write_run(root: Path, name: str, events: list[ev.Event], **settings: Any) -> Path:
    """A run folder as a trainer leaves it: its settings and its metrics records."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    values = dataclasses.replace(Settings(), **settings)
    (run_dir / SETTINGS_FILE).write_text(values.to_toml(), encoding="utf-8")
    lines = []
    for event in events:
        record = event_record(event)
        if isinstance(event, ev.RunStarted):
            record.pop("settings")  # as MetricsWriter writes it: settings.toml holds them
        lines.append(json.dumps(record))
    (run_dir / METRICS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return run_dir


def started(global_step: int = 0) -> ev.RunStarted:
    return ev.RunStarted("runs/x", {}, "cpu", "fp32", 1000, TOTAL, global_step, {},
                         resumed_from=None if global_step == 0 else "runs/x/save.pt")


def steps(generation: int, first: int, last: int, scale: float) -> list[ev.Event]:
    """Progress records `first`..`last` with a loss falling at a rate set by `scale`."""
    return [ev.StepLogged(generation, "interactive", s, 10, s, TOTAL,
                          round(1.5 / (1 + 0.1 * s * scale), 4), 0.01, 100.0, float(s))
            for s in range(first, last + 1)]


def evaluated(generation: int, step: int, f1: float, coverage: float,
              top1: float) -> ev.Evaluated:
    return ev.Evaluated(generation, step, {"top1": top1, "real_accuracy": 0.7,
                                           "real_f1": f1, "real_precision": 0.6,
                                           "real_recall": 0.5 + 0.05 * generation,
                                           "coverage": coverage,
                                           "map": round(top1 - 0.1, 6)}, False, 100.0)


def demo_runs(root: Path) -> list[Path]:
    """Three runs: a finished MILe run, a softmax run resumed from its save at step 10
    after being killed at 15 (two RunStarted records), and a run not yet evaluated."""
    finished = [started(),
                *steps(1, 1, 10, 1.0), evaluated(1, 10, 0.45, 1.4, 0.52),
                *steps(2, 11, 20, 1.0), evaluated(2, 20, 0.55, 1.8, 0.56),
                *steps(3, 21, 30, 1.0), evaluated(3, 30, 0.52, 2.1, 0.58),
                ev.RunEnded("finished", 30, 60.0, None)]
    resumed = [started(),
               *steps(1, 1, 10, 0.6), evaluated(1, 10, 0.40, 1.0, 0.50),
               *steps(2, 11, 15, 0.6),  # killed here: these five records are rewound
               started(10),
               *steps(2, 11, 20, 0.7), evaluated(2, 20, 0.47, 1.0, 0.54)]
    fresh = [started(), *steps(1, 1, 4, 0.8)]
    return [
        write_run(root, "20260101-120000-digits-mile", finished, seed=0),
        write_run(root, "20260102-093000-digits-softmax", resumed, schema="softmax", seed=0),
        write_run(root, "20260103-080000-digits-mile", fresh, seed=1, rho=0.5),
    ]


class CompareApp(App[None]):
    """The compare screen over a base screen, as the Runs screen opens it."""

    def __init__(self, run_dirs: list[Path]) -> None:
        super().__init__()
        self.run_dirs = run_dirs

    def on_mount(self) -> None:
        self.push_screen(CompareScreen(self.run_dirs))


def subtitle(screen: Screen[Any]) -> str:
    """`screen`'s sub-title, which the compare screen always sets (never None)."""
    assert screen.sub_title is not None
    return screen.sub_title


async def loaded(pilot: Pilot[None]) -> CompareScreen:
    """The compare screen once its runs are read and drawn."""
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, CompareScreen)
                   and pilot.app.screen.comparison is not None)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, CompareScreen)
    return screen


def cells(table: DataTable[Any]) -> list[list[str]]:
    """Every row of `table` as plain strings."""
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_compare_three_runs(tmp_path: Path) -> None:
    app = CompareApp(demo_runs(tmp_path))
    async with app.run_test(size=SMALL) as pilot:
        screen = await loaded(pilot)
        result = screen.comparison
        assert result is not None
        assert result.names == ["20260101-120000-digits-mile",
                                "20260102-093000-digits-softmax",
                                "20260103-080000-digits-mile"]
        assert [s.ys for s in result.f1] == [[0.45, 0.55, 0.52], [0.40, 0.47], []]
        assert [s.ys for s in result.coverage] == [[1.4, 1.8, 2.1], [1.0, 1.0], []]
        # The resumed run's loss: steps 1..20 once each, 11..15 from the second session.
        resumed = result.loss[1]
        assert resumed.xs == [float(s) for s in range(1, 21)]
        assert resumed.ys[12] == round(1.5 / (1 + 0.1 * 13 * 0.7), 4)
        assert len(result.loss[2].xs) == 4

        best = cells(screen.query_one("#cmp-best", DataTable))
        assert [row[1:] for row in best] == [
            ["★ 0.550", "2", "0.460", "0.560", "0.700", "0.600", "0.600", "30/30"],
            ["0.470", "2", "0.440", "0.540", "0.700", "0.600", "0.600", "20/30"],
            ["–", "–", "–", "–", "–", "–", "–", "4/30"],
        ]
        assert [row[0].replace("\n    ", "") for row in best] == [
            f"■ {i + 1} {name}" for i, name in enumerate(result.names)]
        # Only the keys the test changed differ; the rest of settings.toml is the same.
        assert cells(screen.query_one("#cmp-settings", DataTable)) == [
            ["schema", "MILe", "softmax", "MILe"],
            ["seed", "0", "0", "1"],
            ["rho", "0.1", "0.1", "0.5"],
        ]
        legend = str(screen.query_one("#cmp-f1-legend", Legend).render())
        assert "3 20260103-080000-digits-mile (no evaluation yet)" in legend
        assert "no evaluation" not in legend.split("■ 3")[0]
        assert not screen.query_one("#cmp-status", Static).display

        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, CompareScreen)


async def test_reload_reads_what_a_live_run_added(tmp_path: Path) -> None:
    runs = demo_runs(tmp_path)
    app = CompareApp(runs)
    async with app.run_test(size=SMALL) as pilot:
        screen = await loaded(pilot)
        assert screen.comparison is not None and screen.comparison.best[2].best_f1 is None
        with (runs[2] / METRICS_FILE).open("a", encoding="utf-8") as f:
            f.write(json.dumps(event_record(evaluated(1, 4, 0.61, 1.3, 0.6))) + "\n")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: screen.comparison is not None
                       and screen.comparison.best[2].best_f1 == 0.61)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        rows = cells(screen.query_one("#cmp-best", DataTable))
        assert rows[2][1] == "★ 0.610" and rows[0][1] == "0.550"
        assert "no evaluation" not in str(screen.query_one("#cmp-f1-legend", Legend).render())


async def test_the_screen_follows_runs_that_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No key pressed: a run a trainer holds (its active lock) is followed, what it
    # appends shows by itself, read once (no record counted twice).
    monkeypatch.setattr("mile_tui.screens.compare.FOLLOW_INTERVAL_S", 0.05)
    runs = demo_runs(tmp_path)
    trainer_lock = hold_active(runs[2])
    app = CompareApp(runs)
    async with app.run_test(size=SMALL) as pilot:
        screen = await loaded(pilot)
        await wait_for(pilot, lambda: "following 1 live" in subtitle(screen))
        with (runs[2] / METRICS_FILE).open("a", encoding="utf-8") as f:
            for event in [*steps(1, 5, 6, 0.8), evaluated(1, 6, 0.61, 1.3, 0.6)]:
                f.write(json.dumps(event_record(event)) + "\n")
        await wait_for(pilot, lambda: screen.comparison is not None
                       and screen.comparison.best[2].best_f1 == 0.61)
        result = screen.comparison
        assert result is not None
        assert result.loss[2].xs == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        assert result.f1[2].ys == [0.61] and result.f1[0].ys == [0.45, 0.55, 0.52]
        assert len(result.loss[0].xs) == 30
        await wait_for(pilot, lambda: cells(screen.query_one("#cmp-best", DataTable))[2][1]
                       == "★ 0.610")
        assert trainer_lock is not None
        trainer_lock.close()  # the trainer ends
        await wait_for(pilot, lambda: "live" not in subtitle(screen))


def y_ticks(plot: PlotextPlot) -> list[tuple[int, float]]:
    """(row, value) of each y-axis tick of a chart as it renders, top to bottom."""
    lines = plot.render().plain.splitlines()  # type: ignore[union-attr]
    return [(row, float(m.group(1))) for row, line in enumerate(lines)
            if (m := re.match(r"\s*([\d.]+)┤", line))]


def off_line(ticks: list[tuple[int, float]], scale: Callable[[float], float]) -> float:
    """How many rows the ticks between the first and last sit off a straight line in
    `scale(value)`: about 0 (rounding to a row) when the axis has that scale."""
    (r0, v0), (r1, v1) = ticks[0], ticks[-1]
    per_unit = (r1 - r0) / (scale(v1) - scale(v0))
    return max(abs(r0 + per_unit * (scale(v) - scale(v0)) - r) for r, v in ticks[1:-1])


async def test_l_puts_the_loss_on_a_log_scale_and_back(tmp_path: Path) -> None:
    # Read off the rendered chart: on a linear axis the ticks' rows follow their values,
    # on a log axis their logarithms. The losses span 0.375 to 1.364, so the two differ
    # by rows on a 30-row chart.
    app = CompareApp(demo_runs(tmp_path))
    async with app.run_test(size=LARGE) as pilot:
        screen = await loaded(pilot)
        await pilot.press("3")
        await pilot.pause()
        chart = screen.query_one("#cmp-loss-chart", PlotextPlot)
        for log_scale in (False, True, False):
            ticks = y_ticks(chart)
            chart.render()  # drawn again, as a redraw does: nothing may change or fail
            assert y_ticks(chart) == ticks
            assert len(ticks) >= 3, ticks
            linear, logarithmic = off_line(ticks, lambda v: v), off_line(ticks, math.log10)
            title = "training loss (log scale)" in chart.render().plain  # type: ignore[union-attr]
            if log_scale:
                assert logarithmic <= 1 < linear and title, (ticks, linear, logarithmic)
            else:
                assert linear <= 1 < logarithmic and not title, (ticks, linear, logarithmic)
            await pilot.press("l")
            await pilot.pause()


@given(st.floats(1e-4, 1e4), st.floats(1.01, 1e4))
def test_log_ticks_are_round_and_inside(low: float, factor: float) -> None:
    high = low * factor
    ticks = log_ticks(low, high)
    assert ticks == sorted(ticks) and len(ticks) >= 2
    for tick in ticks:
        assert low * (1 - 1e-9) <= tick <= high * (1 + 1e-9)
        if len(ticks) >= 3:  # round ones: a mantissa of LOG_MANTISSAS times 10^k
            mantissa = tick / 10 ** math.floor(math.log10(tick) + 1e-12)
            assert any(abs(mantissa - m) < 1e-6 for m in LOG_MANTISSAS), tick


@given(st.floats(-1e3, 1e3), st.floats(1e-3, 1e3))
def test_linear_ticks_are_evenly_spaced_and_inside(low: float, span: float) -> None:
    high = low + span
    ticks = linear_ticks(low, high)
    assert 2 <= len(ticks) <= 11, ticks
    assert all(low - 1e-6 * span <= t <= high + 1e-6 * span for t in ticks)
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert max(gaps) - min(gaps) <= 1e-9 * max(1.0, abs(high), abs(low))


async def test_tabs_at_80_and_120_columns(tmp_path: Path) -> None:
    app = CompareApp(demo_runs(tmp_path))
    async with app.run_test(size=SMALL) as pilot:
        screen = await loaded(pilot)
        tabs = screen.query_one(TabbedContent)
        assert tabs.active == "cmp-generations"
        assert not screen.query_one("#cmp-coverage-beside").display
        await pilot.press("2")
        assert tabs.active == "cmp-coverage"
        await pilot.press("3")
        assert tabs.active == "cmp-loss"
        await pilot.press("4")
        assert tabs.active == "cmp-tables"

        await pilot.resize_terminal(*LARGE)
        await pilot.pause()
        # Wide: coverage sits beside F1, and its own tab is gone.
        assert screen.query_one("#cmp-coverage-beside").display
        assert not tabs.get_tab("cmp-coverage").display
        await pilot.press("2")
        assert tabs.active == "cmp-generations"

        await pilot.resize_terminal(*SMALL)
        await pilot.pause()
        assert tabs.get_tab("cmp-coverage").display
        assert not screen.query_one("#cmp-coverage-beside").display


async def test_unreadable_run_is_named_and_the_rest_compared(tmp_path: Path) -> None:
    good = demo_runs(tmp_path)[:2]
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    app = CompareApp([good[0], empty, good[1]])
    async with app.run_test(size=SMALL) as pilot:
        screen = await loaded(pilot)
        assert screen.comparison is not None
        assert screen.comparison.names == [good[0].name, good[1].name]
        status = screen.query_one("#cmp-status", Static)
        assert status.display
        text = str(status.render())
        assert text.startswith("not shown: not-a-run: not a run folder") and "\n" not in text
        assert "Traceback" not in text


async def test_no_readable_run(tmp_path: Path) -> None:
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()
    app = CompareApp(folders)
    async with app.run_test(size=SMALL) as pilot:
        screen = await loaded(pilot)
        lines = str(screen.query_one("#cmp-status", Static).render()).split("\n")
        assert [line.split(":")[0] for line in lines] == ["not shown", "not shown"]
        assert screen.query_one("#cmp-best", DataTable).row_count == 0


async def test_same_settings_say_so(tmp_path: Path) -> None:
    runs = [write_run(tmp_path, f"run-{i}", [started(), *steps(1, 1, 3, 1.0)])
            for i in range(2)]
    app = CompareApp(runs)
    async with app.run_test(size=SMALL) as pilot:
        screen = await loaded(pilot)
        assert not screen.query_one("#cmp-settings", DataTable).display
        title = str(screen.query_one("#cmp-settings-title", Static).render())
        assert "none" in title


def test_step_ticks_examples() -> None:
    assert step_ticks(1, 10) == [2, 4, 6, 8, 10]
    assert step_ticks(0, 120_000) == [0, 25_000, 50_000, 75_000, 100_000]
    assert step_ticks(5, 5) == [5]


@given(st.integers(0, 10**7), st.integers(0, 10**7))
def test_step_ticks_are_round_and_inside(a: int, b: int) -> None:
    low, high = min(a, b), max(a, b)
    ticks = step_ticks(low, high)
    assert 1 <= len(ticks) <= 12
    assert all(low <= t <= high for t in ticks)
    gaps = {later - earlier for earlier, later in zip(ticks, ticks[1:], strict=False)}
    assert len(gaps) <= 1  # evenly spaced
    for gap in gaps:
        # 1, 2, 2.5 or 5 times a power of ten
        digits = str(gap).rstrip("0")
        assert digits in ("1", "2", "25", "5"), gap
        assert all(t % gap == 0 for t in ticks)


# ---------------------------------------------------------------------------- pseudo-labels
# The pseudo-label table: precision/recall (and LL's share of rejected labels that were
# true) per generation, the mean of each generation's records.


def pseudo_stats(generation: int, step: int, precision: float | None, recall: float | None,
                 rejected_true: float | None = None) -> ev.PseudoLabelStats:
    return ev.PseudoLabelStats(generation, step, step, 1.0, 1.0, precision, recall,
                               None if rejected_true is None else 0.5, rejected_true)


async def test_pseudo_label_table_per_generation(tmp_path: Path) -> None:
    start = ev.RunStarted("runs/x", {}, "cpu", "fp32", 1000, 20, 0, {})
    mile: list[ev.Event] = [start, pseudo_stats(1, 5, 0.5, 0.2), pseudo_stats(1, 10, 0.7, 0.4),
                            pseudo_stats(2, 15, 0.9, 0.5)]
    ll: list[ev.Event] = [start, pseudo_stats(1, 5, 1.0, 0.3, None),
                          pseudo_stats(2, 15, 0.8, 0.35, 0.25)]
    softmax: list[ev.Event] = [start]
    dirs = [write_run(tmp_path, "a-mile", mile), write_run(tmp_path, "b-ll", ll, schema="LL-R"),
            write_run(tmp_path, "c-softmax", softmax, schema="softmax")]
    app = CompareApp(dirs)
    async with app.run_test(size=LARGE) as pilot:
        screen = await loaded(pilot)
        table = screen.query_one("#cmp-pseudo", DataTable)
        assert table.display
        assert [row[1:] for row in cells(table)] == [
            ["0.600/0.300", "0.900/0.500"],
            ["1.000/0.300", "0.800/0.350 · 25%"],
            ["–", "–"],
        ]
        assert "precision/recall" in str(screen.query_one("#cmp-pseudo-title", Static).content)


async def test_no_pseudo_label_table_without_true_sets(tmp_path: Path) -> None:
    start = ev.RunStarted("runs/x", {}, "cpu", "fp32", 1000, 20, 0, {})
    dirs = [write_run(tmp_path, "a", [start, pseudo_stats(1, 5, None, None)]),
            write_run(tmp_path, "b", [start], schema="sigmoid")]
    app = CompareApp(dirs)
    async with app.run_test(size=SMALL) as pilot:
        screen = await loaded(pilot)
        assert not screen.query_one("#cmp-pseudo", DataTable).display
        assert not screen.query_one("#cmp-pseudo-title", Static).display


# ---------------------------------------------------------------------------- snapshots
def console_with_compare(settings_file: Path, then: str | None = None) -> tuple[App[Any], Any]:
    """The console itself (its style sheet and theme) with the compare screen pushed over
    it, as the Runs screen does; `then`: a key to press once it is drawn."""
    app = create_app(settings_file)
    runs = demo_runs(Path("runs"))  # relative: the working folder is a fresh temporary one

    async def open_compare(pilot: Pilot[None]) -> None:
        await pilot.pause()
        app.push_screen(CompareScreen(runs))
        await loaded(pilot)
        if then is not None:
            await pilot.press(then)
        await pilot.pause()

    return app, open_compare


@SIZES
def test_compare_charts_snapshot(snap_compare: Any, settings_file: Path,
                                 size: tuple[int, int]) -> None:
    app, run_before = console_with_compare(settings_file)
    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_compare_tables_snapshot(snap_compare: Any, settings_file: Path,
                                 size: tuple[int, int]) -> None:
    app, run_before = console_with_compare(settings_file, then="4")
    assert snap_compare(app, terminal_size=size, run_before=run_before)
