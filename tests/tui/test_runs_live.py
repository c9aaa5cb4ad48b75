"""A real headless run in another process, found, watched, steered and resumed from the
console: what a user does with a run started in another terminal (issue #15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mile_engine import events as ev
from mile_tui.app import create_app
from mile_tui.headless import EXIT_INTERRUPTED
from mile_tui.screens.run import RunScreen
from mile_tui.screens.runs import RunsScreen
from mile_tui.widgets.log import LogPanel
from tests.helpers.pilot import wait_for

REPO = Path(__file__).parents[2]


@pytest.fixture
def headless_run(settings_file: Path) -> Iterator[subprocess.Popen[str]]:
    """`mile-tui run --headless` training a long tiny run in another process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mile_tui", "run", "--headless", "--set", "epoch_num=200",
         "--set", "num_workers=0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


@pytest.mark.slow
async def test_watch_steer_stop_and_resume_a_headless_run(
        settings_file: Path, headless_run: subprocess.Popen[str]) -> None:
    import time

    # Its folder appears once the trainer is built (a few seconds: torch, the data).
    deadline = time.monotonic() + 120
    while not list(Path("runs").glob("*/metrics.jsonl")):
        assert headless_run.poll() is None, headless_run.stderr and headless_run.stderr.read()
        assert time.monotonic() < deadline, "the headless run made no folder"
        time.sleep(0.1)
    (run_dir,) = Path("runs").iterdir()

    app = create_app(settings_file)
    async with app.run_test(size=(120, 36)) as pilot:
        runs = app.runs_screen
        await wait_for(pilot, lambda: runs.loaded and bool(runs.shown))
        assert isinstance(app.screen, RunsScreen)  # listed on the home screen
        await wait_for(pilot, lambda: runs.shown[0].status == "running", timeout=60)
        assert runs.shown[0].holder is not None
        assert runs.shown[0].holder.pid == headless_run.pid

        await pilot.press("enter")
        view = app.run_screen.view
        assert isinstance(app.screen, RunScreen)
        await wait_for(pilot, lambda: app.followed is not None)
        # Followed live: its steps arrive, past the first generation's evaluation.
        await wait_for(pilot, lambda: view.global_step >= 7 and bool(view.evals),
                       timeout=180)

        await pilot.press("p")
        await wait_for(pilot, lambda: view.status == "paused", timeout=60)
        log = "\n".join(s.text for s in app.run_screen.query_one(LogPanel).lines)
        assert "steered from the run folder: pause" in log  # the trainer's answer
        paused_at = view.global_step
        assert headless_run.poll() is None

        await pilot.press("x")
        await wait_for(pilot, lambda: headless_run.poll() is not None, timeout=120)
        assert headless_run.returncode == EXIT_INTERRUPTED  # 130: stopped, as documented
        await wait_for(pilot, lambda: view.status == "stopped" and app.followed is None)
        assert view.checkpoints and view.checkpoints[-1].reason == "stop"  # a final save
        assert Path(view.checkpoints[-1].path).exists()
        stopped_at = view.global_step
        # The trainer took no step between its pause and the stop: the file says so.
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
        kinds = [r["event"] for r in records]
        after_pause = records[kinds.index("Paused"):]
        assert after_pause[0]["global_step"] == paused_at
        assert not any(r["event"] == "StepLogged" for r in after_pause)
        assert stopped_at == paused_at

        # Resume it from the Runs screen once it has ended.
        await pilot.press("f6")
        await wait_for(pilot, lambda: bool(runs.shown) and runs.shown[0].status == "stopped",
                       timeout=30)
        seen: list[ev.Event] = []
        put = app.buffer.put

        def record(event: ev.Event) -> None:
            seen.append(event)
            put(event)

        app.buffer.put = record  # type: ignore[method-assign]
        await pilot.press("r")
        await wait_for(pilot, lambda: view.global_step > stopped_at, timeout=120)
        assert app.running and Path(view.run_dir) == run_dir
        started = next(e for e in seen if isinstance(e, ev.RunStarted))
        assert started.resumed_from is not None and "stop" in started.resumed_from
        # Its whole history: the earlier evaluation, starred, and the earlier losses.
        assert view.evals[0].generation == 1
        assert any(row.best for row in view.evals)
        assert min(p.global_step for p in view.losses) <= 2
        assert view.generation >= 1
        await pilot.press("x")
        await wait_for(pilot, lambda: not app.running, timeout=120)
