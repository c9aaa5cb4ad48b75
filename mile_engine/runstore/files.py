"""Checkpoint files: their errors, atomic writes, hashes and a safe load.

Every file is written to a temporary file in the same folder, fsynced, then moved into
place with `os.replace` (and the folder fsynced), so a kill, a full disk or a power cut
leaves either the old file or the new one, never half of one.

Checkpoints hold tensors and plain Python values only and are read with
`torch.load(weights_only=True)`; the student's weights are a plain torchvision
`state_dict` under the key "student".
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
from pathlib import Path
from typing import IO, Any

import torch

from mile_engine.oserrors import describe_os_error
from mile_engine.runstore.layout import TMP_PREFIX

FORMAT = "mile-tui-checkpoint"
FORMAT_VERSION = 1
# The keys a checkpoint written by this package always has.
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


def remove_stale_temps(run_dir: Path) -> None:
    """Remove temporary files of writers that died; call only under `run_lock`."""
    for path in Path(run_dir).glob(f"{TMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            path.unlink()


def read_checkpoint_file(path: Path, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint file safely onto the CPU, without comparing it to its manifest
    record (`manifest.load_checkpoint` does; verify makes its own comparison).

    Raises:
        UnsafeCheckpointError: the file needs arbitrary unpickling, which could run code.
        CorruptCheckpointError: the file is missing, truncated, damaged or not ours.
        CheckpointError: the file cannot be read (permission denied, a folder).
    """
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
