"""Other processes: headless runs, torchrun jobs and a real terminal (tmux)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mile_engine.runstore.records import read_metrics
from tests.helpers.settings import REPO, TINY

# `tiny()` as flags, the data loaded in the run's own process.
HEADLESS_TINY = [*TINY, "--set", "num_workers=0"]


def start_headless(root: Path, *extra: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """`python -m mile_tui run --headless` with tiny settings; its output goes to a file
    (a pipe nobody reads would fill and block a long run), read with `output_of`."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    root.parent.mkdir(parents=True, exist_ok=True)
    out_path = root.parent / f"out-{time.monotonic_ns()}.txt"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mile_tui", "run", "--headless", *HEADLESS_TINY,
             "--set", f"checkpoint_path={root}", *extra],
            cwd=cwd or root.parent, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    proc.out_path = out_path  # type: ignore[attr-defined]
    return proc


def output_of(proc: subprocess.Popen[bytes]) -> str:
    """What a `start_headless` process printed so far."""
    path: Path = proc.out_path  # type: ignore[attr-defined]
    return path.read_text(errors="replace")


def wait_for(predicate: Callable[[], bool], proc: subprocess.Popen[bytes] | None = None,
             timeout: float = 180.0) -> None:
    """Poll `predicate` until it holds; fail if `proc` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None:
            assert proc.poll() is None, f"process ended ({proc.returncode}): " + (
                output_of(proc) if hasattr(proc, "out_path") else "")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def only_run(root: Path) -> Path | None:
    """The one run folder under root, once it exists."""
    runs = list(root.iterdir()) if root.is_dir() else []
    return runs[0] if len(runs) == 1 else None


def records_of(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as records (a torn last line skipped)."""
    return read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            "2"]


MILE_TUI = Path(sys.executable).with_name("mile-tui")


class Terminal:
    """A detached tmux session on a private server: type keys, read the screen."""

    def __init__(self, socket: str, session: str) -> None:
        self.socket, self.session = socket, session

    def tmux(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                                text=True, check=False)
        return result.stdout

    def keys(self, *keys: str) -> None:
        """Send keys by tmux name (F5, C-q, Enter) or as literal text."""
        self.tmux("send-keys", "-t", self.session, *keys)

    def screen(self) -> str:
        """The visible pane as text."""
        return self.tmux("capture-pane", "-p", "-t", self.session)

    def alive(self) -> bool:
        return self.session in self.tmux("list-sessions", "-F", "#{session_name}")

    def wait_for(self, check: Callable[[str], bool], timeout: float = 60.0) -> str:
        """Poll the screen until `check` holds; fail with the last screen otherwise."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if check(text):
                return text
            time.sleep(0.25)
        raise AssertionError(f"screen never matched; last screen:\n{text}")


