"""Crash-safe checkpoints: atomic saves, a manifest, retention, safe loading and resume.

A run folder holds its checkpoints (`step-<global step>-<reason>.pt`) and a manifest,
`checkpoints.json`, with one record per save. Every file is written to a temporary
file in the same folder, fsynced, then moved into place with `os.replace` (and the
folder fsynced), so a kill, a full disk or a power cut leaves either the old file or
the new one, never half of one. A new checkpoint is complete, and recorded, before
retention removes any old one, and retention never removes the newest save or the
best one by ReaL F1.

Writers (the run's checkpointer) and editors (prune, delete) of one folder serialise
on an advisory lock file; a running trainer also holds a second lock for its whole
life, so that tools can tell a live run from a finished or killed one.

Checkpoints hold tensors and plain Python values only and are read with
`torch.load(weights_only=True)`; the student's weights are a plain torchvision
`state_dict` under the key "student".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch

from mile_engine import events as ev
from mile_engine.oserrors import describe_os_error

if TYPE_CHECKING:
    from mile_engine.trainer import Trainer

try:  # POSIX advisory locks; on other systems the locks are no-ops.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FORMAT = "mile-tui-checkpoint"
FORMAT_VERSION = 1
MANIFEST_FILE = "checkpoints.json"
LOCK_FILE = ".checkpoints.lock"
ACTIVE_FILE = ".active.lock"
SUFFIX = ".pt"
TMP_PREFIX = ".tmp-"
# The keys a checkpoint written by this module always has.
REQUIRED_KEYS = ("meta", "student", "teacher", "optimizer", "position", "rng")


# ---------------------------------------------------------------------------- errors
class CheckpointError(Exception):
    """A checkpoint operation that cannot be done; the message says why."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file that is truncated, damaged or not a checkpoint."""


class UnsafeCheckpointError(CheckpointError):
    """A file that would need arbitrary unpickling (it may execute code) to load."""


class CheckpointWriteError(CheckpointError):
    """A save that failed (disk full, permission denied); earlier saves are intact. The
    message leads with the cause in plain words; the exception it was raised from keeps
    the library's detail."""


class NoCheckpointError(CheckpointError):
    """No run or checkpoint matches what was asked for."""


class RunBusyError(CheckpointError):
    """The run folder is locked by another writer."""


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

    @property
    def real_f1(self) -> float | None:
        """ReaL F1 of these weights, if they were evaluated."""
        if not self.metrics:
            return None
        value = self.metrics.get("real_f1")
        if value is None or not math.isfinite(value):
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


@dataclass
class RunInfo:
    """A run folder under `checkpoint_path` and its saves, oldest first."""

    path: Path
    records: list[Record]
    active: bool
    unreadable: list[str] = field(default_factory=list)
    """Checkpoint files that are in no record and do not load (damaged or foreign)."""

    @property
    def name(self) -> str:
        """The folder's name."""
        return self.path.name

    @property
    def newest(self) -> Record | None:
        """The newest save, if any."""
        return self.records[-1] if self.records else None

    @property
    def best(self) -> Record | None:
        """The best save by ReaL F1, if any was evaluated."""
        return best_record(self.records)

    @property
    def last_time(self) -> float:
        """Time of the newest save, else of the folder's last change."""
        if self.records:
            return self.records[-1].time
        with contextlib.suppress(OSError):
            return self.path.stat().st_mtime
        return 0.0


