"""Faults: full disks (injected and on a real tiny tmpfs), torn records, damaged saves,
racing run folders. Each test names the guarantee it checks."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mile_engine import events as ev
from mile_engine.checkpoints import RunCheckpointer, find_resume
from mile_engine.config import Settings
from mile_engine.runstore import files as ckf
from mile_engine.runstore import layout
from mile_engine.runstore import records as runs
from mile_engine.runstore.catalog import summarize_run
from mile_engine.runstore.files import (
    CheckpointWriteError,
    CorruptCheckpointError,
    atomic_save,
    read_checkpoint_file,
)
from mile_engine.runstore.manifest import load_checkpoint, read_records
from mile_engine.runstore.saves import export_weights, verify_run
from mile_engine.session import open_run
from tests.helpers.faults import DiskBudget, FullAfter, flip_tensor_byte
from tests.helpers.runs import FakeTrainer, make_run
from tests.helpers.settings import tiny


# ------------------------------------------------------------------ helpers
@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs (needs root and a kernel that lets this process mount)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not permitted'}); "
                    "the injected-fault tests cover the same code")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


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


# ------------------------------------------------------------------ failed saves
def test_a_save_on_a_full_disk_leads_with_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = make_run(tmp_path, [0.3])
    real = ckf._write_payload
    # torch.save itself meets the full disk: it reports `enforce fail at inline_container`.
    # FullAfter is a RawIOBase standing in for the IO[bytes] torch.save writes to.
    monkeypatch.setattr(ckf, "_write_payload", lambda obj, fh: real(obj, FullAfter(fh, 300)))  # type: ignore[arg-type]
    saver = RunCheckpointer(run_dir, 3)
    trainer = FakeTrainer()
    trainer.advance(4, 0.5)
    with pytest.raises(CheckpointWriteError) as caught:
        saver.save(trainer, "generation")  # type: ignore[arg-type]
    saver.close()
    message = str(caught.value)
    assert message.startswith(f"no space left on device: {run_dir}/step-00000004")
    assert "inline_container" not in message and "earlier checkpoints are intact" in message
    assert not list(run_dir.glob(".tmp-*"))
    assert all(result.ok for _, result in verify_run(run_dir))


def test_a_real_full_tmpfs_save_and_export_say_no_space(
    tiny_tmpfs: Path, tmp_path: Path
) -> None:
    big = {"w": torch.zeros(100_000)}  # 400 KB into 64 KiB
    with pytest.raises(CheckpointWriteError, match="^no space left on device: "):
        atomic_save(big, tiny_tmpfs / "big.pt")
    assert list(tiny_tmpfs.iterdir()) == []  # no temporary file left behind
    run_dir = make_run(tmp_path, [0.4], real_model=True)
    (record,) = read_records(run_dir)
    out = tiny_tmpfs / "weights.pt"
    with pytest.raises(CheckpointWriteError) as caught:
        export_weights(run_dir / record.file, out)
    assert str(caught.value) == f"no space left on device: {out}"


# ------------------------------------------------------------------ damaged saves
def test_a_damaged_save_named_directly_is_refused(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.3, 0.4])
    older, newest = read_records(run_dir)
    path = run_dir / newest.file
    weight = load_checkpoint(path)["student"]["fc.weight"]
    flip_tensor_byte(path, weight)
    read_checkpoint_file(path)  # the premise: torch alone loads it without a word
    with pytest.raises(CorruptCheckpointError, match="damaged checkpoint") as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value) and "checkpoints verify" in str(caught.value)
    with pytest.raises(CorruptCheckpointError, match="damaged"):
        find_resume(path, tmp_path)  # `--resume RUN/step-....pt`
    point = find_resume(run_dir, tmp_path)  # the run: falls back, with a warning
    assert point.path == run_dir / older.file and len(point.warnings) == 1
    # A file no manifest lists has nothing to compare with: it loads as before.
    loose = tmp_path / "loose.pt"
    loose.write_bytes(path.read_bytes())
    load_checkpoint(loose)


def test_list_shows_a_checkpoint_it_cannot_read(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.3])
    (run_dir / "step-00000099-stop.pt").write_bytes(b"not a checkpoint")
    (run_dir / ".tmp-step-00000100-stop.pt.1").write_bytes(b"half")
    info = summarize_run(run_dir)
    assert len(info.records) == 1 and info.unreadable == ["step-00000099-stop.pt"]


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
