"""`mile-tui watch`: its refusals through CliRunner, and a real terminal (tmux) watching,
pausing and stopping a headless run that another process trains."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mile_tui.cli import app
from mile_tui.headless import EXIT_INTERRUPTED, EXIT_USAGE
from tests.helpers.processes import MILE_TUI, Terminal
from tests.helpers.runs import write_run
from tests.helpers.settings import SETTINGS_TEXT

REPO = Path(__file__).parents[2]


def test_watch_with_no_live_run_is_a_one_line_error(settings_file: Path) -> None:
    write_run(Path("runs"), "20260101-120000-digits-mile")  # finished: not live
    result = CliRunner().invoke(app, ["watch", "--runs", "elsewhere"])
    assert result.exit_code == EXIT_USAGE
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert "no run is training under runs, elsewhere" in result.output


def test_watch_of_a_folder_that_is_no_run_is_refused(settings_file: Path) -> None:
    Path("empty").mkdir()
    result = CliRunner().invoke(app, ["watch", "empty"])
    assert result.exit_code == EXIT_USAGE
    assert "empty: not a run folder" in result.output and "Traceback" not in result.output


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_watch_pauses_and_stops_a_headless_run_in_a_terminal(tmp_path: Path) -> None:
    if not MILE_TUI.exists():
        pytest.skip(f"the mile-tui command is not installed next to {sys.executable}")
    (tmp_path / "mile.toml").write_text(SETTINGS_TEXT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.Popen(
        [str(MILE_TUI), "run", "--headless", "--set", "epoch_num=200", "--set",
         "num_workers=0"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    term = Terminal(f"mile-watch-{os.getpid()}", "watch")
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "runs").glob("*/metrics.jsonl")):
            assert run.poll() is None and time.monotonic() < deadline, "no run folder"
            time.sleep(0.1)
        term.tmux("new-session", "-d", "-s", "watch", "-x", "80", "-y", "24", "-c",
                  str(tmp_path), f"{MILE_TUI} watch; sleep 30")
        screen = term.wait_for(lambda s: "watching" in s and "Phase" in s, timeout=90)
        assert "Evaluation" in screen and "Log" in screen
        term.wait_for(lambda s: "step " in s and "running" in s, timeout=90)

        term.keys("p")
        term.wait_for(lambda s: "paused" in s, timeout=90)
        assert run.poll() is None  # paused, not gone
        term.keys("x")
        deadline = time.monotonic() + 120
        while run.poll() is None:
            assert time.monotonic() < deadline, "the run did not stop"
            time.sleep(0.1)
        assert run.returncode == EXIT_INTERRUPTED
        screen = term.wait_for(lambda s: "stopped" in s and "watching" not in s, timeout=30)
        term.keys("Escape")  # the notice of the stop
        term.keys("C-q")  # nothing trains in the console: it closes at once
        term.wait_for(lambda s: "Phase" not in s, timeout=15)
    finally:
        term.tmux("kill-server")
        if run.poll() is None:
            run.kill()
        run.wait(timeout=60)