@dataclass
class VerifyResult:
    """The outcome of checking one checkpoint file."""

    path: Path
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the file matches its record and loads."""
        return not self.problems


@dataclass
class ResumePoint:
    """The checkpoint a run resumes from, already loaded and checked."""

    run_dir: Path
    path: Path
    state: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def settings(self) -> dict[str, Any]:
        """The settings the run used when it saved this checkpoint."""
        return dict(self.state["meta"]["settings"])


# ---------------------------------------------------------------------------- file I/O
def _write_payload(obj: Any, fh: IO[bytes]) -> None:
    """Serialise `obj` into an open file (a seam: tests make it fail half-way)."""
    torch.save(obj, fh)


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_sha256(path: Path) -> tuple[int, str]:
    """(size in bytes, hex SHA-256) of a file."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _atomic_write(path: Path, write: Any) -> tuple[int, str]:
    """Write `path` through a temporary file in the same folder, fsync, os.replace.

    Returns the (size, sha256) of what reached the disk. On any failure the temporary
    file is removed and `path` is left as it was.

    Raises:
        CheckpointWriteError: the write failed; the message names the cause and `path`.
    """
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        # Hash what is on the disk, not what we meant to write.
        size, digest = file_sha256(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, Exception):  # torch wraps a full disk in a RuntimeError
            raise CheckpointWriteError(describe_os_error(exc, path)) from exc
        raise
    _fsync_dir(path.parent)
    return size, digest


def atomic_save(obj: Any, path: Path) -> tuple[int, str]:
    """`torch.save` `obj` to `path` atomically; return (size, sha256) of the file."""
    return _atomic_write(Path(path), lambda fh: _write_payload(obj, fh))


def atomic_write_text(path: Path, text: str) -> None:
    """Replace a text file atomically (temporary file, fsync, os.replace)."""
    data = text.encode("utf-8")
    _atomic_write(Path(path), lambda fh: fh.write(data))


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


# ---------------------------------------------------------------------------- locks
@contextlib.contextmanager
def run_lock(run_dir: Path, timeout: float = 60.0) -> Iterator[None]:
    """Hold the run folder's edit lock: one saver, pruner or deleter at a time.

    Raises:
        RunBusyError: when another process holds it for longer than `timeout` seconds.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fh = (Path(run_dir) / LOCK_FILE).open("a+b")
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RunBusyError(
                        f"{run_dir}: another process is editing this run's checkpoints; "
                        "try again later."
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        fh.close()  # closing the descriptor releases the lock


def run_is_active(run_dir: Path) -> bool:
    """Whether a live trainer (in any process) is writing into `run_dir`.

    A killed trainer's lock is released by the kernel, so this never reports a dead run.
    """
    path = Path(run_dir) / ACTIVE_FILE
    if fcntl is None or not path.exists():
        return False
    with path.open("a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


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
    return _load(path, mmap)


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


def _load(path: Path, mmap: bool = False) -> dict[str, Any]:
    """`load_checkpoint` without the manifest check (verify makes its own)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise CorruptCheckpointError(f"{path}: no such checkpoint file.") from None
    except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        raise CheckpointError(f"{describe_os_error(exc, path)} (cannot read it).") from None
    except pickle.UnpicklingError as exc:
        text = str(exc).lower()
        if "weights only" in text or "weights_only" in text or "unsupported global" in text:
            raise UnsafeCheckpointError(
                f"{path}: refused: loading it needs arbitrary unpickling, which can run "
                "code; a mile-tui checkpoint holds only tensors and plain values. Load it "
                "yourself with torch.load(weights_only=False) only if you trust its source."
            ) from None
        raise CorruptCheckpointError(f"{path}: damaged checkpoint ({exc}).") from None
    except Exception as exc:  # zip, EOF and storage errors all mean a damaged file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptCheckpointError(
            f"{path}: truncated or damaged checkpoint ({reason})."
        ) from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise CorruptCheckpointError(f"{path}: not a mile-tui checkpoint (keys missing).")
    return state


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


def write_manifest(run_dir: Path, records: Iterable[Record]) -> None:
    """Replace the run's manifest atomically."""
    data = {
        "format": "mile-tui-manifest",
        "version": FORMAT_VERSION,
        "checkpoints": [_clean(r.to_json()) for r in records],
    }
    atomic_write_text(Path(run_dir) / MANIFEST_FILE, json.dumps(data, indent=1) + "\n")


