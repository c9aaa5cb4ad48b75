"""Pilot tests of the console driving the real engine on tiny CPU settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Select, Static

from mile_engine import events as ev
from mile_engine.control import Control
from mile_engine.data import Batch
from mile_engine.data.tiles import GridSource
from mile_tui.app import MileApp, create_app
from mile_tui.screens.dialogs import ConfirmScreen
from mile_tui.screens.run import DRAIN_INTERVAL
from mile_tui.screens.settings import SettingsScreen
from mile_tui.sources import EventsReady, LocalRun
from mile_tui.widgets.log import LogPanel
from mile_tui.widgets.run_view import RunView
from tests.helpers.pilot import notices, wait_for

SIZE = (100, 30)


def slow_batches(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make every training batch take a little longer, so the UI sees each phase."""
    original = GridSource.train_batch

    def train_batch(self: GridSource) -> Batch:
        time.sleep(seconds)
        return original(self)

    monkeypatch.setattr(GridSource, "train_batch", train_batch)


async def type_into(pilot: Pilot[None], app: MileApp, name: str, text: str) -> None:
    """Replace a setting's text the way a user would: focus, clear, type."""
    editor = app.settings_screen.query_one(f"#field-{name}", Input)
    editor.focus()
    editor.value = ""
    await pilot.press(*text)
    await pilot.pause()


async def start_and_wait(pilot: Pilot[None], app: MileApp, steps: int) -> RunView:
    """Start a run from the settings screen (F5); return once it has taken `steps` steps."""
    await pilot.press("f5")
    view = app.run_screen.view
    await wait_for(pilot, lambda: view.global_step >= steps)
    return view


def error_text(app: MileApp, name: str) -> str:
    """What the error line under a setting says."""
    return str(app.settings_screen.query_one(f"#error-{name}", Static).render())


def record_events(app: MileApp, react: Callable[[ev.Event], None] = lambda e: None,
                  ) -> list[ev.Event]:
    """Keep every event the trainer sends the app, in order, as it sends it (in its thread);
    `react` sees each one first, e.g. to pause the run at a known point."""
    events: list[ev.Event] = []
    put = app.buffer.put

    def recording_put(event: ev.Event) -> None:
        react(event)
        events.append(event)
        put(event)

    app.buffer.put = recording_put  # type: ignore[method-assign]
    return events


def steps_logged(events: list[ev.Event]) -> int:
    """The global step of the newest progress record (log_every = 1: every step)."""
    return max((e.global_step for e in events if isinstance(e, ev.StepLogged)), default=0)


class WatchedControl(Control):
    """The run's Control, telling the test what the trainer did with its requests."""

    def __init__(self, steps: Callable[[], int]) -> None:
        super().__init__()
        self._steps = steps
        self.held = threading.Event()  # the trainer waited out a whole poll while paused
        self.stopped_after: int | None = None  # steps taken when stop was asked

    def wait_while_paused(self, timeout: float = 0.1) -> bool:
        still_paused = super().wait_while_paused(timeout)
        if still_paused:
            self.held.set()
        return still_paused

    def stop(self) -> None:
        if self.stopped_after is None:
            self.stopped_after = self._steps()
        super().stop()


async def test_edit_and_save_keeps_comments(settings_file: Path) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SIZE) as pilot:
        await type_into(pilot, app, "k_t", "5")
        assert "●" in str(app.settings_screen.query_one("#label-k_t").render())
        assert app.screen.sub_title is not None and "unsaved" in app.screen.sub_title
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen.sub_title is not None and "unsaved" not in app.screen.sub_title
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
        # resnet18-10 names its 10 classes; ImageNet has 1000.
        app.settings_screen.query_one("#field-dataset", Select).value = "imagenet"
        await pilot.pause()
        banner = str(app.settings_screen.query_one("#banner", Static).render())
        assert "Cannot start" in banner and "resnet18-10" in banner
        await pilot.press("f5")
        await pilot.pause()
        assert app.worker is None


