"""Smoke test of the installed `mile-tui` command in a real terminal, through tmux."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.processes import MILE_TUI, Terminal
from tests.helpers.settings import SETTINGS_TEXT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"
    ),
]

@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    """`mile-tui` running at 100x30 in a folder holding a tiny, commented mile.toml."""
    if not MILE_TUI.exists():
        pytest.skip(f"the mile-tui command is not installed next to {sys.executable}")
    (tmp_path / "mile.toml").write_text(SETTINGS_TEXT, encoding="utf-8")
    term = Terminal(f"mile-test-{os.getpid()}", "console")
    term.tmux("new-session", "-d", "-s", "console", "-x", "100", "-y", "30", "-c",
              str(tmp_path), f"{MILE_TUI}; sleep 30")
    try:
        yield term
    finally:
        term.tmux("kill-server")


def test_configure_start_watch_and_quit(terminal: Terminal, tmp_path: Path) -> None:
    screen = terminal.wait_for(lambda s: "Model and schema" in s)
    assert "resnet18-10" in screen and "mile.toml" in screen
    assert "Save" in screen and "Start run" in screen  # the footer names the keys

    terminal.keys("F5")
    screen = terminal.wait_for(lambda s: "finished" in s, timeout=120)
    assert "Evaluation" in screen and "ReaL F1" in screen
    assert "★" in screen  # the best generation is marked
    assert "imitation" in screen  # the last phase of a MILe generation

    terminal.keys("C-q")
    terminal.wait_for(lambda s: "Model and schema" not in s and "Evaluation" not in s,
                      timeout=15)
    assert list((tmp_path / "runs").iterdir()), "the run wrote its folder"
