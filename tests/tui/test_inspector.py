"""The sample inspector: Pilot navigation, the label columns, and an SVG snapshot.

Update the snapshot after an intended change with:
pytest tests/tui/test_inspector.py --snapshot-update
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Static

from mile_tui.checkpoint_browser import CheckpointsApp
from mile_tui.inspector import HALF_BLOCK, HalfBlocks, InspectorApp, InspectorScreen, fit
from tests.helpers.trained import TrainedRun, fixed_checkpoint, train_tiny

SIZE = (110, 36)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    return train_tiny(tmp_path_factory.mktemp("runs"), lr=0.005)


def _text(screen: InspectorScreen, widget: str) -> str:
    console = Console(width=120, color_system=None)
    with console.capture() as capture:
        console.print(screen.query_one(widget, Static).content)
    return capture.get()


async def _settle(pilot: Pilot[Any]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_half_blocks_draw_two_pixel_rows_per_cell() -> None:
    image = torch.tensor([[0, 255], [255, 0], [10, 20]], dtype=torch.uint8)
    scaled = fit(image, 4, 6)
    assert scaled.size == (4, 6) and scaled.getpixel((1, 2)) == (255, 255, 255)  # x2 nearest
    assert fit(torch.zeros(300, 200, 3, dtype=torch.uint8), 20, 20).size == (13, 20)
    console = Console(width=20, color_system="truecolor")
    with console.capture() as capture:
        console.print(HalfBlocks(image, 2, 2))
    lines = capture.get().splitlines()
    assert len(lines) == 2 and lines[0].count(HALF_BLOCK) == 2
    assert "38;2;0;0;0" in lines[0] and "48;2;255;255;255" in lines[0]  # fg top, bg bottom


@pytest.mark.slow
async def test_inspector_navigates_and_shows_the_label_columns(run: TrainedRun) -> None:
    app = InspectorApp(run.checkpoint)
    async with app.run_test(size=SIZE) as pilot:
        await _settle(pilot)
        screen = app.inspector
        inspection = screen.inspection
        assert inspection is not None and screen.view is not None
        last = inspection.size - 1
        for key, index in ((None, 0), ("n", 1), ("p", 0), ("left", last), ("right", 0)):
            if key is not None:
                await pilot.press(key)
                await _settle(pilot)
            assert screen.index == index
            view = inspection.sample(index)
            lines = _text(screen, "#labels").splitlines()
            assert lines[0].split()[:3] == ["label", "ReaL", "set"] and "teacher" in lines[0]
            assert lines[1].split()[:2] == [str(view.label), str(view.real[0])]
            real_column = [line[lines[0].index("ReaL"):].split()[0] for line in lines[1:]
                           if line[lines[0].index("ReaL"):].strip()
                           and not line.startswith("F1")]
            assert real_column[:len(view.real)] == [str(c) for c in view.real]
            top = view.prediction[0]
            assert f"{top.name} {top.prob:.2f}" in lines[1]
            assert "F1 against ReaL" in lines[-1]
            assert f"image {index + 1} of {inspection.size}" in _text(screen, "#status")
        assert "pseudo-labels added" in _text(screen, "#classes")
        await pilot.press("r")
        await _settle(pilot)
        assert 0 <= screen.index < inspection.size
        assert screen.view is not None and screen.view.index == screen.index


async def test_inspector_reports_a_bad_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nothing")
    app = InspectorApp(bad)
    async with app.run_test(size=SIZE) as pilot:
        await _settle(pilot)
        assert "cannot inspect" in _text(app.inspector, "#labels")
        await pilot.press("n")  # nothing to move: no crash
        await pilot.press("q")


def test_inspector_snapshot(snap_compare: Any, tmp_path: Path) -> None:
    checkpoint = fixed_checkpoint(tmp_path / "run")

    async def settle(pilot: Pilot[Any]) -> None:
        await _settle(pilot)
        await pilot.press("n")
        await _settle(pilot)
        # The path is a temporary folder: hide it so that the snapshot is stable.
        status = pilot.app.screen.query_one("#status", Static)
        status.update(str(status.content).replace(str(checkpoint), "run/fixed.pt"))
        await pilot.pause()

    assert snap_compare(InspectorApp(checkpoint), terminal_size=SIZE, run_before=settle)


@pytest.mark.slow
async def test_checkpoint_browser_opens_the_inspector_on_the_selected_save(
    run: TrainedRun,
) -> None:
    app = CheckpointsApp(run.checkpoint.parent.parent)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("i")
        await _settle(pilot)
        inspector = app.screen
        assert isinstance(inspector, InspectorScreen)
        assert isinstance(inspector.target, (Path, str))  # a save, not a live trainer
        assert Path(inspector.target) == run.checkpoint
        assert inspector.inspection is not None
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.browser


@pytest.mark.slow
async def test_run_screen_i_opens_the_inspector_on_the_live_trainer(
    settings_file: Path,
) -> None:
    from mile_tui.app import create_app
    from tests.helpers.pilot import wait_for

    app = create_app(settings_file)
    async with app.run_test(size=SIZE) as pilot:
        app.action_start_run()
        await wait_for(pilot, lambda: app.trainer is not None)
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, InspectorScreen)
                       and app.screen.view is not None)
        screen = app.screen
        assert isinstance(screen, InspectorScreen) and screen.live
        assert screen.inspection is not None and screen.inspection.trainer is app.trainer
        assert "live run" in _text(screen, "#status")
        await wait_for(pilot, lambda: not app.running)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, InspectorScreen)
        assert app.trainer is not None
        assert screen.inspection.pending is None  # no request left with the trainer