@pytest.mark.slow
async def test_run_shows_phase_change_and_finishes(settings_file: Path) -> None:
    app = create_app(settings_file)

    def pause_at_first_phases(event: ev.Event) -> None:
        # Hold the trainer at the start of each phase of generation 1, so the screen is
        # checked while that phase is on, however fast or slow the machine.
        if isinstance(event, ev.PhaseStarted) and event.generation == 1:
            assert app.source is not None
            app.source.pause()

    record_events(app, pause_at_first_phases)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        view = app.run_screen.view
        head = app.run_screen.query_one("#phase-head", Static)
        for phase in ("interactive", "imitation"):

            def paused_in(p: str = phase) -> bool:
                return p in str(head.render()) and view.status == "paused"

            await wait_for(pilot, paused_in)
            await pilot.press("p")
        await wait_for(pilot, lambda: view.status == "finished")
        assert [row.generation for row in view.evals] == [1, 2]
        phases = [p.phase for p in view.losses]
        assert phases[:3] == ["interactive"] * 3 and phases[3:5] == ["imitation"] * 2
        assert view.pseudo, "pseudo-label density reaches the panel"
        assert view.checkpoints, "the run's saves reach the checkpoint panel"


@pytest.mark.slow
async def test_pause_stops_the_step_counter_and_stop_ends_the_worker(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_batches(monkeypatch, 0.05)
    app = create_app(settings_file, ["epoch_num=100"])
    pause_mid_generation = threading.Event()

    def react(event: ev.Event) -> None:
        # Once armed, pause after the 2nd step of a generation (k_t + k_s = 5), 3 steps
        # before the next boundary, so a stop that waits for a boundary shows.
        if (pause_mid_generation.is_set() and isinstance(event, ev.StepLogged)
                and event.global_step % 5 == 2):
            pause_mid_generation.clear()
            control.pause()

    events = record_events(app, react)
    control = WatchedControl(lambda: steps_logged(events))
    monkeypatch.setattr("mile_tui.sources.Control", lambda: control)
    async with app.run_test(size=SIZE) as pilot:
        view = await start_and_wait(pilot, app, steps=2)
        await pilot.press("p")
        await wait_for(pilot, lambda: view.status == "paused")
        await wait_for(pilot, control.held.is_set)  # the trainer sits in its pause
        paused_at = steps_logged(events)
        assert view.global_step == paused_at
        await pilot.press("p")
        await wait_for(pilot, lambda: view.global_step > paused_at)
        kinds = [type(e).__name__ for e in events]
        assert kinds.index("Resumed") == kinds.index("Paused") + 1  # no step while paused

        control.held.clear()
        pause_mid_generation.set()
        await wait_for(pilot, control.held.is_set)
        held_at = steps_logged(events)
        await pilot.press("x")  # a stop wakes the paused trainer, which ends where it is
        await wait_for(pilot, lambda: not app.running)
        await wait_for(pilot, lambda: view.status == "stopped")
    (ended,) = [e for e in events if isinstance(e, ev.RunEnded)]
    assert ended.status == "stopped"
    assert held_at % 5 == 2 and ended.global_step == held_at
    assert control.stopped_after == held_at


async def test_engine_error_is_shown_and_app_stays_usable(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: GridSource) -> Batch:
        raise RuntimeError("the data source broke")

    monkeypatch.setattr(GridSource, "train_batch", broken)
    app = create_app(settings_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        view = app.run_screen.view
        await wait_for(pilot, lambda: view.status == "failed")
        assert "the data source broke" in (view.error or "")
        log = app.run_screen.query_one("#log", LogPanel)
        log_text = "\n".join(strip.text for strip in log.lines)
        assert "the data source broke" in log_text
        await pilot.press("f2")
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen)


@pytest.mark.slow
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
        await wait_for(pilot, lambda: not app.is_running or not app.running)
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


class FakeClock:
    """The app's `time` module with a monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


async def test_redraws_are_bounded_however_fast_events_come(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr("mile_tui.screens.run.time", clock)
    app = create_app(settings_file)
    step = ev.StepLogged(1, "interactive", 1, 3, 1, 6, 0.5, 0.05, 100.0, 0.1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        # The drains the app puts off: caught here, fired by the test on the fake clock.
        timers: list[tuple[float, Callable[[], object]]] = []
        set_timer = app.set_timer

        def catch_drains(delay: float, callback: Any = None, **kw: Any) -> Any:
            if callback == app.run_screen.drain:
                timers.append((delay, callback))
                return None
            return set_timer(delay, callback, **kw)

        monkeypatch.setattr(app, "set_timer", catch_drains)
        app.source = LocalRun(app.buffer)  # a run of its own, whose trainer floods it

        def flood(count: int) -> None:
            # From another thread, as fast as it can: far faster than a screen follows.
            def put_all() -> None:
                for _ in range(count):
                    app.buffer.put(step)

            thread = threading.Thread(target=put_all)
            thread.start()
            thread.join()

        flood(1)  # the first batch of events is drawn at once
        await wait_for(pilot, lambda: app.run_screen.drains == 1)
        flood(2000)  # within the same instant: the next drawing waits a whole interval
        await wait_for(pilot, lambda: bool(timers) or app.run_screen.drains > 1)
        for _ in range(5):
            app.on_events_ready(EventsReady())  # more wake-ups change nothing
        assert app.run_screen.drains == 1 and len(timers) == 1
        assert timers[0][0] == pytest.approx(DRAIN_INTERVAL)

        clock.now += DRAIN_INTERVAL
        timers.pop()[1]()
        assert app.run_screen.drains == 2 and len(app.run_screen.view.losses) > 0
        assert app.buffer.drain() == []  # all 2,000 went into that one drawing

        clock.now += 0.2  # events 0.2 s after a drawing wait out the rest of the interval
        flood(10)
        await wait_for(pilot, lambda: bool(timers) or app.run_screen.drains > 2)
        assert timers[0][0] == pytest.approx(DRAIN_INTERVAL - 0.2) and app.run_screen.drains == 2
        clock.now += DRAIN_INTERVAL - 0.2
        timers.pop()[1]()
        assert app.run_screen.drains == 3

        clock.now += 3 * DRAIN_INTERVAL  # after a quiet spell, drawn at once
        flood(10)
        await wait_for(pilot, lambda: app.run_screen.drains == 4)
        assert timers == []


@pytest.mark.slow
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

        app.source = LocalRun(app.buffer)  # a run of its own, whose trainer reports here
        app.buffer.put(ev.DataProgress("scanning /data/train", 340, 1000))
        await wait_for(pilot, lambda: "Preparing data" in panel("head"))
        assert "scanning /data/train" in panel("head") and panel("stats") == "340/1,000"
        app.buffer.put(ev.DataProgress("scanning /data/train", 1000, 1000))
        await wait_for(pilot, lambda: panel("stats") == "1,000/1,000")
        log = app.run_screen.query_one("#log", LogPanel)
        log_text = "\n".join(strip.text for strip in log.lines)
        assert "scanning /data/train: 1,000/1,000" in log_text
        app.buffer.put(ev.RunEnded("failed", 0, 0.0, None, "no images"))
        await wait_for(pilot, lambda: "Preparing data" not in panel("head"))


# ----------------------------------------------------------------- messages that say what happened
# Unsaved edits, values typed on screen, a pause with no run, quitting mid-run.
SMALL = (80, 24)


async def test_ctrl_r_with_unsaved_edits_asks_first(settings_file: Path) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        editor = app.settings_screen.query_one("#field-k_t", Input)
        editor.focus()
        editor.value = "7"
        await pilot.pause()
        assert app.form.values["k_t"] == 7

        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # keep editing: the edit stays
        await pilot.pause()
        assert app.form.values["k_t"] == 7 and editor.value == "7"

        await pilot.press("ctrl+r")
        await pilot.pause()
        await pilot.press("y")  # reload: back to the file's k_t = 3
        await pilot.pause()
        assert app.form.values["k_t"] == 3 and editor.value == "3"

        await pilot.press("ctrl+r")  # nothing unsaved: reloads without a question
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen)


async def test_a_bad_value_typed_on_screen_is_not_blamed_on_the_file(
    settings_file: Path,
) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        editor = app.settings_screen.query_one("#field-rho", Input)
        editor.focus()
        editor.value = "2"
        await pilot.pause()
        message = app.form.errors["rho"]
        assert message.startswith("settings screen: 'rho' must be") and "mile.toml" not in message


async def test_pause_from_the_palette_with_no_run_says_so(settings_file: Path) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        for title, what in (("Pause / resume run", "pause"), ("Stop run", "stop")):
            commands[title].callback()
            await pilot.pause()
            assert any(f"No run to {what}" in n for n in notices(app)), notices(app)


@pytest.mark.slow
async def test_quitting_mid_run_says_where_the_save_is_and_how_to_resume(
    settings_file: Path,
) -> None:
    app = create_app(settings_file, ["epoch_num=100"])
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("f5")
        await wait_for(pilot, lambda: app.run_screen.view.global_step >= 1)
        await pilot.press("ctrl+q")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(pilot, lambda: app.exit_note is not None)
    note = app.exit_note or ""
    run_dirs = list(Path("runs").iterdir())
    assert len(run_dirs) == 1
    saves = sorted(p.name for p in run_dirs[0].glob("*.pt"))
    assert saves and saves[-1] in note and "stop" in saves[-1]
    command = note.splitlines()[-1].split()
    assert command == ["mile-tui", "run", "--headless", "--resume", str(run_dirs[0])]
