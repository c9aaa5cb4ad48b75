"""A run's history from its folder: metrics.jsonl read back as the events it recorded.

`load_history` replays a whole file (a run opened later shows everything it did);
`MetricsFollower` follows a live run started elsewhere, reading only the bytes appended
since its last call and keeping a torn last line until its newline arrives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import os
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mile_engine import events as ev
from mile_engine.config.loader import read_toml
from mile_engine.config.schema import SettingsError
from mile_engine.oserrors import open_regular_fd
from mile_engine.runstore.layout import METRICS_FILE, SETTINGS_FILE

# Every event class, by the name event_record writes into "event".
EVENT_CLASSES: dict[str, type] = {cls.__name__: cls for cls in typing.get_args(ev.Event)}

# How many bytes the follower reads at once: a 100 MB file opens in pieces, so no
# single read holds it whole twice (bytes and lines).
READ_CHUNK = 8 << 20


@dataclasses.dataclass(frozen=True)
class _Shape:
    """How to build one event class from a record."""

    cls: type
    required: frozenset[str]
    names: tuple[str, ...]
    floats: tuple[str, ...]  # fields typed plain `float`: JSON null (NaN written) -> NaN
    plain: bool  # no __post_init__: the fields can be set without calling __init__


def _shape(cls: type) -> _Shape:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    required = frozenset(
        f.name for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    floats = tuple(f.name for f in fields if hints[f.name] is float)
    plain = not hasattr(cls, "__post_init__")
    return _Shape(cls, required, tuple(f.name for f in fields), floats, plain)


_SHAPES = {name: _shape(cls) for name, cls in EVENT_CLASSES.items()}


def event_from_record(record: dict[str, Any]) -> ev.Event | None:
    """The event a metrics.jsonl record was written from (the inverse of
    `mile_engine.runstore.records.event_record`).

    None for a record of an unknown kind (written by a newer version) or one that lacks a
    field its kind needs. Keys the event does not know are ignored. A float written as
    null (NaN or infinite; JSON has neither) comes back as NaN. A `RunStarted` gets empty
    settings when the record has none (metrics.jsonl leaves them out; `load_history` and
    `MetricsFollower` fill them in from settings.toml).
    """
    shape = _SHAPES.get(record.get("event"))  # type: ignore[arg-type]
    if shape is None:
        return None
    try:
        values = {name: record[name] for name in shape.names}
    except KeyError:  # an older record, or RunStarted without its settings
        values = {name: record[name] for name in shape.names if name in record}
        if shape.cls is ev.RunStarted:
            values.setdefault("settings", {})
        if not shape.required <= values.keys():
            return None
        return _build_slow(shape, values)
    for name in shape.floats:
        if values[name] is None:
            values[name] = math.nan
    if not shape.plain:
        return _build_slow(shape, values)
    # Every field is present: fill the frozen dataclass's fields directly. Its __init__
    # would only assign them one by one through object.__setattr__ (frozen), which is
    # most of the cost of replaying a long run's hundreds of thousands of records.
    event: Any = object.__new__(shape.cls)
    event.__dict__.update(values)
    return typing.cast(ev.Event, event)


def _build_slow(shape: _Shape, values: dict[str, Any]) -> ev.Event | None:
    """Build through __init__ (defaults for the fields a record lacks)."""
    for name in shape.floats:
        if values.get(name, 0.0) is None:
            values[name] = math.nan
    try:
        event: ev.Event = shape.cls(**values)
    except TypeError:
        return None
    return event


def read_run_settings(run_dir: Path) -> dict[str, Any]:
    """The run's flat settings from its settings.toml; {} when missing or unreadable."""
    path = Path(run_dir) / SETTINGS_FILE
    try:
        return read_toml(path) if path.is_file() else {}
    except SettingsError:
        return {}