def _remove_stale_temps(run_dir: Path) -> None:
    """Remove temporary files of writers that died; call only under `run_lock`."""
    for path in Path(run_dir).glob(f"{TMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            path.unlink()


# ---------------------------------------------------------------------------- retention
def best_record(records: Iterable[Record]) -> Record | None:
    """The save with the highest ReaL F1 (the newer one on a tie), or None."""
    scored = [r for r in records if r.real_f1 is not None]
    if not scored:
        return None
    return max(scored, key=lambda r: (r.real_f1, r.seq))


def retained(records: Iterable[Record], keep_last: int, keep_best: int = 1) -> set[str]:
    """File names to keep: the `keep_last` newest and the `keep_best` best by ReaL F1.

    Pure function of the records, so retention can be tested on random histories.
    """
    ordered = sorted(records, key=lambda r: r.seq)
    # A negative slice start would wrap around: with fewer saves than `keep_last`, keep all.
    keep = {r.file for r in ordered[max(len(ordered) - keep_last, 0):]} if keep_last > 0 else set()
    scored = [r for r in ordered if r.real_f1 is not None]
    scored.sort(key=lambda r: (r.real_f1, r.seq), reverse=True)
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


def _remove(run_dir: Path, records: list[Record], doomed: list[Record]) -> None:
    """Drop `doomed` from the manifest first, then delete their files."""
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
            _remove(run_dir, records, doomed)
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
        _remove(run_dir, records, [record])
    return record


# ---------------------------------------------------------------------------- saving
def _position(trainer: Trainer) -> tuple[int, str, int]:
    """(generation from 1, phase, step) of the trainer's state, for the record."""
    if trainer.phase_index == 0 and trainer.step == 0:
        return trainer.generation, ("evaluated" if trainer.generation else "start"), 0
    phase = trainer.phases[min(trainer.phase_index, len(trainer.phases) - 1)]
    return trainer.generation + 1, phase.name, trainer.step


def _metrics_of(trainer: Trainer) -> dict[str, Any] | None:
    """The last evaluation if it scored exactly the weights being saved, else None."""
    if not trainer.history or trainer.phase_index or trainer.step:
        return None
    last = trainer.history[-1]
    if last.get("global_step") != trainer.global_step:
        return None
    return _clean({k: v for k, v in last.items() if k != "sweep"})


class RunCheckpointer:
    """Saves a trainer's state into its run folder (the trainer's `Checkpointer`).

    Holds the run's "active" lock from construction until `close()` (or the process
    ends, however it ends), so that pruning tools never remove the newest save of a
    live run.
    """

    def __init__(self, run_dir: Path, max_checkpoint_num: int, keep_best: int = 1) -> None:
        self.run_dir = Path(run_dir)
        self.keep_last = max(1, max_checkpoint_num)
        self.keep_best = max(1, keep_best)
        self._active: IO[bytes] | None = None
        self._acquire_active()
        with run_lock(self.run_dir):
            _remove_stale_temps(self.run_dir)

    def _acquire_active(self) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            return
        fh = (self.run_dir / ACTIVE_FILE).open("a+b")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise RunBusyError(
                f"{self.run_dir}: another process is training in this run folder."
            ) from None
        self._active = fh

    def close(self) -> None:
        """Release the run's active lock (the run is over)."""
        if self._active is not None:
            self._active.close()
            self._active = None

    def __call__(self, event: ev.Event) -> None:
        """As a sink: release the active lock when the run ends."""
        if isinstance(event, ev.RunEnded):
            self.close()

    def save(self, trainer: Trainer, reason: str) -> ev.CheckpointSaved:
        """Write the trainer's state atomically, record it, then apply retention.

        Raises:
            CheckpointWriteError: the file or the manifest could not be written; no
                partial file is left and the earlier saves are untouched.
        """
        generation, phase, step = _position(trainer)
        with run_lock(self.run_dir):
            records = read_records(self.run_dir)
            seq = max((r.seq for r in records), default=0) + 1
            path = self._free_name(f"step-{trainer.global_step:08d}-{reason}")
            now = time.time()
            metrics = _metrics_of(trainer)
            meta: dict[str, Any] = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "seq": seq,
                "generation": generation,
                "phase": phase,
                "step": step,
                "global_step": trainer.global_step,
                "reason": reason,
                "time": now,
                "metrics": metrics,
                "settings": trainer.settings.to_dict(),
            }
            state = trainer.state_dict()
            state["meta"] = meta
            try:
                size, digest = atomic_save(state, path)
            except CheckpointWriteError as exc:
                raise CheckpointWriteError(
                    f"{exc} (checkpoint not saved; the earlier checkpoints are intact)"
                ) from exc
            record = Record(path.name, seq, generation, phase, step, trainer.global_step,
                            reason, metrics, size, digest, now)
            records.append(record)
            try:
                write_manifest(self.run_dir, records)
                keep = retained(records, self.keep_last, self.keep_best) | protected(records)
                doomed = [r for r in records if r.file not in keep]
                if doomed:
                    _remove(self.run_dir, records, doomed)
            except (OSError, CheckpointWriteError) as exc:
                # The checkpoint itself is complete; read_records adopts it later.
                cause = exc if isinstance(exc, CheckpointWriteError) else describe_os_error(exc)
                raise CheckpointWriteError(
                    f"{cause} (checkpoint {path} is complete, but the manifest could not be "
                    "updated; it is adopted when next read)"
                ) from exc
        return ev.CheckpointSaved(
            path=str(path),
            generation=generation,
            phase=phase,
            global_step=trainer.global_step,
            reason=reason,
            kept=[r.file for r in records if r.file in keep],
        )

    def _free_name(self, stem: str) -> Path:
        path = self.run_dir / f"{stem}{SUFFIX}"
        n = 1
        while path.exists():
            n += 1
            path = self.run_dir / f"{stem}-{n}{SUFFIX}"
        return path


