"""Every run folder in one list: its status, progress and best result, read from the folder.

A run's status comes from the folder alone (DESIGN.md, "Runs as event streams"): a live
trainer holds the folder's active lock (`run_lock`), which names its host and pid; a run
that ended wrote a `RunEnded` record as the last line of `metrics.jsonl`; a run with
neither was killed (interrupted).

Summaries stay cheap however long a run is: the settings file, the tail of
`metrics.jsonl`, and one scan of the folder's entries. The best F1 of a run that has not
ended is the newest evaluation marked best, found by searching the file backwards for
its marker; that search is remembered per file, so a growing file is searched again
only in its new bytes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mile_engine.config.loader import read_toml
from mile_engine.config.schema import SettingsError
from mile_engine.oserrors import open_regular
from mile_engine.runstore.layout import MANIFEST_FILE, METRICS_FILE, SETTINGS_FILE, SUFFIX
from mile_engine.runstore.lock import active_holder

if TYPE_CHECKING:
    from mile_engine.runstore.manifest import Record

RunStatus = Literal["running", "finished", "stopped", "failed", "interrupted"]
STATUSES: tuple[RunStatus, ...] = ("running", "finished", "stopped", "failed", "interrupted")

# How much of the end of metrics.jsonl is read first; doubled while it holds no
# record with a position (a run's last lines are a few hundred bytes each).
TAIL_BYTES = 16 * 1024
CHUNK_BYTES = 1 << 20
# The marker of an evaluation that was the run's best so far, as json.dumps writes it.
BEST_MARK = b'"best": true'


@dataclass(frozen=True)
class LockHolder:
    """The process that trains a run: its host name and process id."""

    host: str
    pid: int

    def is_this_process(self) -> bool:
        """Whether the holder is the calling process (same host, same pid)."""
        return self.host == socket.gethostname() and self.pid == os.getpid()

    def is_this_host(self) -> bool:
        """Whether the holder runs on this machine."""
        return self.host == socket.gethostname()

    def __str__(self) -> str:
        return f"{self.host or 'unknown host'} pid {self.pid}"


@dataclass(frozen=True)
class RunSummary:
    """One run folder as the runs list shows it."""

    path: Path
    name: str  # the folder's name
    schema: str
    dataset: str
    model: str
    status: RunStatus
    holder: LockHolder | None  # who trains it, when status == "running"
    generation: int  # the last generation reached (0 before the first)
    generations: int  # epoch_num
    global_step: int
    total_steps: int
    best_f1: float | None
    best_generation: int | None
    last_activity: float  # epoch seconds: the newest modification of a file in the folder
    disk_bytes: int
    settings: dict[str, Any]  # flat settings read from settings.toml ({} if unreadable)
    paused: bool = False  # running, and its newest Paused record has no Resumed after it

    # The saves are read from the manifest (and checked against the files) only when
    # asked for: the runs list never needs them, and reading them loads torch.
    @functools.cached_property
    def _saves(self) -> tuple[list[Record], list[str]]:
        from mile_engine.runstore.manifest import listed_saves

        return listed_saves(self.path)

    @property
    def records(self) -> list[Record]:
        """The run's saves whose files match their records, oldest first."""
        return self._saves[0]

    @property
    def unreadable(self) -> list[str]:
        """Checkpoint files that are in no record and do not load (damaged or foreign),
        or no longer match their record."""
        return self._saves[1]

    @property
    def active(self) -> bool:
        """Whether a live trainer held the folder when it was summarised."""
        return self.holder is not None

    @property
    def newest(self) -> Record | None:
        """The newest save, if any."""
        return self.records[-1] if self.records else None

    @property
    def best(self) -> Record | None:
        """The best save by the run's monitored metric, if any was evaluated."""
        from mile_engine.runstore.manifest import best_record

        return best_record(self.records)

    @property
    def last_save_time(self) -> float:
        """Time of the newest save, else of the folder's last change (0 if unknown)."""
        if self.records:
            return self.records[-1].time
        with contextlib.suppress(OSError):
            return self.path.stat().st_mtime
        return 0.0


def is_run_folder(path: Path) -> bool:
    """Whether `path` is a run folder: it holds the settings, metrics or manifest of a
    run, or checkpoint files."""
    path = Path(path)
    if not path.is_dir():
        return False
    if any((path / name).is_file() for name in (SETTINGS_FILE, METRICS_FILE, MANIFEST_FILE)):
        return True
    try:
        return any(path.glob(f"*{SUFFIX}"))
    except OSError:
        return False


