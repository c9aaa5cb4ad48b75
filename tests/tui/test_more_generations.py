"""Resuming a finished run for more generations from the console: the question a finished
run asks (Runs screen `r`, the checkpoint browser's `r`), what each answer does to the run
folder, and the runs that resume without it.

The runs are real tiny ones (digits, batch 8, 3 + 2 steps a generation, 64 validation
images) trained by the engine in the test, so what the resumed run adds is checked in
its own files: settings.toml, metrics.jsonl and the catalog's summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from textual.pilot import Pilot
from textual.widgets import Input, Static

from mile_engine import events as ev
from mile_engine.config.loader import load_settings, read_toml
from mile_engine.config.schema import Settings
from mile_engine.control import Control
from mile_engine.runstore.catalog import summarize_run
from mile_engine.runstore.layout import METRICS_FILE, SETTINGS_FILE
from mile_tui.app import MileApp, create_app
from mile_tui.checkpoint_browser import CheckpointBrowser
from mile_tui.screens.more_generations import (
    MoreGenerationsScreen,
    default_total,
    generations_done,
    parse_total,
)
from mile_tui.sources import train_in_thread
from tests.helpers.pilot import open_runs, wait_for
from tests.helpers.runs import write_run
from tests.helpers.trained import tiny_checkpoint_run

SMALL = (80, 24)
STEPS_PER_GENERATION = 3 + 2  # k_t + k_s of the tests' mile.toml


def records(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of the run's metrics.jsonl."""
    lines = (run_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def saved_epoch_num(run_dir: Path) -> int:
    """The `epoch_num` of the run's settings.toml."""
    return int(read_toml(run_dir / SETTINGS_FILE)["epoch_num"])


def stopped_run(root: Path) -> Path:
    """A tiny run of 2 generations stopped at its first progress record (saved at stop)."""
    settings = load_settings(Path("mile.toml"), [f"checkpoint_path={root}", "epoch_num=2"])
    control = Control()

    def stop_early(event: ev.Event) -> None:
        if isinstance(event, ev.StepLogged):
            control.stop()

    from mile_engine.session import open_run

    trainer = open_run(settings, [stop_early], control)
    assert trainer.train().status == "stopped"
    return Path(trainer.run_dir)


async def the_question(app: MileApp, pilot: Pilot[None]) -> MoreGenerationsScreen:
    """The dialog, once it is on screen."""
    await wait_for(pilot, lambda: isinstance(app.screen, MoreGenerationsScreen), timeout=10)
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, MoreGenerationsScreen)
    return screen


async def answer(pilot: Pilot[None], screen: MoreGenerationsScreen, text: str) -> None:
    """Replace the dialog's number with `text` and press enter."""
    field = screen.query_one(Input)
    field.value = ""
    await pilot.press(*text, "enter") if text else await pilot.press("enter")
    await pilot.pause()


def error_line(screen: MoreGenerationsScreen) -> str:
    return str(screen.query_one("#total-error", Static).render())


# ---------------------------------------------------------------------------- the answer
@pytest.mark.slow
async def test_a_finished_run_trains_on_to_the_generation_typed(settings_file: Path) -> None:
    run_dir = tiny_checkpoint_run(Path("runs"), epochs=1)
    before = (run_dir / METRICS_FILE).read_bytes()
    first = records(run_dir)
    assert summarize_run(run_dir).status == "finished"
    app = create_app(settings_file)
    async with app.run_test(size=SMALL) as pilot:
        await open_runs(app, pilot)
        await pilot.press("r")
        screen = await the_question(app, pilot)
        question = str(screen.query_one("#question", Static).render())
        assert "finished 1 generation." in question
        # Offered: as many generations again as the run was set to (epoch_num = 1).
        assert screen.query_one(Input).value == "2"
        await answer(pilot, screen, "2")
        await wait_for(pilot, lambda: app.worker is not None and not app.running)
        view = app.run_screen.view
        assert view.status == "finished"
        # The run screen: generation 1 from the history, generation 2 trained now.
        assert [row.generation for row in view.evals] == [1, 2]
    run = summarize_run(run_dir)
    assert (run.status, run.generation, run.generations) == ("finished", 2, 2)
    assert saved_epoch_num(run_dir) == 2
    after = (run_dir / METRICS_FILE).read_bytes()
    assert after.startswith(before)  # the first generation's history kept as it was
    added = records(run_dir)[len(first):]
    assert [r["generation"] for r in added if r["event"] == "Evaluated"] == [2]
    assert [r["event"] for r in added][0] == "RunStarted"
    ended = [r for r in added if r["event"] == "RunEnded"]
    assert len(ended) == 1 and ended[0]["status"] == "finished"
    # Exactly one more generation of steps: 2 generations of k_t + k_s in all.
    assert ended[0]["global_step"] == 2 * STEPS_PER_GENERATION
    steps = [r["global_step"] for r in added if r["event"] == "StepLogged"]
    assert steps == list(range(STEPS_PER_GENERATION + 1, 2 * STEPS_PER_GENERATION + 1))


@pytest.mark.slow
async def test_escape_leaves_the_finished_run_untouched(settings_file: Path) -> None:
    run_dir = tiny_checkpoint_run(Path("runs"), epochs=1)
    files = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    app = create_app(settings_file)
    async with app.run_test(size=SMALL) as pilot:
        await open_runs(app, pilot)
        await pilot.press("r")
        await the_question(app, pilot)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.runs_screen
        assert app.worker is None
    assert summarize_run(run_dir).status == "finished"
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == files


