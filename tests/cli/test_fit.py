"""`runs list` and `checkpoints list` fit the terminal: at 80 and 160 columns every line
is within the width, and each run keeps what tells it from the others (its time stamp
and its end); written to a pipe, nothing is cut."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mile_engine.runstore.catalog import LockHolder
from mile_tui.cli import app
from mile_tui.marks import cut_name, shared_date
from tests.helpers.runs import make_run, write_run

# Runs of one day that differ in their time and their end only: a cut in the middle of
# the name, or at its end, makes two of them look alike.
NAMES = ("20261203-203104-digits-mile", "20261203-203914-digits-mile",
         "20261203-204455-fashion-mnist-softmax", "20261203-205012-fashion-mnist-mile")


def _lines(output: str) -> list[str]:
    return output.rstrip("\n").splitlines()


@pytest.fixture
def day_of_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Four runs of one day, the newest one live on another machine."""
    root = tmp_path / "runs"
    for hour, name in enumerate(NAMES):
        write_run(root, name, hour=hour, end=None if name == NAMES[-1] else "finished",
                  f1s=(0.41, 0.52))

    def holder(run_dir: Path) -> tuple[str, int] | None:
        return ("gpu-node-7", 4242) if Path(run_dir).name == NAMES[-1] else None

    monkeypatch.setattr("mile_engine.runstore.catalog.active_holder", holder)
    return root


def _distinct(name: str, line: str) -> bool:
    """Whether `line` shows the time of `name` and the end that sets it apart."""
    time, tail = name[9:15], name.split("-", 2)[2]
    return time in line and tail[-4:] in line


@pytest.mark.parametrize("width", [80, 160])
def test_runs_list_fits_the_terminal(day_of_runs: Path, width: int) -> None:
    result = CliRunner().invoke(app, ["runs", "list", "--set",
                                      f"checkpoint_path={day_of_runs}"],
                                env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    lines = _lines(result.output)
    assert len(lines) == 1 + len(NAMES)  # a header, then one line a run: nothing wraps
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    for name in NAMES:
        (line,) = [line for line in lines[1:] if name[9:15] in line]
        assert _distinct(name, line), line
    live = next(line for line in lines if NAMES[-1][9:15] in line)
    assert "running" in live


def test_runs_list_to_a_pipe_is_whole(day_of_runs: Path) -> None:
    result = CliRunner().invoke(app, ["runs", "list", "--set",
                                      f"checkpoint_path={day_of_runs}"], env={"COLUMNS": ""})
    assert result.exit_code == 0, result.output
    for name in NAMES:
        assert name in result.output
    assert f"running ({LockHolder('gpu-node-7', 4242)})" in result.output


@pytest.mark.parametrize("width", [80, 160])
def test_checkpoints_list_fits_the_terminal(tmp_path: Path, width: int) -> None:
    for name in NAMES[:2]:
        make_run(tmp_path / "very" / "deep" / "shared" / "folder" / "of" / "runs",
                 [0.3, 0.5, None], name=name)
    root = tmp_path / "very" / "deep" / "shared" / "folder" / "of" / "runs"
    result = CliRunner().invoke(app, ["checkpoints", "list", "--set",
                                      f"checkpoint_path={root}"],
                                env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    lines = _lines(result.output)
    assert len(lines) == 2 * (1 + 3)  # per run: its line and one per save
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    for name in NAMES[:2]:
        assert any(line.endswith(f"{name}: 3 checkpoints") for line in lines)
    saves = [line for line in lines if line.startswith("  ")]
    # Each save keeps its file, generation, F1 and marks.
    assert all(re.search(r"step-\d{8}-\w+\.pt\s+gen\s+\d", line) for line in saves)
    assert all("F1 " in line for line in saves)
    assert sum("★ best" in line for line in saves) == 2
    assert sum("● newest" in line for line in saves) == 2


@pytest.mark.parametrize("width", range(8, 60))
def test_a_cut_name_keeps_its_time_and_end_within_the_width(width: int) -> None:
    for name in NAMES:
        cut = cut_name(name, width)
        assert len(cut) <= width
        if len(name) <= width:
            assert cut == name
        elif width >= 12:
            # the time and the last characters stay, whatever the width
            assert name[9:15] in cut and cut.endswith(name[-4:]), (width, cut)


def test_the_shared_date_is_that_of_every_run() -> None:
    assert shared_date(NAMES) == "20261203-"
    assert shared_date(NAMES[:1]) == ""  # one run: nothing to share
    assert shared_date([*NAMES, "20261204-000000-digits-mile"]) == ""
    assert shared_date([*NAMES, "my-run"]) == ""
