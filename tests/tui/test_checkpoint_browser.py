"""The checkpoint browser, driven with Textual's Pilot."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from mile_engine.runstore.layout import MANIFEST_FILE
from mile_engine.runstore.manifest import read_records
from mile_tui.checkpoint_browser import (
    CheckpointBrowser,
    CheckpointsApp,
    Column,
    visible_columns,
)
from mile_tui.marks import file_size
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
        await app.workers.wait_for_complete()  # the runs are read in a thread
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


async def test_arrows_move_between_the_panes_and_the_saves_title_names_the_run(
        tmp_path: Path) -> None:
    make_run(tmp_path, [0.3], name="20261203-203104-digits-mile")
    make_run(tmp_path, [0.9, None], name="20261203-203914-digits-mile")
    app = CheckpointsApp(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        browser = app.browser
        runs, saves = browser.query_one("#runs", DataTable), browser.query_one("#saves",
                                                                             DataTable)
        assert app.focused is runs
        title = str(browser.query_one("#saves-title", Static).render())
        assert "203914" in title and "203104" not in title  # the newest run's saves
        await pilot.press("down")  # the older run: the title follows the selection
        await pilot.pause()
        title = str(browser.query_one("#saves-title", Static).render())
        assert "203104" in title and "203914" not in title
        await pilot.press("right")
        assert app.focused is saves
        await pilot.press("left")
        assert app.focused is runs
        assert browser.run is not None and browser.run.name.endswith("203104-digits-mile")


async def test_details_say_a_save_after_an_evaluation_in_words(tmp_path: Path) -> None:
    make_run(tmp_path, [0.9, None])
    app = CheckpointsApp(tmp_path)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        details = str(app.browser.query_one("#details", Static).render())
        assert "imitation step 1" in details  # the newest: saved between evaluations
        app.browser.query_one("#saves", DataTable).focus()
        await pilot.press("down")  # the evaluated one
        await pilot.pause()
        details = str(app.browser.query_one("#details", Static).render())
        assert "after its evaluation" in details and "step 0" not in details


async def test_prune_does_what_its_help_says(tmp_path: Path) -> None:
    # Six saves, the best the oldest: "the max_checkpoint_num newest (3 by default) and
    # the best one" leaves four, whatever the engine's functions are called.
    run_dir = make_run(tmp_path, [0.9, 0.1, 0.2, 0.3, 0.4, 0.5])
    files = [r.file for r in read_records(run_dir)]
    expected = {*files[-3:], files[0]}
    app = CheckpointsApp(tmp_path)  # max_checkpoint_num's default
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        binding = next(b for b in CheckpointBrowser.BINDINGS
                       if not isinstance(b, tuple) and b.action == "prune")
        assert "3 by default" in (binding.tooltip or "") and "best" in (binding.tooltip or "")
        await pilot.press("p", "y")
        await pilot.pause()
    assert {r.file for r in read_records(run_dir)} == expected


# ----------------------------------------------------------------- sizes and columns at 80 columns
SMALL = (80, 24)


def test_sizes_read_as_people_write_them() -> None:
    assert file_size(134_368_983) == "128 MB"
    assert file_size(int(1.2 * 2**30)) == "1.2 GB"
    assert file_size(512 * 1024) == "512 KB"
    assert file_size(int(9.5 * 2**20)) == "9.5 MB"
    assert file_size(900) == "900 B"


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(1, 30)), min_size=1, max_size=10),
    st.integers(0, 200),
)
def test_columns_give_way_by_priority(spec: list[tuple[int, int]], available: int) -> None:
    columns = [Column(f"c{i}", f"c{i}", p) for i, (p, _) in enumerate(spec)]
    widths = {f"c{i}": w for i, (_, w) in enumerate(spec)}
    shown = visible_columns(columns, widths, available)
    keys = [c.key for c in shown]
    assert keys == [c.key for c in columns if c.key in keys]  # display order kept
    assert {c.key for c in columns if c.priority == 0} <= set(keys)
    optional = [c for c in shown if c.priority > 0]
    if optional:  # an optional column is shown only where everything shown fits
        assert sum(widths[k] + 2 for k in keys) <= available
    # A column is never hidden while a less important one, as wide or wider, is shown.
    for hidden in (c for c in columns if c.key not in keys):
        for less in (c for c in optional if c.priority > hidden.priority):
            assert widths[less.key] < widths[hidden.key]


async def test_browser_at_80_columns_keeps_its_key_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the export below writes to a relative path
    make_run(tmp_path, [0.3, 0.5], name="20260101-120000-a-rather-long-run-name-mile")
    app = CheckpointsApp(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        await pilot.pause()
        browser = app.browser
        table = browser.query_one("#saves", DataTable)
        labels = [str(c.label) for c in table.ordered_columns]
        assert {"ReaL F1", "top-1", "size", "gen"} <= set(labels)
        for column in table.ordered_columns:  # no header is cut
            assert column.get_render_width(table) >= len(str(column.label))
        right = table.region.right
        assert right <= SMALL[0] and table.virtual_size.width <= table.size.width
        # The run name is there in full, over as many lines as it takes.
        runs = browser.query_one("#runs", DataTable)
        assert str(runs.get_row_at(0)[0]).replace("\n", "") == browser.runs[0].name

        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one("#export-path", Input).value = "out/w.pt"
        await pilot.press("enter")
        await pilot.pause()
        status = str(browser.query_one("#status", Static).render())
        assert str(Path("out/w.pt").resolve()) in status.replace("\n", "")


def test_browser_second_run_with_the_saves_pane_focused_small(
        snap_compare: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The older of two runs of one day selected, Right pressed: the saves pane, set
    apart by its border and named after the run, has the keys."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.chdir(tmp_path)  # relative folders: no temporary path on screen
    days: list[tuple[str, list[float | None]]] = [
        ("20261203-203104-digits-mile", [0.3, 0.45]),
        ("20261203-203914-digits-mile", [0.9, None])]
    for i, (name, f1s) in enumerate(days):
        run_dir = make_run(Path("runs"), f1s, name=name)
        manifest = run_dir / MANIFEST_FILE
        data = json.loads(manifest.read_text())
        for j, record in enumerate(data["checkpoints"]):
            record["time"] = 1796329864.0 + 600 * i + 60 * j  # 2026-12-03 20:31 UTC on
        manifest.write_text(json.dumps(data))

    async def settle(pilot: Pilot[None]) -> None:
        await pilot.pause()
        await pilot.press("down", "right")
        await pilot.pause()

    try:
        assert snap_compare(CheckpointsApp(Path("runs")), terminal_size=(80, 24),
                            run_before=settle)
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_the_runs_and_their_saves_are_read_off_the_ui_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from mile_engine.runstore import catalog, manifest

    run_dir = make_run(tmp_path, [0.9, 0.2], name="a")
    readers: list[str] = []
    list_runs, listed_saves = catalog.list_runs, manifest.listed_saves

    def spy_runs(roots: Any) -> Any:
        readers.append(threading.current_thread().name)
        return list_runs(roots)

    def spy_saves(path: Path) -> Any:
        readers.append(threading.current_thread().name)
        return listed_saves(path)

    monkeypatch.setattr("mile_tui.checkpoint_browser.list_runs", spy_runs)
    monkeypatch.setattr(manifest, "listed_saves", spy_saves)
    app = CheckpointsApp(tmp_path)
    async with app.run_test(size=(140, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.browser.run is not None and app.browser.run.path == run_dir
        assert len(app.browser.run.records) == 2
        await pilot.press("ctrl+r")
        await app.workers.wait_for_complete()
        await pilot.pause()
    # Every scan of the folder and every manifest read happened in a worker thread.
    assert len(readers) >= 4
    assert threading.main_thread().name not in readers, readers
