"""Pilot tests of the console driving the real engine on tiny CPU settings."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from textual.widgets import Input, Select, Static

from mile_engine import events as ev
from mile_engine.data.tiles import GridSource
from mile_tui.app import DRAIN_INTERVAL, MileApp, create_app
from mile_tui.screens.dialogs import ConfirmScreen
from mile_tui.screens.settings import SettingsScreen
from mile_tui.widgets.run_view import RunView
from tests.tui.conftest import wait_for

SIZE = (100, 30)


def slow_batches(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make every training batch take a little longer, so the UI sees each phase."""
    original = GridSource.train_batch

    def train_batch(self: GridSource):  # type: ignore[no-untyped-def]
        time.sleep(seconds)
        return original(self)

    monkeypatch.setattr(GridSource, "train_batch", train_batch)


async def type_into(pilot, app: MileApp, name: str, text: str) -> None:  # type: ignore[no-untyped-def]
    """Replace a setting's text the way a user would: focus, clear, type."""
    editor = app.settings_screen.query_one(f"#field-{name}", Input)
    editor.focus()
    editor.value = ""
    await pilot.press(*text)
    await pilot.pause()


async def start_and_wait(pilot, app: MileApp, steps: int) -> RunView:  # type: ignore[no-untyped-def]
    """Start a run from the settings screen (F5); return once it has taken `steps` steps."""
    await pilot.press("f5")
    view = app.run_screen.view
    await wait_for(pilot, lambda: view.global_step >= steps)
    return view


def error_text(app: MileApp, name: str) -> str:
    """What the error line under a setting says."""
    return str(app.settings_screen.query_one(f"#error-{name}", Static).render())


async def test_edit_and_save_keeps_comments(settings_file: Path) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SIZE) as pilot:
        await type_into(pilot, app, "k_t", "5")
        assert "●" in str(app.settings_screen.query_one("#label-k_t").render())
        assert "unsaved" in app.screen.sub_title
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "unsaved" not in app.screen.sub_title
    text = settings_file.read_text()
    assert "k_t = 5" in text
    assert "# my experiment: tiny digits run" in text
    assert "# small batches for a 2-core CPU" in text
    assert 'model = "resnet18-10"  # the 10-class backbone' in text
    assert text.index("[optim]") < text.index("[mile]")  # key order kept


async def test_invalid_value_shows_message_and_blocks_start(settings_file: Path) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SIZE) as pilot:
        await type_into(pilot, app, "k_t", "0")
        assert "'k_t' must be an integer >= 1, got 0." in error_text(app, "k_t")
        await pilot.press("f5")
        await pilot.pause()
        assert app.worker is None
        assert isinstance(app.screen, SettingsScreen)
        await type_into(pilot, app, "lr", "fast")
        assert ("'lr' must be a number strictly between 0 and 10, got 'fast'"
                in error_text(app, "lr"))


async def test_nonexistent_path_is_flagged(settings_file: Path) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SIZE) as pilot:
        await type_into(pilot, app, "mnist_path", "no/such/folder")
        assert "no such file or folder" in error_text(app, "mnist_path")


async def test_model_dataset_mismatch_is_shown_and_blocks_start(settings_file: Path) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SIZE) as pilot:
        app.settings_screen.query_one("#field-model", Select).value = "resnet50"
        await pilot.pause()
        banner = str(app.settings_screen.query_one("#banner", Static).render())
        assert "Cannot start" in banner and "resnet50" in banner
        await pilot.press("f5")
        await pilot.pause()
        assert app.worker is None