def summarize_run(run_dir: Path) -> RunSummary:
    """Summarise one run folder (status, progress, best, size) without reading it whole.

    Raises:
        ValueError: `run_dir` is not a run folder.
    """
    run_dir = Path(run_dir)
    if not is_run_folder(run_dir):
        raise ValueError(f"{run_dir}: not a run folder (no settings.toml or metrics.jsonl).")
    settings = _read_settings(run_dir)
    metrics = run_dir / METRICS_FILE
    tail = _tail_facts(metrics)
    held = active_holder(run_dir)
    holder = LockHolder(*held) if held is not None else None
    status: RunStatus
    if holder is not None:
        status = "running"
    elif tail.ended is not None and tail.ended.get("status") in STATUSES:
        status = tail.ended["status"]
    else:
        status = "interrupted"
    best_f1, best_generation = _best(metrics, tail)
    generations = _int(settings.get("epoch_num"), 0)
    k = _int(settings.get("k_t"), 0) + _int(settings.get("k_s"), 0)
    total = k * generations if k and generations else tail.total_steps
    last_activity, disk = _scan(run_dir)
    return RunSummary(
        path=run_dir,
        name=run_dir.name,
        schema=str(settings.get("schema", "?")),
        dataset=str(settings.get("dataset", "?")),
        model=str(settings.get("model", "?")),
        status=status,
        holder=holder,
        generation=tail.generation,
        generations=generations,
        global_step=tail.global_step,
        total_steps=total,
        best_f1=best_f1,
        best_generation=best_generation,
        last_activity=last_activity,
        disk_bytes=disk,
        settings=settings,
        paused=status == "running" and tail.paused,
    )


def list_runs(roots: Iterable[Path]) -> list[RunSummary]:
    """Every run folder directly under each root (a root that is itself a run folder
    counts), newest activity first. Folders that cannot be read are left out."""
    seen: set[Path] = set()
    runs: list[RunSummary] = []
    for folder in _candidates(roots):
        with contextlib.suppress(OSError):
            key = folder.resolve()
            if key in seen:
                continue
            seen.add(key)
        try:
            runs.append(summarize_run(folder))
        except (OSError, ValueError):
            continue
    runs.sort(key=lambda r: (r.last_activity, r.name), reverse=True)
    return runs


def newest_live_run(roots: Iterable[Path]) -> RunSummary | None:
    """The running run (here or elsewhere) with the newest activity, if any."""
    return next((r for r in list_runs(roots) if r.status == "running"), None)


