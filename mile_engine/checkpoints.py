"""The run's saver and resume: crash-safe checkpoints written by a live trainer, and the
choice of the save a new trainer continues from.

The run folder's other parts live in `mile_engine.runstore`: the files and their safe
load (`files`), the locks (`lock`), the manifest and retention (`manifest`), the list of
runs (`catalog`), and verify, find and export (`saves`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mile_engine import events as ev
from mile_engine.oserrors import describe_os_error
from mile_engine.runstore.catalog import list_runs
from mile_engine.runstore.files import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    CheckpointWriteError,
    CorruptCheckpointError,
    NoCheckpointError,
    atomic_save,
    remove_stale_temps,
)
from mile_engine.runstore.layout import SUFFIX
from mile_engine.runstore.lock import hold_active, run_lock
from mile_engine.runstore.manifest import (
    Record,
    load_checkpoint,
    protected,
    read_records,
    remove_saves,
    retained,
    write_manifest,
)
from mile_engine.runstore.records import json_clean

if TYPE_CHECKING:
    from mile_engine.trainer import Trainer


# ---------------------------------------------------------------------------- results
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


# ---------------------------------------------------------------------------- resume
def newest_run(root: Path) -> Path:
    """The run under `root` with the most recent save.

    Raises:
        NoCheckpointError: no run under `root` has a checkpoint.
    """
    runs = [r for r in list_runs([root]) if r.records]
    if not runs:
        raise NoCheckpointError(f"{root}: no run with a checkpoint to resume.")
    return max(runs, key=lambda r: (r.last_save_time, r.name)).path


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
