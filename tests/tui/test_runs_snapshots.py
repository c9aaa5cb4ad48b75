"""SVG snapshots of the Runs screen at 80×24 and 120×36: run folders written by the test
with fixed records and times, one of them held by "another machine" (its lock holder is
fixed here, so no pid or host name of the test machine is in the picture).

Update after an intended change with:
pytest tests/tui/test_runs_snapshots.py --snapshot-update
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from mile_tui.app import create_app
from tests.helpers.pilot import wait_for
from tests.helpers.runs import every_status, write_run

SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
LIVE = "20260101-160000-fashion-mnist-mile"


@pytest.fixture
def fixed_runs(settings_file: Path, utc: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every status, and a run trained on gpu-node-7 by pid 4242."""
    every_status(Path("runs"))
    write_run(Path("runs"), LIVE, dataset="fashion-mnist", end=None, hour=4,
              f1s=(0.52, 0.61, 0.58))

    def holder(run_dir: Path) -> tuple[str, int] | None:
        return ("gpu-node-7", 4242) if Path(run_dir).name == LIVE else None

    monkeypatch.setattr("mile_engine.runstore.catalog.active_holder", holder)
    return settings_file


@SIZES
def test_runs_screen(snap_compare: Any, fixed_runs: Path, size: tuple[int, int]) -> None:
    app = create_app(fixed_runs)

    async def settle(pilot: Pilot[None]) -> None:
        await wait_for(pilot, lambda: app.runs_screen.loaded)
        await pilot.pause()
        await pilot.press("down", "space")  # mark the second run; the cursor moves on
        await pilot.press("up", "up")  # back on the live run: its holder under the table
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=settle)


def test_runs_screen_filtered_and_sorted_small(snap_compare: Any, fixed_runs: Path) -> None:
    app = create_app(fixed_runs)

    async def settle(pilot: Pilot[None]) -> None:
        await wait_for(pilot, lambda: app.runs_screen.loaded)
        await pilot.press("slash", *"digits", "enter")
        while app.runs_screen.sort.column != "best":
            await pilot.press("o")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


# Runs of one day whose names differ only in their time (and two in their end): cut in
# the middle they all read `20261203-203…4-digits-mile`.
ONE_DAY = ("20261203-203104-digits-mile", "20261203-203914-digits-mile",
           "20261203-204454-fashion-mnist-mile", "20261203-205004-fashion-mnist-mile")


@pytest.fixture
def one_day(settings_file: Path, utc: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Four runs of one day, the newest trained on gpu-node-7 by pid 4242."""
    for hour, name in enumerate(ONE_DAY):
        write_run(Path("runs"), name, dataset="fashion-mnist" if "fashion" in name
                  else "digits", end=None if name == ONE_DAY[-1] else "finished",
                  hour=hour, f1s=(0.41, 0.52))

    def holder(run_dir: Path) -> tuple[str, int] | None:
        return ("gpu-node-7", 4242) if Path(run_dir).name == ONE_DAY[-1] else None

    monkeypatch.setattr("mile_engine.runstore.catalog.active_holder", holder)
    return settings_file


def test_runs_of_one_day_keep_their_time_and_end_small(snap_compare: Any,
                                                       one_day: Path) -> None:
    app = create_app(one_day)

    async def settle(pilot: Pilot[None]) -> None:
        await wait_for(pilot, lambda: app.runs_screen.loaded)
        await pilot.pause()
        # Every row tells its run apart: the time and the end of its name are on screen.
        table = app.runs_screen.query_one(DataTable)
        names = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
        for name, shown in zip(reversed(ONE_DAY), names, strict=True):
            assert name[9:15] in shown and shown.endswith(name[-6:]), shown

    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)