async def test_run_shows_phase_change_and_finishes(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_batches(monkeypatch, 0.25)  # each phase outlasts a redraw interval
    app = create_app(settings_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        head = app.run_screen.query_one("#phase-head", Static)
        await wait_for(pilot, lambda: "interactive" in str(head.render()))
        await wait_for(pilot, lambda: "imitation" in str(head.render()))
        await wait_for(pilot, lambda: app.run_screen.view.status == "finished")
        view = app.run_screen.view
        assert [row.generation for row in view.evals] == [1, 2]
        phases = [p.phase for p in view.losses]
        assert phases[:3] == ["interactive"] * 3 and phases[3:5] == ["imitation"] * 2
        assert view.pseudo, "pseudo-label density reaches the panel"
        assert view.checkpoints, "the run's saves reach the checkpoint panel"


async def test_pause_stops_the_step_counter_and_stop_ends_the_worker(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_batches(monkeypatch, 0.05)
    app = create_app(settings_file, ["epoch_num=100"])
    async with app.run_test(size=SIZE) as pilot:
        view = await start_and_wait(pilot, app, steps=2)
        await pilot.press("p")
        await wait_for(pilot, lambda: view.status == "paused")
        paused_at = view.global_step
        await pilot.pause(0.6)
        assert view.global_step == paused_at
        await pilot.press("p")
        await wait_for(pilot, lambda: view.global_step > paused_at)
        await pilot.press("x")
        started = time.monotonic()
        await wait_for(pilot, lambda: not app.running, timeout=10)
        assert time.monotonic() - started < 5
        await wait_for(pilot, lambda: view.status == "stopped")


async def test_engine_error_is_shown_and_app_stays_usable(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: GridSource):  # type: ignore[no-untyped-def]
        raise RuntimeError("the data source broke")

    monkeypatch.setattr(GridSource, "train_batch", broken)
    app = create_app(settings_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        view = app.run_screen.view
        await wait_for(pilot, lambda: view.status == "failed")
        assert "the data source broke" in (view.error or "")
        log_text = "\n".join(strip.text for strip in app.run_screen.query_one("#log").lines)
        assert "the data source broke" in log_text
        await pilot.press("f2")
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen)


async def test_quit_during_a_run_asks_then_stops_cleanly(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_batches(monkeypatch, 0.05)
    app = create_app(settings_file, ["epoch_num=100"])
    async with app.run_test(size=SIZE) as pilot:
        await start_and_wait(pilot, app, steps=1)
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert app.running
        await pilot.press("ctrl+q")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.is_running or not app.running, timeout=10)
    assert app.worker is not None and not app.running
    run_dirs = list(Path("runs").iterdir())
    assert "stopped" in (run_dirs[0] / "run.log").read_text()


async def test_missing_file_offers_to_create_it(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = create_app(Path("mile.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await pilot.pause()
    text = (tmp_path / "mile.toml").read_text()
    assert "[mile]" in text and "# Allowed:" in text


async def test_redraws_are_bounded_however_fast_events_come(settings_file: Path) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        step = ev.StepLogged(1, "interactive", 1, 3, 1, 6, 0.5, 0.05, 100.0, 0.1)

        def flood() -> None:
            # Far faster than any screen could follow: about 20,000 events a second.
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                for _ in range(200):
                    app.buffer.put(step)
                time.sleep(0.01)

        started = time.monotonic()
        thread = threading.Thread(target=flood)
        thread.start()
        while thread.is_alive():
            await pilot.pause(0.02)
        await pilot.pause(0.3)
        elapsed = time.monotonic() - started
        assert len(app.run_screen.view.losses) > 0
        assert app.drains <= elapsed / DRAIN_INTERVAL + 2


async def test_resume_from_the_selected_save(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_batches(monkeypatch, 0.05)
    app = create_app(settings_file, ["epoch_num=100"])
    async with app.run_test(size=SIZE) as pilot:
        view = await start_and_wait(pilot, app, steps=2)
        await pilot.press("x")
        await wait_for(pilot, lambda: view.status == "stopped" and not app.running)
        stopped_at, run_dir = view.global_step, view.run_dir
        assert view.checkpoints and view.checkpoints[-1].reason == "stop"
        assert app.run_screen.selected_checkpoint == view.checkpoints[-1].path
        await pilot.press("r")
        await wait_for(pilot, lambda: view.global_step > stopped_at)
        assert view.run_dir == run_dir  # the run goes on in its own folder
        assert any(c.reason == "stop" for c in view.checkpoints)  # earlier saves listed
        await pilot.press("x")
        await wait_for(pilot, lambda: not app.running)


async def test_autostart_opens_the_run_screen_and_trains(settings_file: Path) -> None:
    app = create_app(settings_file, autostart=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.worker is not None)
        assert app.screen is app.run_screen
        await pilot.press("x")
        await wait_for(pilot, lambda: not app.running)
        assert app.run_screen.view.status in ("stopped", "finished")


async def test_checkpoint_browser_opens_and_closes(settings_file: Path) -> None:
    from mile_tui.checkpoint_browser import CheckpointBrowser

    app = create_app(settings_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        await pilot.pause()
        assert isinstance(app.screen, CheckpointBrowser)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen)


async def test_data_preparation_shows_its_progress_before_the_run(settings_file: Path) -> None:
    # What a first ImageNet start (a folder scan) or an MNIST download reports.
    app = create_app(settings_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")

        def panel(part: str) -> str:
            return str(app.run_screen.query_one(f"#phase-{part}", Static).render())

        app.buffer.put(ev.DataProgress("scanning /data/train", 340, 1000))
        await wait_for(pilot, lambda: "Preparing data" in panel("head"))
        assert "scanning /data/train" in panel("head") and panel("stats") == "340/1,000"
        app.buffer.put(ev.DataProgress("scanning /data/train", 1000, 1000))
        await wait_for(pilot, lambda: panel("stats") == "1,000/1,000")
        log_text = "\n".join(strip.text for strip in app.run_screen.query_one("#log").lines)
        assert "scanning /data/train: 1,000/1,000" in log_text
        app.buffer.put(ev.RunEnded("failed", 0, 0.0, None, "no images"))
        await wait_for(pilot, lambda: "Preparing data" not in panel("head"))