@pytest.mark.slow
async def test_a_bad_number_is_one_line_and_the_question_stays(settings_file: Path) -> None:
    run_dir = tiny_checkpoint_run(Path("runs"), epochs=1)
    before = (run_dir / METRICS_FILE).read_bytes()
    app = create_app(settings_file)
    async with app.run_test(size=SMALL) as pilot:
        await open_runs(app, pilot)
        await pilot.press("r")
        screen = await the_question(app, pilot)
        assert error_line(screen) == ""
        for bad, says in (("1", "above 1"), ("0", "above 1"), ("x", "not a whole number"),
                          ("", "Enter a whole number above 1"), ("1.5", "not a whole number")):
            await answer(pilot, screen, bad)
            assert app.screen is screen, bad  # still asking
            line = error_line(screen)
            assert says in line and "\n" not in line, (bad, line)
        assert app.worker is None
        await pilot.press("escape")
        await pilot.pause()
        assert app.worker is None
    assert (run_dir / METRICS_FILE).read_bytes() == before


@pytest.mark.slow
async def test_a_stopped_run_resumes_without_the_question(settings_file: Path) -> None:
    run_dir = stopped_run(Path("runs"))
    app = create_app(settings_file)
    asked: list[object] = []
    push = app.push_screen

    def remember(screen: Any, *args: Any, **kw: Any) -> Any:
        asked.append(screen)
        return push(screen, *args, **kw)

    app.push_screen = remember  # type: ignore[method-assign]
    async with app.run_test(size=SMALL) as pilot:
        await open_runs(app, pilot)
        await pilot.press("r")
        await wait_for(pilot, lambda: app.worker is not None and not app.running)
        assert not any(isinstance(s, MoreGenerationsScreen) for s in asked)
        assert app.run_screen.view.status == "finished"
    run = summarize_run(run_dir)
    # Its own epoch_num (2), nothing more.
    assert (run.status, run.generation, run.generations) == ("finished", 2, 2)


@pytest.mark.slow
async def test_the_checkpoint_browser_asks_for_the_last_save_of_a_finished_run(
        settings_file: Path) -> None:
    run_dir = tiny_checkpoint_run(Path("runs"), epochs=1)
    app = create_app(settings_file)
    async with app.run_test(size=(120, 36)) as pilot:
        await open_runs(app, pilot)
        await pilot.press("f4")
        await pilot.pause()
        browser = app.screen
        assert isinstance(browser, CheckpointBrowser)
        await pilot.press("r")
        await the_question(app, pilot)
        await pilot.press("escape")  # cancelled: back in the browser, nothing started
        await pilot.pause()
        assert app.screen is browser and app.worker is None
        await pilot.press("r")
        screen = await the_question(app, pilot)
        await answer(pilot, screen, "3")
        await wait_for(pilot, lambda: app.worker is not None and not app.running)
        assert app.screen_stack[-1] is app.run_screen  # the browser closed
        assert [row.generation for row in app.run_screen.view.evals] == [1, 2, 3]
    run = summarize_run(run_dir)
    assert (run.status, run.generation, run.generations) == ("finished", 3, 3)


def test_a_setting_a_resume_must_keep_is_refused_in_one_line(settings_file: Path) -> None:
    # The console hands its overrides to the engine's own check, as --set does.
    run_dir = tiny_checkpoint_run(Path("runs"), epochs=1)
    before = (run_dir / METRICS_FILE).read_bytes()
    events: list[ev.Event] = []
    train_in_thread(Settings(checkpoint_path="runs"), Control(), events.append,
                    resume=str(run_dir), overrides=["k_t=7"])
    (ended,) = [e for e in events if isinstance(e, ev.RunEnded)]
    assert ended.status == "failed" and ended.error is not None
    assert "k_t" in ended.error and "\n" not in ended.error
    assert not [e for e in events if isinstance(e, ev.Message) and e.level == "error"]
    assert (run_dir / METRICS_FILE).read_bytes() == before


# ---------------------------------------------------------------------------- the pieces
@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=-10**7, max_value=10**7))
def test_parse_total_takes_exactly_the_numbers_above_what_is_done(done: int, n: int) -> None:
    result = parse_total(f" {n} ", done)
    if n > done:
        assert result == n
    else:
        assert isinstance(result, str) and str(done) in result


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**6))
def test_the_number_offered_is_always_a_valid_answer(done: int, epoch_num: int) -> None:
    offered = default_total(done, epoch_num)
    assert parse_total(str(offered), done) == offered
    if epoch_num:
        assert offered == done + epoch_num


def test_generations_done_reads_the_manifest(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    saves = [("a.pt", 2, "evaluated"), ("b.pt", 3, "interactive"), ("c.pt", 0, "start")]
    manifest = {"checkpoints": [{"file": f, "generation": g, "phase": p} for f, g, p in saves]}
    (run_dir / "checkpoints.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert generations_done(run_dir, run_dir / "a.pt") == 2
    assert generations_done(run_dir, run_dir / "b.pt") == 2  # within generation 3
    assert generations_done(run_dir, run_dir / "c.pt") == 0
    assert generations_done(run_dir, run_dir / "missing.pt") is None
    (run_dir / "checkpoints.json").write_text("{not json", encoding="utf-8")
    assert generations_done(run_dir, run_dir / "a.pt") is None


# ---------------------------------------------------------------------------- snapshot
@pytest.mark.usefixtures("utc")
def test_more_generations_dialog_snapshot(snap_compare: Any, settings_file: Path) -> None:
    write_run(Path("runs"), "20260101-120000-digits-mile", gens=2, f1s=(0.4, 0.5))
    app = create_app(settings_file)

    async def ask(pilot: Pilot[None]) -> None:
        await open_runs(app, pilot)
        await pilot.press("r")
        await the_question(app, pilot)

    assert snap_compare(app, terminal_size=SMALL, run_before=ask)
