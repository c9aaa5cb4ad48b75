"""A run's manifest of saves, the safe load that checks a file against it, and retention.

A run folder holds its checkpoints (`step-<global step>-<reason>.pt`) and a manifest,
`checkpoints.json`, with one record per save (size and SHA-256 included). A new
checkpoint is complete, and recorded, before retention removes any old one, and
retention never removes the newest save or the best one by the run's `monitor` metric
(ReaL F1 by default; each record names the metric its run monitors).
"""

from __future__ import annotations

import contextlib
import json
import math
import stat
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mile_engine.oserrors import describe_os_error
from mile_engine.runstore.files import (
    FORMAT_VERSION,
    CheckpointError,
    CorruptCheckpointError,
    NoCheckpointError,
    atomic_write_text,
    file_sha256,
    read_checkpoint_file,
)
from mile_engine.runstore.layout import MANIFEST_FILE, SUFFIX, TMP_PREFIX
from mile_engine.runstore.lock import run_is_active, run_lock
from mile_engine.runstore.records import json_clean


# ---------------------------------------------------------------------------- records
@dataclass
class Record:
    """One save of a run, as the manifest lists it."""

    file: str
    """File name inside the run folder."""
    seq: int
    """Save number within the run, from 1; the highest is the newest."""
    generation: int
    """Generation the state belongs to (from 1; 0 before the first step)."""
    phase: str
    """"evaluated" at the end of a generation, "start", or the phase interrupted."""
    step: int
    """Steps done in that phase (0 at a generation boundary)."""
    global_step: int
    """Optimizer steps done since the run began."""
    reason: str
    """Why it was saved: "generation", "request" or "stop"."""
    metrics: dict[str, float] | None
    """Evaluation of exactly these weights, or None for saves between evaluations."""
    size: int
    """File size in bytes."""
    sha256: str
    """Hex SHA-256 of the file."""
    time: float
    """Unix time of the save."""
    monitor: str = "real_f1"
    """The metric the run ranks its saves by (its `monitor` setting; older manifests,
    written before there was a choice, ranked by ReaL F1)."""

    @property
    def real_f1(self) -> float | None:
        """ReaL F1 of these weights, if they were evaluated."""
        return self.metric("real_f1")

    @property
    def score(self) -> float | None:
        """The monitored metric of these weights (what "best" means), if evaluated."""
        return self.metric(self.monitor)

    def metric(self, name: str) -> float | None:
        """One finite metric of these weights, or None (not evaluated, or not finite)."""
        if not self.metrics:
            return None
        value = self.metrics.get(name)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        record = asdict(self)
        record["time_iso"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.time))
        return record

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        """Read a record written by `to_json`."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})




# ---------------------------------------------------------------------------- loading
def load_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint safely (tensors and plain values only) onto the CPU.

    A file its folder's manifest lists must first match the size and SHA-256 recorded
    when it was saved, so a damaged save is never used, whoever asks for it (resume,
    eval, predict, inspect, show, export). A mapped load (`mmap`: a cheap look at the
    metadata, for listings) skips that check, which would read the whole file.

    Raises:
        UnsafeCheckpointError: the file needs arbitrary unpickling, which could run code.
        CorruptCheckpointError: the file is missing, truncated, damaged or not ours.
        CheckpointError: the file cannot be read (permission denied, a folder).
    """
    path = Path(path)
    if not mmap:
        check_against_manifest(path)
    return read_checkpoint_file(path, mmap)


def check_against_manifest(path: Path) -> None:
    """Refuse a checkpoint whose bytes differ from its manifest record, if it has one.

    Raises:
        CorruptCheckpointError: its size or SHA-256 differs from the record.
        CheckpointError: the file cannot be read.
    """
    path = Path(path)
    record = next((r for r in _read_manifest_file(path.parent) or [] if r.file == path.name),
                  None)
    if record is None or not path.is_file():
        return  # nothing recorded to compare with; a missing file is said by the load
    try:
        size, digest = file_sha256(path)
    except OSError as exc:
        raise CheckpointError(f"{describe_os_error(exc, path)} (cannot read it).") from None
    if (size, digest) == (record.size, record.sha256):
        return
    what = (f"truncated or damaged checkpoint ({size:,} bytes, {record.size:,} when saved)"
            if size != record.size else
            "damaged checkpoint (its SHA-256 differs from the one recorded when it was saved)")
    raise CorruptCheckpointError(
        f"{path}: {what}; not used. `mile-tui checkpoints verify {path.parent}` checks the "
        "run's other saves."
    )



def _meta_record(path: Path) -> Record | None:
    """Rebuild the record of a checkpoint missing from the manifest, or None if unreadable."""
    try:
        meta = load_checkpoint(path, mmap=True)["meta"]
        size, digest = file_sha256(path)
    except (CheckpointError, OSError):
        return None
    return Record(
        file=path.name,
        seq=int(meta["seq"]),
        generation=int(meta["generation"]),
        phase=str(meta["phase"]),
        step=int(meta["step"]),
        global_step=int(meta["global_step"]),
        reason=str(meta["reason"]),
        metrics=meta.get("metrics"),
        size=size,
        sha256=digest,
        time=float(meta["time"]),
        monitor=str(meta.get("settings", {}).get("monitor", "real_f1")),
    )


