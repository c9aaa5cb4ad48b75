"""Injected disk faults: a disk that fills mid-write, and a byte flipped in a saved tensor."""

from __future__ import annotations

import errno
import io
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import torch

from mile_engine.runstore import records as runs

FULL = OSError(errno.ENOSPC, "No space left on device")


class DiskBudget:
    """`LineFile._write_some` on a disk with `budget` bytes left: it writes real bytes,
    part of a write when only part fits, then raises ENOSPC."""

    def __init__(self, budget: int, only: str | None = None) -> None:
        self.left = budget
        self.only = only  # the file name it applies to; others write normally
        self.real = runs.LineFile._write_some

    def install(self, mp: pytest.MonkeyPatch) -> None:
        """Replace `LineFile._write_some` (a function, so that it binds like a method)."""
        mp.setattr(runs.LineFile, "_write_some", lambda line_file, data: self(line_file, data))

    def __call__(self, line_file: runs.LineFile, data: memoryview) -> int:
        if self.only is not None and line_file.path.name != self.only:
            return self.real(line_file, data)
        if self.left == 0:
            raise OSError(FULL.errno, FULL.strerror)
        part = data[: self.left]
        written = self.real(line_file, part)
        self.left -= written
        return written


class FullAfter(io.RawIOBase):
    """A file object that takes `budget` bytes, then raises ENOSPC (as a disk would)."""

    def __init__(self, fh: BinaryIO, budget: int) -> None:
        self.fh, self.left = fh, budget

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if len(data) > self.left:
            self.fh.write(bytes(data[: self.left]))
            self.left = 0
            raise OSError(FULL.errno, FULL.strerror)
        self.left -= len(data)
        return self.fh.write(data)


def flip_tensor_byte(path: Path, tensor: torch.Tensor) -> None:
    """Flip one byte inside `tensor`'s stored data: the file still loads, wrongly."""
    data = bytearray(path.read_bytes())
    at = data.find(tensor.numpy().tobytes())
    assert at > 0, "tensor bytes not found in the file"
    data[at + 1] ^= 0x40
    path.write_bytes(bytes(data))