def _parse_lines(data: bytes) -> list[dict[str, Any]]:
    """The records in `data` (whole lines): one JSON parse for all of them (the lines
    joined into one array), line by line only when some line is damaged or empty (then
    that line alone is skipped)."""
    body = data.strip(b"\n")
    if not body:
        return []
    try:
        records = json.loads(b"[" + body.replace(b"\n", b",") + b"]")
    except ValueError:
        records = []
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return [r for r in records if isinstance(r, dict)]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while hundreds of thousands of records are
    built: they hold no cycles, yet each allocation burst triggers a full scan of them,
    which doubled the time to replay a long run."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Replay:
    """Turns records into events, giving each `RunStarted` the run's settings."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._settings: dict[str, Any] | None = None

    def events(self, records: list[dict[str, Any]]) -> list[ev.Event]:
        out: list[ev.Event] = []
        for record in records:
            event = event_from_record(record)
            if event is None:
                continue
            if isinstance(event, ev.RunStarted) and not event.settings:
                if self._settings is None:
                    self._settings = read_run_settings(self.run_dir)
                event = dataclasses.replace(event, settings=dict(self._settings))
            out.append(event)
        return out


def load_history(run_dir: Path) -> list[ev.Event]:
    """Every event of a run's metrics.jsonl, oldest first ([] when there is no file).

    A resumed run appended to the same file, so this is its whole history. A torn last
    line (a run killed mid-write) and damaged lines are skipped.
    """
    follower = MetricsFollower(run_dir)
    return follower.read_new()


class MetricsFollower:
    """Reads a run's metrics.jsonl incrementally: only bytes appended since the last call.

    A torn last line is kept until its newline arrives. A writer that cut a torn tail off
    before appending (a resumed run does) is followed without starting over; a file that
    shrank further, or was replaced, is read again from the start (`restarted` then says
    so for that call). A missing file gives [].
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self._offset = 0  # bytes consumed, the pending torn line included
        self._pending = b""  # a last line without its newline yet
        self._inode: int | None = None
        self._ended = False
        self._replay = _Replay(self.run_dir)
        self.restarted = False

    @property
    def ended(self) -> bool:
        """Whether the newest lifecycle record read is a `RunEnded` (a resumed run's
        `RunStarted` after it makes this False again)."""
        return self._ended

    @property
    def offset(self) -> int:
        """Bytes of the file consumed so far (a pending torn line included)."""
        return self._offset

    def _reset(self) -> None:
        self._offset, self._pending, self._ended = 0, b"", False
        self.restarted = True

    def read_new(self, keep_newest: Mapping[str, int] | None = None) -> list[ev.Event]:
        """The events of the whole lines appended since the last call, oldest first.

        `keep_newest` maps event kinds ("StepLogged") to how many of the newest records
        of that kind this call returns; older ones are passed over before they are
        parsed, which is most of the work of opening a long run (its progress records
        are nearly all of the file, and a screen shows only the newest few hundred).
        """
        self.restarted = False
        try:
            fd = open_regular_fd(self.path)  # a named pipe would block the follower
        except OSError:
            return []
        try:
            st = os.fstat(fd)
            if self._inode is not None and st.st_ino != self._inode:
                self._reset()  # replaced by another file
            self._inode = st.st_ino
            if st.st_size < self._offset:
                torn_start = self._offset - len(self._pending)
                if self._pending and st.st_size >= torn_start:
                    # The writer cut our torn line off (LineFile does on reopening).
                    self._offset, self._pending = torn_start, b""
                else:
                    self._reset()
            records: list[dict[str, Any]] = []
            with _collector_paused():
                self._read_to(fd, st.st_size, records, keep_newest or {})
        finally:
            os.close(fd)
        with _collector_paused():
            events = self._replay.events(records)
        for event in events:
            if isinstance(event, ev.RunEnded):
                self._ended = True
            elif isinstance(event, ev.RunStarted):
                self._ended = False
        return events

    def _read_to(self, fd: int, size: int, records: list[dict[str, Any]],
                 keep_newest: Mapping[str, int]) -> None:
        """Read from the offset to `size`: whole lines into `records`, the rest pending."""
        chunks: list[bytes] = []
        while self._offset < size:
            data = os.pread(fd, min(READ_CHUNK, size - self._offset), self._offset)
            if not data:
                break
            self._offset += len(data)
            data = self._pending + data
            cut = data.rfind(b"\n")
            self._pending = data[cut + 1:]
            if keep_newest:
                chunks.append(data[:cut + 1])
            else:
                records.extend(_parse_lines(data[:cut + 1]))
        if chunks:
            kept = _newest_of_kinds(b"".join(chunks).split(b"\n"), keep_newest)
            for start in range(0, len(kept), 50_000):  # one JSON parse per slice
                records.extend(_parse_lines(b"\n".join(kept[start:start + 50_000]) + b"\n"))


def _newest_of_kinds(lines: list[bytes], keep_newest: Mapping[str, int]) -> list[bytes]:
    """`lines` without all but the newest `keep_newest[kind]` records of each kind named.

    A record's kind is read from the start of its line, where `event_record` puts it
    (`{"event": "StepLogged", ...`); a line that does not start so is always kept.
    """
    prefixes = {f'{{"event": "{kind}"'.encode(): n for kind, n in keep_newest.items()}
    left = dict(prefixes)
    kept: list[bytes] = []
    for line in reversed(lines):
        head = line[: line.find(b",")] if line.startswith(b'{"event": "') else b""
        if head in left:
            if left[head] <= 0:
                continue
            left[head] -= 1
        kept.append(line)
    kept.reverse()
    return kept
