"""The checkpoint browser, driven with Textual's Pilot."""

from __future__ import annotations

from pathlib import Path

import torch
from textual.widgets import DataTable, Static

from mile_engine.runstore.manifest import read_records
from mile_tui.checkpoint_browser import CheckpointBrowser, CheckpointsApp
from mile_tui.screens.dialogs import ConfirmScreen
from tests.helpers.runs import make_run


def _status(app: CheckpointsApp) -> str:
    return str(app.screen.query_one("#status", Static).render())


def _marks(browser: CheckpointBrowser) -> list[str]:
    table = browser.query_one("#saves", DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def test_browser_lists_runs_and_marks_best_and_newest(tmp_path: Path) -> None:
    make_run(tmp_path, [0.3], name="a-old")
    run_dir = make_run(tmp_path, [0.9, 0.1, 0.2, None], name="b-new")
    app = CheckpointsApp(tmp_path, keep_last=1)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        browser = app.browser
        assert browser.query_one("#runs", DataTable).row_count == 2
        assert browser.run is not None and browser.run.path == run_dir  # the newest run
        assert _marks(browser) == ["●", "", "", "★"]  # newest first: ● newest, ★ best
        details = str(browser.query_one("#details", Static).render())
        assert "global step 20" in details and "k_t=3" in details

        await pilot.press("down")  # the other, older run (runs are listed newest first)
        await pilot.pause()
        assert browser.run is not None and browser.run.path.name == "a-old"
        assert _marks(browser) == ["★●"]
        await pilot.press("up")
        await pilot.pause()
        assert browser.run.path == run_dir


async def test_browser_verify_delete_prune_export(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.9, 0.1, 0.2, 0.3], real_model=False)
    files = [r.file for r in read_records(run_dir)]
    app = CheckpointsApp(tmp_path, run_dir, keep_last=1)
    async with app.run_test(size=(140, 40)) as pilot:
        browser = app.browser
        await pilot.pause()
        browser.query_one("#saves", DataTable).focus()

        await pilot.press("v")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "all 4 checkpoint(s) ok" in _status(app)

        await pilot.press("d")  # the cursor is on the newest: refused, nothing asked
        await pilot.pause()
        assert "not deleted" in _status(app)
        assert not isinstance(app.screen, ConfirmScreen)

        await pilot.press("down", "d")  # files[2]
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert "cancelled" in _status(app) and (run_dir / files[2]).exists()
        await pilot.press("d", "y")
        await pilot.pause()
        assert not (run_dir / files[2]).exists()
        assert [r.file for r in read_records(run_dir)] == [files[0], files[1], files[3]]

        await pilot.press("p", "y")  # keep 1 newest and the best
        await pilot.pause()
        assert [r.file for r in read_records(run_dir)] == [files[0], files[3]]
        assert "pruned 1" in _status(app)

        out = tmp_path / "exported.pt"
        await pilot.press("e")
        await pilot.pause()
        field = app.screen.query_one("#export-path")
        field.value = str(out)  # type: ignore[attr-defined]
        await pilot.press("enter")
        await pilot.pause()
        assert out.exists() and "exported" in _status(app)
        weights = torch.load(out, weights_only=True)
        assert set(weights) == {"fc.weight", "fc.bias"}

        await pilot.press("q")
    assert app.return_code == 0


async def test_browser_can_be_pushed_by_another_app(tmp_path: Path) -> None:
    from textual.app import App

    make_run(tmp_path, [0.5])

    class Host(App[None]):
        pass

    host = Host()
    async with host.run_test() as pilot:
        await host.push_screen(CheckpointBrowser(tmp_path))
        await pilot.pause()
        assert isinstance(host.screen, CheckpointBrowser)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(host.screen, CheckpointBrowser)
