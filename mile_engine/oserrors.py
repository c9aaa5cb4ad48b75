"""Plain words for file-system failures: "no space left on device: PATH", not a library's
internals (torch reports a full disk as `enforce fail at inline_container.cc ... unexpected
pos`, with the real OSError only in the exception chain)."""

from __future__ import annotations

import errno
from pathlib import Path

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
        words = WORDS.get(os_error.errno) or os_error.strerror or f"errno {os_error.errno}"
        return f"{words}{suffix}"
    if _mentions_full_disk(exc):
        return f"no space left on device{suffix}"
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"could not write{suffix.replace(':', '', 1)} ({first})"