# ---------------------------------------------------------------------------- browsing
def is_run_dir(path: Path) -> bool:
    """Whether `path` looks like a run folder (settings, manifest or checkpoints)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return (path / MANIFEST_FILE).exists() or (path / "settings.toml").exists() or any(
        path.glob(f"*{SUFFIX}")
    )


def run_info(run_dir: Path) -> RunInfo:
    """A run folder with its saves, and the checkpoint files that cannot be read."""
    run_dir = Path(run_dir)
    records = read_records(run_dir)
    listed = {r.file for r in records}
    unreadable = [p.name for p in sorted(run_dir.glob(f"*{SUFFIX}"))
                  if p.name not in listed and not p.name.startswith(TMP_PREFIX)]
    return RunInfo(run_dir, records, run_is_active(run_dir), unreadable)


def list_runs(root: Path) -> list[RunInfo]:
    """The run folders under `root` (checkpoint_path), oldest activity first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [run_info(p) for p in sorted(root.iterdir()) if is_run_dir(p)]
    runs.sort(key=lambda r: (r.last_time, r.name))
    return runs


def verify_checkpoint(path: Path, record: Record | None = None) -> VerifyResult:
    """Check a checkpoint: size and SHA-256 against its record, then a safe full load."""
    path = Path(path)
    result = VerifyResult(path)
    if not path.is_file():
        result.problems.append("file missing")
        return result
    if record is not None:
        size, digest = file_sha256(path)
        if size != record.size:
            result.problems.append(f"size {size} bytes, the manifest says {record.size}")
        if digest != record.sha256:
            result.problems.append("SHA-256 differs from the manifest")
    try:
        _load(path)  # the record was compared above, with its own words
    except CheckpointError as exc:
        result.problems.append(str(exc))
    return result