# ---------------------------------------------------------------------------- manifest
def _read_manifest_file(run_dir: Path) -> list[Record] | None:
    path = Path(run_dir) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Record.from_json(r) for r in data["checkpoints"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_records(run_dir: Path) -> list[Record]:
    """The saves of a run, oldest first, as the files on disk confirm them.

    Reads the manifest, drops records whose file is gone, and adopts checkpoint files
    the manifest misses (a save killed between its file and its manifest record, or a
    lost manifest), so no completed save is ever invisible. Writes nothing.
    """
    run_dir = Path(run_dir)
    listed = _read_manifest_file(run_dir) or []
    records = [r for r in listed if (run_dir / r.file).is_file()]
    known = {r.file for r in records}
    for path in sorted(run_dir.glob(f"*{SUFFIX}")):
        if path.name.startswith(TMP_PREFIX) or path.name in known:
            continue
        record = _meta_record(path)
        if record is not None:
            records.append(record)
    records.sort(key=lambda r: (r.seq, r.time))
    return records


def unlisted_checkpoints(run_dir: Path, records: Iterable[Record]) -> list[Path]:
    """The checkpoint files of `run_dir` that no record names (damaged or foreign files,
    which `read_records` could not adopt), by name; files still being written are not
    checkpoints yet."""
    listed = {r.file for r in records}
    return [p for p in sorted(Path(run_dir).glob(f"*{SUFFIX}"))
            if p.name not in listed and not p.name.startswith(TMP_PREFIX)]


def listed_saves(run_dir: Path) -> tuple[list[Record], list[str]]:
    """A run's saves as a listing shows them (oldest first), and the names of the
    checkpoint files it shows as unreadable instead.

    A save whose file is no longer what its record describes (cut to 0 bytes, cut short,
    replaced by a folder) is unreadable, not a save: one stat each. Bytes changed in
    place keep their size; `verify_checkpoint` compares the hash.
    """
    run_dir = Path(run_dir)
    records = [r for r in read_records(run_dir) if _matches_size(run_dir / r.file, r.size)]
    return records, [p.name for p in unlisted_checkpoints(run_dir, records)]


def _matches_size(path: Path, size: int) -> bool:
    """Whether `path` is a regular file of `size` bytes."""
    try:
        st = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size


def write_manifest(run_dir: Path, records: Iterable[Record]) -> None:
    """Replace the run's manifest atomically."""
    data = {
        "format": "mile-tui-manifest",
        "version": FORMAT_VERSION,
        "checkpoints": [json_clean(r.to_json()) for r in records],
    }
    atomic_write_text(Path(run_dir) / MANIFEST_FILE, json.dumps(data, indent=1) + "\n")



# ---------------------------------------------------------------------------- retention
def best_record(records: Iterable[Record]) -> Record | None:
    """The save with the highest monitored metric (the newer one on a tie), or None."""
    scored = [r for r in records if r.score is not None]
    if not scored:
        return None
    return max(scored, key=lambda r: (r.score, r.seq))


def retained(records: Iterable[Record], keep_last: int, keep_best: int = 1) -> set[str]:
    """File names to keep: the `keep_last` newest and the `keep_best` best by the
    monitored metric (`Record.score`).

    Pure function of the records, so retention can be tested on random histories.
    """
    ordered = sorted(records, key=lambda r: r.seq)
    # A negative slice start would wrap around: with fewer saves than `keep_last`, keep all.
    keep = {r.file for r in ordered[max(len(ordered) - keep_last, 0):]} if keep_last > 0 else set()
    scored = [r for r in ordered if r.score is not None]
    scored.sort(key=lambda r: (r.score, r.seq), reverse=True)
    keep.update(r.file for r in scored[: max(keep_best, 0)])
    return keep


def protected(records: Iterable[Record]) -> set[str]:
    """The saves that rotation never removes: the newest and the best."""
    records = list(records)
    keep = {max(records, key=lambda r: r.seq).file} if records else set()
    best = best_record(records)
    if best is not None:
        keep.add(best.file)
    return keep


def remove_saves(run_dir: Path, records: list[Record], doomed: list[Record]) -> None:
    """Drop `doomed` from the manifest first, then delete their files (under `run_lock`)."""
    names = {r.file for r in doomed}
    write_manifest(run_dir, [r for r in records if r.file not in names])
    for r in doomed:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / r.file).unlink()


def prune_run(
    run_dir: Path,
    keep_last: int,
    keep_best: int = 1,
    dry_run: bool = False,
    force: bool = False,
) -> list[Record]:
    """Remove all saves of a run but the `keep_last` newest and `keep_best` best.

    Without `force` the newest and the best always stay whatever the numbers say; with
    it they may go, except the newest save of a run that is still being written.
    Returns the records removed (or that would be, with `dry_run`).
    """
    run_dir = Path(run_dir)
    if not force:
        keep_last, keep_best = max(keep_last, 1), max(keep_best, 1)
    with run_lock(run_dir):
        records = read_records(run_dir)
        keep = retained(records, keep_last, keep_best)
        if not force:
            keep |= protected(records)
        elif records and run_is_active(run_dir):
            keep.add(records[-1].file)
        doomed = [r for r in records if r.file not in keep]
        if doomed and not dry_run:
            remove_saves(run_dir, records, doomed)
    return doomed


def delete_checkpoint(run_dir: Path, file: str, force: bool = False) -> Record:
    """Delete one save of a run.

    Raises:
        CheckpointError: it is the best or the newest save and `force` is not set, or it
            is the newest save of a run still writing.
        NoCheckpointError: the run has no such save.
    """
    run_dir = Path(run_dir)
    with run_lock(run_dir):
        records = read_records(run_dir)
        match = [r for r in records if r.file == file]
        if not match:
            raise NoCheckpointError(f"{run_dir}: no checkpoint named {file}.")
        record = match[0]
        if records[-1].file == file and run_is_active(run_dir):
            raise CheckpointError(
                f"{file} is the newest save of a run that is still training; not deleted."
            )
        if file in protected(records) and not force:
            kind = "newest" if records[-1].file == file else "best"
            raise CheckpointError(
                f"{file} is the {kind} save of {run_dir.name}; not deleted (use --force)."
            )
        remove_saves(run_dir, records, [record])
    return record

