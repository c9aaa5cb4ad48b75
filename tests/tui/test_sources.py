"""The run sources: a run the console trains (`LocalRun`) and a run folder followed from
disk (`FollowedRun`) tell the same status, "paused" included. While the run on screen is
paused, the footer offers p to go on and not r (which resumes from a save), and the Runs
screen lists the run as paused."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable

from mile_engine import events as ev
from mile_engine.data import Batch
from mile_engine.data.tiles import GridSource
from mile_engine.runstore.layout import METRICS_FILE, REQUEST_FILE
from mile_engine.runstore.lock import hold_active
from mile_engine.runstore.records import event_record
from mile_engine.runstore.steering import SteeringError
from mile_tui.app import MileApp, create_app
from mile_tui.screens.help import HelpScreen
from mile_tui.sources import FollowedRun
from mile_tui.widgets.log import LogPanel
from tests.helpers.pilot import wait_for
from tests.helpers.runs import write_run

SMALL = (80, 24)


def append(run_dir: Path, *events: ev.Event) -> None:
    """Records appended to the run's metrics.jsonl, as its trainer writes them."""
    with (run_dir / METRICS_FILE).open("a", encoding="utf-8") as fh:
        for event in events:
            fh.write(json.dumps(event_record(event)) + "\n")


def footer_keys(app: MileApp) -> dict[str, str]:
    """The keys the run screen offers now (footer and help), with what each says."""
    return {key: active.binding.description
            for key, active in app.screen.active_bindings.items()}


def listed_status(app: MileApp) -> str:
    """The status cell of the Runs screen's first row."""
    table = app.runs_screen.query_one(DataTable)
    keys = [str(c.key.value) for c in table.ordered_columns]
    if not table.row_count or "status" not in keys:
        return ""
    return str(table.get_row_at(0)[keys.index("status")])


# ---------------------------------------------------------------------------- followed
def test_a_followed_runs_status_comes_from_its_records_and_its_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = write_run(tmp_path, "r", end=None, f1s=(0.4,))
    lock = hold_active(run_dir)
    source = FollowedRun(run_dir)
    source.history()
    assert (source.status, source.live) == ("running", True)
    append(run_dir, ev.Paused(5))
    assert source.poll() == [ev.Paused(5)] and source.status == "paused"
    # What a paused trainer may still write leaves it paused.
    append(run_dir, ev.Steered("save", 5),
           ev.CheckpointSaved(f"{run_dir}/step-00000005-request.pt", 2, "interactive", 5,
                              "request"))
    source.poll()
    assert source.status == "paused"
    source.resume()  # the request file, as `mile-tui runs resume` writes it
    assert (run_dir / REQUEST_FILE).read_text() == "resume\n"
    append(run_dir, ev.Steered("resume", 5), ev.Resumed(5))
    source.poll()
    assert (source.status, source.live) == ("running", True)
    # Killed without an end record: noticed at the next look at its lock.
    monkeypatch.setattr("mile_tui.sources.LOCK_CHECK_INTERVAL", 0.0)
    assert lock is not None
    lock.close()
    assert source.poll() == [] and (source.status, source.live) == ("interrupted", False)
    with pytest.raises(SteeringError, match="not running"):
        source.stop()


def test_a_followed_run_that_ends_says_how(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "r", end=None, f1s=(0.4,))
    lock = hold_active(run_dir)
    try:
        source = FollowedRun(run_dir)
        source.history()
        append(run_dir, ev.Paused(5), ev.RunEnded("stopped", 5, 9.0, None))
        source.poll()
        assert (source.status, source.live) == ("stopped", False)
    finally:
        if lock is not None:
            lock.close()


async def test_a_paused_followed_run_offers_p_not_r_and_is_listed_paused(
        settings_file: Path) -> None:
    run_dir = write_run(Path("runs"), "20260101-120000-digits-mile", end=None, f1s=(0.4,))
    append(run_dir, ev.Paused(5))
    lock = hold_active(run_dir)
    try:
        app = create_app(settings_file, watch=run_dir)
        async with app.run_test(size=SMALL) as pilot:
            await wait_for(pilot, lambda: app.followed is not None)
            await pilot.pause()
            assert app.screen is app.run_screen and app.run_screen.view.status == "paused"
            keys = footer_keys(app)
            assert keys.get("p") == "Unpause" and "r" not in keys
            await pilot.press("f1")  # the help says the same
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            described = {key: e.description for e in app.screen.entries for key in e.keys}
            assert described["p"].startswith("Unpause") and "r" not in described
            await pilot.press("escape")
            await pilot.pause()
            await pilot.press("p")
            assert (run_dir / REQUEST_FILE).read_text() == "resume\n"
            await pilot.press("f6")
            await wait_for(pilot, lambda: listed_status(app) == "paused")
            # The trainer goes on: the footer offers to pause again, and r once more.
            append(run_dir, ev.Steered("resume", 5), ev.Resumed(5))
            await pilot.press("f3")
            await wait_for(pilot, lambda: footer_keys(app).get("p") == "Pause")
            assert "r" in footer_keys(app) and app.run_screen.view.status == "running"
            await pilot.press("f6")
            await wait_for(pilot, lambda: listed_status(app) == "running here")
    finally:
        if lock is not None:
            lock.close()


# ---------------------------------------------------------------------------- local
async def test_a_paused_local_run_offers_p_not_r_and_is_listed_paused(
        settings_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = GridSource.train_batch

    def slow(self: GridSource) -> Batch:
        time.sleep(0.05)  # every phase lasts long enough to be paused in
        return original(self)

    monkeypatch.setattr(GridSource, "train_batch", slow)
    app = create_app(settings_file, ["epoch_num=100"])
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("f5")
        view = app.run_screen.view
        await wait_for(pilot, lambda: view.global_step >= 1)
        assert footer_keys(app).get("p") == "Pause"
        await pilot.press("p")
        await pilot.pause()
        # Paused as soon as asked (the Control), before the trainer's answer.
        assert app.source is not None and app.source.status == "paused"
        keys = footer_keys(app)
        assert keys.get("p") == "Unpause" and "r" not in keys
        await wait_for(pilot, lambda: view.status == "paused")  # the trainer's record
        await pilot.press("f6")
        await wait_for(pilot, lambda: listed_status(app) == "paused")
        await pilot.press("f3", "p")
        await wait_for(pilot, lambda: view.status == "running")
        keys = footer_keys(app)
        assert keys.get("p") == "Pause" and "r" in keys
        await pilot.press("x")
        await wait_for(pilot, lambda: not app.running)
        assert view.status == "stopped"


# ---------------------------------------------------------------------------- snapshot
def test_paused_footer_small(snap_compare: Any, settings_file: Path) -> None:
    run_dir = write_run(Path("runs"), "demo", end=None, f1s=(0.4, 0.55))
    append(run_dir, ev.Paused(10))
    app = create_app(settings_file)

    async def show_paused(pilot: Any) -> None:
        # Followed without its lock or a timer: nothing on screen depends on a process.
        source = FollowedRun(run_dir)
        await pilot.press("f3")
        app.run_screen.query_one(LogPanel).timestamps = False
        app.run_screen.show_history(source.history(), str(run_dir))
        app.source = source
        app.refresh_bindings()
        await pilot.pause()

    assert snap_compare(app, terminal_size=SMALL, run_before=show_paused)