def _candidates(roots: Iterable[Path]) -> Iterator[Path]:
    for root in roots:
        root = Path(root)
        try:
            if is_run_folder(root):
                yield root
                continue
            if not root.is_dir():
                continue
            entries = sorted(os.scandir(root), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_dir() and is_run_folder(Path(entry.path)):
                    yield Path(entry.path)


def _read_settings(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        return read_toml(path)
    except SettingsError:
        return {}


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _scan(run_dir: Path) -> tuple[float, int]:
    """(newest modification time, total bytes) of the files in the folder, recursively."""
    newest, total = 0.0, 0
    stack = [run_dir]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += st.st_size
            newest = max(newest, st.st_mtime)
    if not newest:
        with contextlib.suppress(OSError):
            newest = run_dir.stat().st_mtime
    return newest, total


# ------------------------------------------------------------------------- the tail
@dataclass
class _Tail:
    """What the end of metrics.jsonl says."""

    ended: dict[str, Any] | None = None  # the last record, when it is a RunEnded
    generation: int = 0
    global_step: int = 0
    total_steps: int = 0
    paused: bool = False  # the newest pause or resume record is a pause


# The records that change whether a run trains; the newest of them says if it is paused.
LIFECYCLE = ("RunStarted", "Paused", "Resumed", "RunEnded")  # a tuple: any JSON compares


def _tail_facts(path: Path) -> _Tail:
    """The last record and the newest position, from the end of the file only."""
    tail = _Tail()
    try:
        fh = open_regular(path)  # a named pipe would block the whole list
    except OSError:
        return tail
    with fh:
        size = os.fstat(fh.fileno()).st_size
        want = TAIL_BYTES
        while True:
            start = max(size - want, 0)
            fh.seek(start)
            lines = fh.read(size - start).split(b"\n")
            # The first piece may be the cut end of an earlier line; the last is either
            # empty (the file ends with a newline) or a torn line still being written.
            whole = lines[1:-1] if start else lines[:-1]
            records = [r for r in map(_parse, reversed(whole)) if r is not None]
            if _fill(tail, records) or start == 0:
                return tail
            want *= 4


def _fill(tail: _Tail, newest_first: list[dict[str, Any]]) -> bool:
    """Fill `tail` from records, newest first; True once the position is known."""
    if newest_first and newest_first[0].get("event") == "RunEnded":
        tail.ended = newest_first[0]
    # A paused trainer takes no step, so its Paused record is newer than the position
    # found below: it is within what was read.
    newest = next((r["event"] for r in newest_first if r.get("event") in LIFECYCLE), None)
    tail.paused = newest == "Paused"
    found_step = found_gen = False
    for record in newest_first:
        if not found_step and isinstance(record.get("global_step"), int):
            tail.global_step, found_step = record["global_step"], True
        if not found_gen and isinstance(record.get("generation"), int):
            tail.generation, found_gen = record["generation"], True
        if not tail.total_steps and isinstance(record.get("total_steps"), int):
            tail.total_steps = record["total_steps"]
        if found_step and found_gen:
            return True
    return False


def _parse(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        # JSON as written holds no NaN or infinity (json_clean makes them null); a record
        # that does anyway reads them as missing, so a summary stays printable.
        record = json.loads(line, parse_float=_finite_or_none, parse_constant=_none)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _finite_or_none(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _none(_text: str) -> None:
    return None


# ------------------------------------------------------------------------- the best
@dataclass
class _BestScan:
    """How far a file was searched for its newest best evaluation, and what was found."""

    inode: int
    scanned: int  # bytes up to the end of the last whole line searched
    best: tuple[float | None, int | None]


_NO_BEST: tuple[float | None, int | None] = (None, None)
_best_cache: dict[Path, _BestScan] = {}
_best_lock = threading.Lock()


def _best(path: Path, tail: _Tail) -> tuple[float | None, int | None]:
    """The best ReaL F1 and its generation: from the end record when the run ended,
    else from the newest evaluation marked best."""
    if tail.ended is not None:
        best = tail.ended.get("best")
        if isinstance(best, dict) and isinstance(best.get("real_f1"), (int, float)):
            gen = best.get("generation")
            return float(best["real_f1"]), gen if isinstance(gen, int) else None
        return None, None
    try:
        fh = open_regular(path)
    except OSError:
        return None, None
    with fh:
        st = os.fstat(fh.fileno())
        key = path.absolute()
        with _best_lock:
            cached = _best_cache.get(key)
        floor, before = 0, _NO_BEST
        if cached is not None and cached.inode == st.st_ino and cached.scanned <= st.st_size:
            if cached.scanned == st.st_size:
                return cached.best
            floor, before = cached.scanned, cached.best  # only the bytes appended since
        found, end = _newest_best(fh, floor, st.st_size)
        best = found if found is not None else before
        with _best_lock:
            _best_cache[key] = _BestScan(st.st_ino, end, best)
        return best


def _newest_best(fh: Any, floor: int, size: int) -> tuple[tuple[float, int | None] | None, int]:
    """Search `fh` backwards from `size` down to `floor` for the last whole line holding
    an evaluation marked best. Returns (its F1 and generation, or None) and the end of the
    last whole line (where a later search may start)."""
    # The end of the whole lines: a torn last line is searched next time, once complete.
    end = _end_of_lines(fh, floor, size)
    hi = end
    carry = b""  # the start of a line whose end lies in the chunk searched before
    while hi > floor:
        lo = max(hi - CHUNK_BYTES, floor)
        fh.seek(lo)
        chunk = fh.read(hi - lo) + carry
        pos = len(chunk)
        while True:
            pos = chunk.rfind(BEST_MARK, 0, pos)
            if pos < 0:
                break
            line_start = chunk.rfind(b"\n", 0, pos) + 1
            if line_start == 0 and lo > floor:
                break  # the line begins in the previous chunk: search it with that one
            line_end = chunk.find(b"\n", pos)
            record = _parse(chunk[line_start:line_end if line_end >= 0 else len(chunk)])
            if record is not None and record.get("event") == "Evaluated":
                metrics = record.get("metrics") or {}
                f1 = metrics.get("real_f1") if isinstance(metrics, dict) else None
                if isinstance(f1, (int, float)):
                    gen = record.get("generation")
                    return (float(f1), gen if isinstance(gen, int) else None), end
            pos = line_start
        first_newline = chunk.find(b"\n")
        carry = chunk[:first_newline] if (first_newline >= 0 and lo > floor) else b""
        if first_newline < 0 and lo > floor:
            carry = chunk
        hi = lo
    return None, end


def _end_of_lines(fh: Any, floor: int, size: int) -> int:
    """The offset just past the last newline in `fh` between `floor` and `size` (`floor`
    when there is none)."""
    hi = size
    while hi > floor:
        lo = max(hi - CHUNK_BYTES, floor)
        fh.seek(lo)
        cut = fh.read(hi - lo).rfind(b"\n")
        if cut >= 0:
            return lo + cut + 1
        hi = lo
    return floor
