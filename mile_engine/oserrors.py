"""Plain words for file-system failures: "no space left on device: PATH", not a library's
internals (torch reports a full disk as `enforce fail at inline_container.cc ... unexpected
pos`, with the real OSError only in the exception chain)."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path
from typing import BinaryIO

# The conditions a user can act on, in the words `df`, `ls` and `mount` would use.
WORDS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EIO: "input/output error",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder",
}


class NotRegularFileError(OSError):
    """A path that exists but is no regular file: a folder, a named pipe, a device, a
    socket. Reading one could block for ever (a pipe) or never end (`/dev/zero`)."""


class FileTooLargeError(OSError):
    """A regular file larger than its reader allows (a request file, a label file)."""


def _kind(mode: int) -> str:
    """What a non-regular file is, in the words `ls -l` would suggest."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular_fd(path: Path | str, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """Open `path` (symbolic links followed) only if it is a regular file; never block.

    The file is opened with O_NONBLOCK, so a named pipe without a writer does not wait,
    then checked with `fstat` on the descriptor itself (no race between a check and the
    open); O_NONBLOCK is cleared again before the descriptor is returned. `flags` may add
    O_CREAT and the like: a file created by this call is regular.

    Raises:
        NotRegularFileError: `path` is a folder, a named pipe, a device or a socket
            (its `strerror` says which).
        OSError: the open itself failed (no such file, permission denied, ...).
    """
    nonblock = getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags | nonblock | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            code = errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL
            kind = _kind(st.st_mode)
            if kind == "a folder":
                words = "is a folder"
            elif kind == "not a regular file":
                words = kind
            else:
                words = f"not a regular file ({kind})"
            raise NotRegularFileError(code, words, str(path))
        if nonblock:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~nonblock)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: Path | str) -> BinaryIO:
    """`open(path, "rb")` for regular files only; see `open_regular_fd`."""
    return os.fdopen(open_regular_fd(path), "rb")


def read_regular(path: Path | str, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them.

    Raises:
        NotRegularFileError: `path` is not a regular file.
        FileTooLargeError: it holds more than `limit` bytes.
        OSError: it cannot be opened or read.
    """
    with open_regular(path) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise FileTooLargeError(
            errno.EFBIG, f"larger than {_size_words(limit)}, more than it may hold", str(path)
        )
    return data


def _size_words(size: int) -> str:
    """A byte limit in the largest whole unit: 1 MiB, 64 KiB, 100 bytes."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def find_os_error(exc: BaseException | None) -> OSError | None:
    """The first OSError with an errno in `exc` or in the exceptions it was raised from."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _mentions_full_disk(exc: BaseException) -> bool:
    """Whether the text of `exc` or of its chain says the disk is full (no errno kept)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if "no space left on device" in str(current).lower():
            return True
        current = current.__cause__ or current.__context__
    return False


def describe_os_error(exc: BaseException, path: Path | str | None = None) -> str:
    """What went wrong with `path`, cause first: "no space left on device: PATH".

    `path` defaults to the file the OSError names. Errors with no known cause keep the
    first line of their own text after the path.
    """
    os_error = find_os_error(exc)
    where = path if path is not None else getattr(os_error, "filename", None)
    suffix = f": {where}" if where is not None else ""
    if os_error is not None:
        assert os_error.errno is not None
        if isinstance(os_error, (NotRegularFileError, FileTooLargeError)):
            words = os_error.strerror  # already the cause, in this module's words
        else:
            words = WORDS.get(os_error.errno) or os_error.strerror or f"errno {os_error.errno}"
        return f"{words}{suffix}"
    if _mentions_full_disk(exc):
        return f"no space left on device{suffix}"
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"could not write{suffix.replace(':', '', 1)} ({first})"
