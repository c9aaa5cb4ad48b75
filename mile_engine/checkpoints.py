"""Crash-safe checkpoints: the run's saver, browsing runs and saves, and resume.

The parts live in their own modules and are re-exported here, so `from
mile_engine.checkpoints import X` reaches every public name:

- `checkpoint_files`: errors, atomic writes (temporary file, fsync, `os.replace`),
  hashes and the safe load (`torch.load(weights_only=True)`);
- `run_lock`: the run folder's edit lock and its "a trainer is live here" lock;
- `manifest`: the manifest of saves, the load that checks a file against it, retention.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mile_engine import events as ev
from mile_engine.oserrors import describe_os_error
from mile_engine.runstore.files import (
    FORMAT,
    FORMAT_VERSION,
    REQUIRED_KEYS,
    CheckpointError,
    CheckpointWriteError,
    CorruptCheckpointError,
    NoCheckpointError,
    RunBusyError,
    UnsafeCheckpointError,
    atomic_save,
    atomic_write_text,
    file_sha256,
    json_clean,
    read_checkpoint_file,
    remove_stale_temps,
)
from mile_engine.runstore.layout import (
    ACTIVE_FILE,
    LOCK_FILE,
    LOG_FILE,
    METRICS_FILE,
    SETTINGS_FILE,
    SUFFIX,
    TMP_PREFIX,
)
from mile_engine.runstore.lock import hold_active, run_is_active, run_lock
from mile_engine.runstore.manifest import (
    MANIFEST_FILE,
    Record,
    best_record,
    check_against_manifest,
    delete_checkpoint,
    load_checkpoint,
    protected,
    prune_run,
    read_records,
    remove_saves,
    retained,
    write_manifest,
)

if TYPE_CHECKING:
    from mile_engine.trainer import Trainer

__all__ = [
    "ACTIVE_FILE", "FORMAT", "FORMAT_VERSION", "LOCK_FILE", "MANIFEST_FILE", "REQUIRED_KEYS",
    "SUFFIX", "TMP_PREFIX", "CheckpointError", "CheckpointWriteError",
    "CorruptCheckpointError", "NoCheckpointError", "Record", "ResumePoint", "RunBusyError",
    "RunCheckpointer", "RunInfo", "UnsafeCheckpointError", "VerifyResult", "atomic_save",
    "atomic_write_text", "best_record", "check_against_manifest", "delete_checkpoint",
    "export_weights", "file_sha256", "find_resume", "is_run_dir", "json_clean", "list_runs",
    "load_checkpoint", "newest_run", "protected", "prune_run", "read_checkpoint_file",
    "read_records", "remove_saves", "remove_stale_temps", "resolve_checkpoint", "retained",
    "run_info", "run_is_active", "run_lock", "verify_checkpoint", "verify_run",
    "write_manifest",
]


# ---------------------------------------------------------------------------- results
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
        """The best save by the run's monitored metric, if any was evaluated."""
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
    return json_clean({k: v for k, v in last.items() if k != "sweep"})


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
        self._active: IO[bytes] | None = hold_active(self.run_dir)
        with run_lock(self.run_dir):
            remove_stale_temps(self.run_dir)

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
                            reason, metrics, size, digest, now, trainer.settings.monitor)
            records.append(record)
            try:
                write_manifest(self.run_dir, records)
                keep = retained(records, self.keep_last, self.keep_best) | protected(records)
                doomed = [r for r in records if r.file not in keep]
                if doomed:
                    remove_saves(self.run_dir, records, doomed)
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
    return (path / MANIFEST_FILE).exists() or (path / SETTINGS_FILE).exists() or any(
        path.glob(f"*{SUFFIX}")
    )


def run_info(run_dir: Path) -> RunInfo:
    """A run folder with its saves, and the checkpoint files that cannot be read."""
    run_dir = Path(run_dir)
    recorded = read_records(run_dir)
    # A save whose file is no longer what its record describes (cut to 0 bytes, cut
    # short, replaced by a folder) is listed as unreadable, not as a save: one stat each.
    # Bytes changed in place keep their size; `verify` compares the hash.
    records = [r for r in recorded if _matches_size(run_dir / r.file, r.size)]
    listed = {r.file for r in records}
    unreadable = [p.name for p in sorted(run_dir.glob(f"*{SUFFIX}"))
                  if p.name not in listed and not p.name.startswith(TMP_PREFIX)]
    return RunInfo(run_dir, records, run_is_active(run_dir), unreadable)


def _matches_size(path: Path, size: int) -> bool:
    """Whether `path` is a regular file of `size` bytes."""
    try:
        st = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size


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
        read_checkpoint_file(path)  # the record was compared above, with its own words
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

    The result loads into the run's torchvision model with its class count, e.g.
    `torchvision.models.get_model("resnet18", num_classes=10).load_state_dict(
    torch.load(out, weights_only=True))` (`resnet18-10` is torchvision's resnet18 with 10
    classes), and is a `weights = "PATH"` file for a new run.
    """
    out = Path(out)
    _check_export_target(Path(checkpoint), out)
    state = load_checkpoint(checkpoint)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointWriteError(describe_os_error(exc, out.parent)) from exc
    atomic_save(dict(state["student"]), out)  # its error names the cause and the file
    return out


def _check_export_target(checkpoint: Path, out: Path) -> None:
    """Refuse an export that would replace the save itself, another file of its run
    folder (a save, the manifest, the settings or the records), or something that is not
    a regular file (`/dev/full`, a folder, a pipe: replacing it would swap a device node
    for a file, or write nowhere).

    Raises:
        CheckpointError: `out` is one of those; nothing is written.
    """
    try:
        st: os.stat_result | None = out.stat()
    except OSError:  # absent, or unreachable: the write itself says why
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise CheckpointError(
            f"--out {out}: {kind}; name a new file or a regular file to replace."
        )
    run_dir = checkpoint.parent
    protected = {checkpoint.name, MANIFEST_FILE, SETTINGS_FILE, LOG_FILE, METRICS_FILE}
    protected.update(r.file for r in read_records(run_dir))
    target = os.path.realpath(out)
    for name in sorted(protected):
        path = run_dir / name
        same = os.path.realpath(path) == target
        if not same and st is not None:
            with contextlib.suppress(OSError):
                same = os.path.samefile(path, out)  # a hard link to it
        if same:
            what = "the checkpoint being exported" if name == checkpoint.name else (
                f"{name}, a file of the run folder {run_dir}")
            raise CheckpointError(
                f"--out {out}: is {what}; exporting there would replace it. Name another "
                "file."
            )


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
