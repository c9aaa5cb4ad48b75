"""A run's records (mile_engine/runstore/records.py) under faults: full disks (injected
and on a real tiny tmpfs), torn lines, racing run folders, a run whose record the disk
refuses, a metrics.jsonl that is a named pipe. Each test names the guarantee it checks;
saves under the same faults are in test_checkpoints.py."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mile_engine import events as ev
from mile_engine.config.schema import Settings
from mile_engine.runstore import layout
from mile_engine.runstore import records as runs
from mile_engine.runstore.history import load_history
from mile_engine.runstore.layout import METRICS_FILE
from mile_engine.runstore.manifest import read_records
from mile_engine.runstore.records import read_metrics
from mile_engine.session import open_run
from tests.helpers.faults import DiskBudget
from tests.helpers.hostile import call_unblocked, make_fifo
from tests.helpers.settings import tiny


# ------------------------------------------------------------------ whole lines only
@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 300), min_size=1, max_size=12),
       budget=st.integers(0, 2000))
def test_a_full_disk_leaves_only_whole_lines(tmp_path_factory: pytest.TempPathFactory,
                                             lengths: list[int], budget: int) -> None:
    path = tmp_path_factory.mktemp("lines") / "metrics.jsonl"
    lines = [json.dumps({"n": i, "pad": "x" * n}) + "\n" for i, n in enumerate(lengths)]
    told: list[str] = []
    line_file = runs.LineFile(path, told.append)
    with pytest.MonkeyPatch.context() as mp:
        DiskBudget(budget).install(mp)
        for line in lines:
            line_file.write(line)
    # Oracle: the longest run of leading lines that fits the budget, nothing more.
    fitting, used = [], 0
    for line in lines:
        if used + len(line) > budget:
            break
        fitting.append(line)
        used += len(line)
    assert path.read_text() == "".join(fitting)
    if len(fitting) < len(lines):
        assert told == [f"no space left on device: {path}"]
    else:
        assert told == []


def test_a_torn_last_line_is_skipped_by_readers_and_cut_before_appending(
    tmp_path: Path,
) -> None:
    path = tmp_path / layout.METRICS_FILE
    whole = [{"event": "StepLogged", "global_step": 1}, {"event": "StepLogged", "global_step": 2}]
    torn = json.dumps({"event": "Evaluated", "metrics": {"top1": 0.5}})[:20]
    path.write_text("".join(json.dumps(r) + "\n" for r in whole) + torn)
    assert runs.read_metrics(tmp_path) == whole
    # A resumed run appends after the last whole line, not glued to the torn one.
    runs.LineFile(path).write(json.dumps({"event": "RunStarted"}) + "\n")
    assert runs.read_metrics(tmp_path) == [*whole, {"event": "RunStarted"}]
    assert path.read_text().endswith("\n")
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        runs.read_metrics(tmp_path)  # damage before the end is not a torn write


def test_a_real_full_tmpfs_keeps_whole_lines_and_says_so(tiny_tmpfs: Path) -> None:
    path = tiny_tmpfs / layout.METRICS_FILE
    told: list[str] = []
    line_file = runs.LineFile(path, told.append)
    line = json.dumps({"pad": "y" * 990}) + "\n"  # 1,002 bytes: pages fill mid-line
    for _ in range(200):  # 200 KB into 64 KiB
        line_file.write(line)
    assert told == [f"no space left on device: {path}"]
    text = path.read_text()
    assert text and len(text) % len(line) == 0 and set(text.split("\n")[:-1]) == {line[:-1]}


# ------------------------------------------------------------------ racing run folders
def _create_in_child(settings_: Settings, start: Any, out: Any) -> None:
    start.wait()
    try:
        out.put(str(runs.create_run_dir(settings_)))
    except BaseException as exc:  # noqa: BLE001 - the parent reports every failure
        out.put(f"error: {exc!r}")


def test_runs_started_in_the_same_second_get_their_own_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Forked processes inherit the frozen clock and race for real (threads take turns).
    monkeypatch.setattr(runs.time, "strftime", lambda fmt, *args: "20260101-000000")
    settings_ = tiny(checkpoint_path=str(tmp_path))
    mp = multiprocessing.get_context("fork")
    made: list[str] = []
    for _ in range(3):
        start, out = mp.Barrier(16), mp.Queue()
        procs = [mp.Process(target=_create_in_child, args=(settings_, start, out))
                 for _ in range(16)]
        for proc in procs:
            proc.start()
        made += [out.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
    assert [m for m in made if m.startswith("error")] == []
    assert len(set(made)) == len(made) == 48
    assert all((Path(d) / layout.SETTINGS_FILE).read_text() == settings_.to_toml() for d in made)


def test_a_folder_made_between_look_and_make_is_not_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worst case of the race, made certain: every look says "free".
    monkeypatch.setattr(runs.time, "strftime", lambda fmt, *args: "20260101-000000")
    monkeypatch.setattr(Path, "exists", lambda self: False)
    first = runs.create_run_dir(tiny(checkpoint_path=str(tmp_path)))
    second = runs.create_run_dir(tiny(checkpoint_path=str(tmp_path)))
    assert first != second and second.name == f"{first.name}-2"


# ------------------------------------------------------------------ a run on a full disk
@pytest.mark.parametrize("refused", [layout.METRICS_FILE, layout.LOG_FILE])
def test_a_record_the_disk_refuses_stops_the_run_saved_and_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    DiskBudget(1500, only=refused).install(monkeypatch)
    seen: list[ev.Event] = []
    trainer = open_run(tiny(checkpoint_path=str(tmp_path), epoch_num=3, k_t=2, k_s=2,
                            val_size=16), [seen.append])
    ended = trainer.train()  # returns: the writer never raised into the loop
    path = trainer.run_dir / refused
    assert ended.status == "failed"
    assert ended.error == f"no space left on device: {path}"
    assert ended.global_step < trainer.total_steps  # it stopped early
    newest = read_records(trainer.run_dir)[-1]
    assert newest.reason == "stop" and newest.global_step == ended.global_step
    assert path.read_text().endswith("\n")  # whole lines only
    if refused == layout.METRICS_FILE:
        assert runs.read_metrics(trainer.run_dir)  # every line parses
    assert isinstance(seen[-1], ev.RunEnded) and seen[-1].status == "failed"


# Readers never block on, nor read for ever from, a metrics.jsonl that is not a regular
# file (a named pipe, a link to a device).


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero"])
def test_readers_refuse_or_skip_a_metrics_file_that_is_not_a_file(tmp_path: Path,
                                                                   kind: str) -> None:
    path = tmp_path / METRICS_FILE
    fifos = []
    if kind == "fifo":
        fifos.append(make_fifo(path))
    else:
        path.symlink_to("/dev/zero")
    # The console's follower shows nothing yet; a direct read says what is wrong.
    assert call_unblocked(lambda: load_history(tmp_path), fifos) == []
    with pytest.raises(OSError, match="not a regular file"):
        call_unblocked(lambda: read_metrics(tmp_path), fifos)
