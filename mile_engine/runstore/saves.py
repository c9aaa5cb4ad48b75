"""The saves of a run as the user handles them: verify, find by name, export.

Writing saves is `mile_engine.checkpoints.RunCheckpointer`'s; the manifest, the safe load
and retention are `mile_engine.runstore.manifest`'s; listing runs and their saves is
`mile_engine.runstore.catalog`'s (`RunSummary.records`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from mile_engine.oserrors import describe_os_error
from mile_engine.runstore.catalog import is_run_folder
from mile_engine.runstore.files import (
    CheckpointError,
    CheckpointWriteError,
    NoCheckpointError,
    atomic_save,
    file_sha256,
    read_checkpoint_file,
)
from mile_engine.runstore.layout import LOG_FILE, MANIFEST_FILE, METRICS_FILE, SETTINGS_FILE
from mile_engine.runstore.manifest import (
    Record,
    load_checkpoint,
    read_records,
    unlisted_checkpoints,
)


@dataclass
class VerifyResult:
    """The outcome of checking one checkpoint file."""

    path: Path
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the file matches its record and loads."""
        return not self.problems



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
    results.extend((None, verify_checkpoint(p)) for p in unlisted_checkpoints(run_dir, records))
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
        if path.is_dir() and is_run_folder(path):
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