def verify_run(run_dir: Path) -> list[tuple[Record | None, VerifyResult]]:
    """Verify every save of a run, plus checkpoint files that cannot even be listed."""
    run_dir = Path(run_dir)
    records = read_records(run_dir)
    results: list[tuple[Record | None, VerifyResult]] = [
        (r, verify_checkpoint(run_dir / r.file, r)) for r in records
    ]
    listed = {r.file for r in records}
    for path in sorted(run_dir.glob(f"*{SUFFIX}")):
        if path.name not in listed and not path.name.startswith(TMP_PREFIX):
            results.append((None, verify_checkpoint(path)))
    return results


def resolve_checkpoint(ref: str | Path, root: Path) -> tuple[Path, Record | None]:
    """Find a checkpoint from a file path, a run folder (its newest save), or a name
    relative to `root` ("RUN" or "RUN/FILE").

    Raises:
        NoCheckpointError: nothing matches.
    """
    candidates = [Path(ref), Path(root) / ref]
    for path in candidates:
        if path.is_file():
            match = [r for r in read_records(path.parent) if r.file == path.name]
            return path, (match[0] if match else None)
        if path.is_dir() and is_run_dir(path):
            records = read_records(path)
            if not records:
                raise NoCheckpointError(f"{path}: this run has no checkpoint.")
            return path / records[-1].file, records[-1]
    raise NoCheckpointError(f"{ref}: no such checkpoint or run (looked under {root}).")


def export_weights(checkpoint: Path, out: Path) -> Path:
    """Write the student's weights alone, a plain torchvision state_dict, to `out`.

    The result loads with `torchvision.models.resnet18(num_classes=10).load_state_dict(
    torch.load(out, weights_only=True))` (or the matching model).
    """
    state = load_checkpoint(checkpoint)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointWriteError(describe_os_error(exc, out.parent)) from exc
    atomic_save(dict(state["student"]), out)  # its error names the cause and the file
    return out


# ---------------------------------------------------------------------------- resume
def newest_run(root: Path) -> Path:
    """The run under `root` with the most recent save.

    Raises:
        NoCheckpointError: no run under `root` has a checkpoint.
    """
    runs = [r for r in list_runs(root) if r.records]
    if not runs:
        raise NoCheckpointError(f"{root}: no run with a checkpoint to resume.")
    return runs[-1].path


def find_resume(target: str | Path | None, root: Path) -> ResumePoint:
    """Choose and load the checkpoint to resume from.

    Args:
        target: None or "latest" for the newest run under `root`; a run folder (its
            newest good save); or a checkpoint file. Relative names are also looked up
            under `root`.
        root: `checkpoint_path`.

    A run folder whose newest save is corrupt or truncated falls back to the newest
    good one, with a warning that names both. An explicit file must load.

    Raises:
        NoCheckpointError: nothing to resume from.
        CorruptCheckpointError, UnsafeCheckpointError: an explicit file that fails.
    """
    root = Path(root)
    if target is None or str(target) == "latest":
        run_dir = newest_run(root)
    else:
        given = Path(target)
        path = given if given.exists() else root / given
        if path.is_file():
            return ResumePoint(path.parent, path, load_checkpoint(path))
        if not path.is_dir():
            raise NoCheckpointError(f"{target}: no such run folder or checkpoint.")
        run_dir = path
    records = read_records(run_dir)
    if not records:
        raise NoCheckpointError(f"{run_dir}: this run has no checkpoint to resume from.")
    bad: list[tuple[Record, str]] = []
    for record in reversed(records):
        path = run_dir / record.file
        try:
            state = load_checkpoint(path)  # checks size and SHA-256 against the manifest
        except (OSError, CheckpointError) as exc:
            bad.append((record, str(exc)))
            continue
        warnings = [
            f"checkpoint {run_dir / b.file} is unusable ({why}); resuming from the "
            f"previous good one, {path}."
            for b, why in bad
        ]
        return ResumePoint(run_dir, path, state, warnings)
    names = ", ".join(b.file for b, _ in bad)
    raise CorruptCheckpointError(f"{run_dir}: no checkpoint loads ({names}).")
