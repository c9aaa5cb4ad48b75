"""Checkpoints: atomic saves, manifest, retention, safe loading, pruning, export, fallback."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import torch
import torchvision

from mile_engine.checkpoints import RunCheckpointer, find_resume, newest_run
from mile_engine.runstore import files as ckf
from mile_engine.runstore.catalog import summarize_run
from mile_engine.runstore.files import (
    CheckpointError,
    CheckpointWriteError,
    CorruptCheckpointError,
    NoCheckpointError,
    RunBusyError,
    UnsafeCheckpointError,
    atomic_save,
    atomic_write_text,
    file_sha256,
    read_checkpoint_file,
)
from mile_engine.runstore.layout import MANIFEST_FILE
from mile_engine.runstore.lock import run_is_active
from mile_engine.runstore.manifest import (
    Record,
    delete_checkpoint,
    load_checkpoint,
    protected,
    prune_run,
    read_records,
    retained,
)
from mile_engine.runstore.saves import export_weights, verify_checkpoint, verify_run
from tests.helpers.faults import FullAfter, flip_tensor_byte
from tests.helpers.runs import FakeTrainer, make_run


def test_save_writes_checkpoint_and_manifest_record(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.3, None])
    records = read_records(run_dir)
    assert [r.reason for r in records] == ["generation", "stop"]
    first = records[0]
    assert first.generation == 1 and first.phase == "evaluated" and first.global_step == 5
    assert first.metrics is not None and first.metrics["real_f1"] == 0.3
    assert "sweep" not in first.metrics
    assert records[1].metrics is None and records[1].phase == "imitation"
    size, digest = file_sha256(run_dir / first.file)
    assert (size, digest) == (first.size, first.sha256)
    state = load_checkpoint(run_dir / first.file)
    assert state["meta"]["settings"]["k_t"] == 3
    assert not list(run_dir.glob(".tmp-*"))


def test_save_that_fails_half_way_leaves_old_checkpoint_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = make_run(tmp_path, [0.3])
    (old,) = read_records(run_dir)
    manifest = (run_dir / MANIFEST_FILE).read_bytes()

    def half_then_disk_full(obj: Any, fh: BinaryIO) -> None:
        import io

        buffer = io.BytesIO()
        torch.save(obj, buffer)
        fh.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckf, "_write_payload", half_then_disk_full)
    saver = RunCheckpointer(run_dir, 1)
    trainer = FakeTrainer()
    trainer.advance(10, 0.9)
    with pytest.raises(CheckpointWriteError, match="^no space left on device: .*step-"):
        saver.save(trainer, "generation")  # type: ignore[arg-type]
    saver.close()
    assert not list(run_dir.glob(".tmp-*"))
    assert sorted(p.name for p in run_dir.glob("*.pt")) == [old.file]
    assert (run_dir / MANIFEST_FILE).read_bytes() == manifest
    load_checkpoint(run_dir / old.file)
    assert verify_checkpoint(run_dir / old.file, old).ok


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.3])
    (run_dir / ".tmp-step-00000010-generation.pt.999").write_bytes(b"half")
    RunCheckpointer(run_dir, 3).close()
    assert not list(run_dir.glob(".tmp-*"))


def _check_retention(records: list[Record], history: list[Record], keep: int) -> None:
    files = {r.file for r in records}
    assert history[-1].file in files  # the newest survives
    assert len(records) <= keep + 1
    scored = [r.real_f1 for r in history if r.real_f1 is not None]
    if scored:  # the best F1 ever saved survives
        assert max(r.real_f1 for r in records if r.real_f1 is not None) == max(scored)


@pytest.mark.parametrize("seed", range(8))
def test_retention_on_disk_keeps_best_and_newest(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    keep = rng.randint(1, 3)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    saver = RunCheckpointer(run_dir, keep)
    trainer = FakeTrainer()
    history: list[Record] = []
    for _ in range(10):
        f1 = None if rng.random() < 0.3 else round(rng.random(), 2)
        trainer.advance(rng.randint(1, 5), f1)
        saved = saver.save(trainer, "generation")  # type: ignore[arg-type]
        records = read_records(run_dir)
        history.append(next(r for r in records if r.file == Path(saved.path).name))
        _check_retention(records, history, keep)
        assert sorted(saved.kept) == sorted(r.file for r in records)
        assert sorted(p.name for p in run_dir.glob("*.pt")) == sorted(r.file for r in records)
    saver.close()


def test_retention_rule_on_many_random_histories() -> None:
    for seed in range(300):
        rng = random.Random(seed)
        keep, keep_best = rng.randint(1, 5), rng.randint(1, 3)
        records: list[Record] = []
        history: list[Record] = []
        for seq in range(1, rng.randint(2, 40)):
            f1 = None if rng.random() < 0.25 else rng.choice([0.1, 0.2, 0.5, rng.random()])
            metrics = None if f1 is None else {"real_f1": f1}
            record = Record(f"c{seq}.pt", seq, seq, "evaluated", 0, seq, "generation",
                               metrics, 1, "x", float(seq))
            records.append(record)
            history.append(record)
            kept = retained(records, keep, keep_best) | protected(records)
            records = [r for r in records if r.file in kept]
            assert len(records) <= keep + keep_best
            _check_retention(records, history, keep + keep_best - 1)


def test_pickle_that_executes_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"student": Evil()}, path)
    with pytest.raises(UnsafeCheckpointError, match="arbitrary unpickling"):
        load_checkpoint(path)
    assert not marker.exists()
    assert not verify_checkpoint(path).ok


def test_truncated_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.3])
    (record,) = read_records(run_dir)
    path = run_dir / record.file
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptCheckpointError, match="truncated or damaged"):
        load_checkpoint(path)
    result = verify_checkpoint(path, record)
    assert not result.ok and any("SHA-256" in p for p in result.problems)


def test_export_loads_into_torchvision_resnet18(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.4], real_model=True)
    (record,) = read_records(run_dir)
    out = export_weights(run_dir / record.file, tmp_path / "out" / "weights.pt")
    weights = torch.load(out, weights_only=True)
    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(weights)  # strict: every key, no extra
    assert torch.equal(model.fc.weight, load_checkpoint(run_dir / record.file)
                       ["student"]["fc.weight"])


def test_resume_falls_back_past_a_corrupt_newest_with_a_warning(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.3, 0.4, None])
    records = read_records(run_dir)
    newest = run_dir / records[-1].file
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated
    point = find_resume(run_dir, tmp_path)
    assert point.path == run_dir / records[1].file
    (warning,) = point.warnings
    assert str(newest) in warning and str(point.path) in warning
    assert find_resume("latest", tmp_path).path == point.path
    assert find_resume("run-a", tmp_path).path == point.path  # relative to the root
    with pytest.raises(CorruptCheckpointError):
        find_resume(newest, tmp_path)  # an explicit file must load


def test_latest_is_the_run_with_the_newest_save(tmp_path: Path) -> None:
    make_run(tmp_path, [0.3], name="b-old")
    newer = make_run(tmp_path, [0.2], name="a-new")
    assert newest_run(tmp_path) == newer
    with pytest.raises(NoCheckpointError):
        newest_run(tmp_path / "nothing")


def test_lost_manifest_and_orphan_files_are_recovered(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.3, 0.5, None])
    before = read_records(run_dir)
    (run_dir / MANIFEST_FILE).unlink()
    after = read_records(run_dir)
    assert [(r.file, r.seq, r.sha256, r.metrics) for r in after] == [
        (r.file, r.seq, r.sha256, r.metrics) for r in before
    ]


def test_prune_and_delete_never_remove_best_or_newest_without_force(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.9, 0.1, 0.2, 0.3, 0.4])
    files = [r.file for r in read_records(run_dir)]
    dry = prune_run(run_dir, keep_last=0, keep_best=0, dry_run=True)
    assert [r.file for r in dry] == files[1:4]
    assert len(list(run_dir.glob("*.pt"))) == 5
    removed = prune_run(run_dir, keep_last=0, keep_best=0)
    assert [r.file for r in removed] == files[1:4]
    assert [r.file for r in read_records(run_dir)] == [files[0], files[4]]
    with pytest.raises(CheckpointError, match="best"):
        delete_checkpoint(run_dir, files[0])
    with pytest.raises(CheckpointError, match="newest"):
        delete_checkpoint(run_dir, files[4])
    delete_checkpoint(run_dir, files[0], force=True)
    assert [r.file for r in read_records(run_dir)] == [files[4]]


def test_newest_save_of_a_live_run_survives_even_force(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.9, 0.1])
    live = RunCheckpointer(run_dir, 5)  # a trainer writing into the folder
    try:
        assert run_is_active(run_dir)
        with pytest.raises(RunBusyError):
            RunCheckpointer(run_dir, 5)  # a second trainer in the same folder
        newest = read_records(run_dir)[-1].file
        prune_run(run_dir, keep_last=0, keep_best=0, force=True)
        assert [r.file for r in read_records(run_dir)] == [newest]
        with pytest.raises(CheckpointError, match="still training"):
            delete_checkpoint(run_dir, newest, force=True)
    finally:
        live.close()
    assert not run_is_active(run_dir)


def test_atomic_write_text_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert sorted(os.listdir(tmp_path)) == ["m.json"]


# -------------------------------------------------------------------- full disks and damaged saves
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
