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
