"""Run folders and the sinks that record a run on disk (metrics.jsonl, run.log)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from mile_engine import events as ev
from mile_engine.config.schema import Settings
from mile_engine.oserrors import describe_os_error, open_regular, open_regular_fd
from mile_engine.runstore.layout import LOG_FILE, METRICS_FILE, SETTINGS_FILE


def create_run_dir(settings: Settings, root: Path | None = None) -> Path:
    """Make a new folder for a run under `checkpoint_path` and write its settings there."""
    root = Path(root or settings.checkpoint_path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{settings.dataset}-{settings.schema.lower()}"
    run_dir = _claim_dir(root, base)
    try:
        (run_dir / SETTINGS_FILE).write_text(settings.to_toml(), encoding="utf-8")
    except BaseException:
        # A folder without its settings is not a run: leave nothing half-made behind.
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


def _claim_dir(root: Path, base: str) -> Path:
    """Create `root/base`, else `base-2`, `base-3`, ...: the first that did not exist.

    `mkdir` either creates the folder or fails, atomically, so two runs started in the
    same second never share one (checking `exists()` first would let both pass).
    """
    root.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        run_dir = root / (base if n == 1 else f"{base}-{n}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            n += 1


def json_clean(value: Any) -> Any:
    """JSON has no NaN or infinity: at any depth they become null (and keys strings,
    tuples lists, as JSON would read them back)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_clean(v) for v in value]
    return value


def event_record(event: ev.Event) -> dict[str, Any]:
    """An event as a flat JSON-ready dict with its kind and a timestamp."""
    record = {"event": type(event).__name__, "time": round(time.time(), 3)}
    record.update(json_clean(dataclasses.asdict(event)))
    return record


WriteFailed = Callable[[str], None]
"""Told once, in plain words ("no space left on device: PATH"), that a record failed."""


class LineFile:
    """An append-only text file that receives whole lines or nothing.

    Each `write` goes to the kernel at once (an O_APPEND descriptor, no buffer), so a
    killed run keeps every line it reported. A write that fails part-way (a full disk)
    is cut back off, so no line is left half-written; after a failure the file takes no
    more lines (a later one would hide the gap) and `on_error` hears once what happened.
    Writing never raises: a record must not take a run down.
    """

    def __init__(self, path: Path, on_error: WriteFailed | None = None) -> None:
        self.path = Path(path)
        self.on_error = on_error
        self.failure: str | None = None
        # A regular file only: a named pipe or a device here cannot keep whole lines (and
        # a pipe nobody reads would block the run).
        self._fd: int | None = open_regular_fd(
            self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        _cut_torn_tail(self._fd)

    def write(self, text: str) -> None:
        """Append `text` (whole lines) in one piece, or nothing if the disk refuses it."""
        if self._fd is None or self.failure is not None:
            return
        fd, view = self._fd, memoryview(text.encode("utf-8"))
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            while view:
                view = view[self._write_some(view):]
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            if not isinstance(exc, OSError):
                raise
            self.failure = describe_os_error(exc, self.path)
            if self.on_error is not None:
                self.on_error(self.failure)

    def _write_some(self, data: memoryview) -> int:
        """One `os.write`, which may write part of `data` (a seam: tests make it fail)."""
        assert self._fd is not None
        return os.write(self._fd, data)

    def flush(self) -> None:
        """Nothing to do: every write has reached the kernel already."""

    def close(self) -> None:
        """Close the file; later writes are ignored."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _cut_torn_tail(fd: int) -> None:
    """Cut a last line with no newline (a crash mid-write) off the end of the file, so
    that the lines appended after it stay whole."""
    end = os.lseek(fd, 0, os.SEEK_END)
    pos = end
    while pos > 0:
        start = max(pos - 4096, 0)
        chunk = os.pread(fd, pos - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            pos = start + newline + 1
            break
        pos = start
    if pos != end:
        os.ftruncate(fd, pos)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl, oldest first.

    A last line cut short (the process was killed, or the disk filled, mid-write) is
    skipped; a damaged line anywhere else is an error.

    Raises:
        ValueError: a line before the last one is not JSON.
    """
    path = Path(run_dir) / METRICS_FILE
    with open_regular(path) as fh:  # a named pipe would block the reader
        lines = fh.read().decode("utf-8", errors="replace").split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if number == len(lines):  # no newline after it: the torn end of the file
                break
            raise ValueError(f"{path}: line {number} is not a JSON record") from None
    return records


class MetricsWriter:
    """Appends one JSON object per event worth replaying to metrics.jsonl.

    The file is the run's event stream on disk (DESIGN.md, "Runs as event streams"):
    every event the console's panels need, so that replaying it rebuilds the run
    screen. Left out: `Position` (sub-second, superseded by the next record),
    `DataProgress` (before training) and info/detail `Message`s (run.log has them).

    A record that cannot be written (a full disk) is reported to `on_error`, never
    raised: the session stops the run, which then fails with that message.
    """

    KINDS = (ev.RunStarted, ev.PhaseStarted, ev.StepLogged, ev.PseudoLabelStats,
             ev.Evaluated, ev.CheckpointSaved, ev.Paused, ev.Resumed, ev.Steered,
             ev.SystemStats, ev.Message, ev.RunEnded)
    MESSAGE_LEVELS = ("warning", "error")

    def __init__(self, run_dir: Path, on_error: WriteFailed | None = None) -> None:
        self.path = run_dir / METRICS_FILE
        self._file = LineFile(self.path, on_error)

    def __call__(self, event: ev.Event) -> None:
        if not isinstance(event, self.KINDS):
            return
        if isinstance(event, ev.Message) and event.level not in self.MESSAGE_LEVELS:
            return
        record = event_record(event)
        if isinstance(event, ev.RunStarted):
            record.pop("settings")
        self._file.write(json.dumps(record) + "\n")
        if isinstance(event, ev.RunEnded):
            self._file.close()


def _precision_text(event: ev.RunStarted) -> str:
    """The precision, and `auto`'s reason for it: "bf16 (auto: CPU has avx512_bf16, ...)"."""
    reason = event.precision_reason
    return event.precision if reason in ("", "set") else f"{event.precision} ({reason})"


def _quality_text(event: ev.PseudoLabelStats) -> str:
    """", precision 0.812 recall 0.455; rejected 0.50 per image, 31.2% true objects":
    the parts the record carries."""
    text = ""
    if event.precision is not None or event.recall is not None:
        p, r = event.precision, event.recall
        text += (f", precision {'–' if p is None else f'{p:.3f}'} "
                 f"recall {'–' if r is None else f'{r:.3f}'}")
    if event.rejected_per_image is not None:
        text += f"; rejected {event.rejected_per_image:.2f} per image"
        if event.rejected_true is not None:
            text += f", {event.rejected_true:.1%} true objects"
    return text


def describe(event: ev.Event) -> str | None:
    """One plain line for an event, or None for events not worth a line."""
    if isinstance(event, ev.RunStarted):
        verb = "resumed" if event.resumed_from else "started"
        return (
            f"run {verb}: {event.settings['schema']} on {event.settings['dataset']} "
            f"({event.settings['model']}, {event.parameters:,} parameters) on {event.device} "
            f"in {_precision_text(event)}; {event.total_steps} steps; folder {event.run_dir}; "
            f"reference F1: every class {event.reference['ref_f1_all']:.3f}, "
            f"single label {event.reference['ref_f1_label']:.3f}"
        )
    if isinstance(event, ev.PhaseStarted):
        return (
            f"generation {event.generation}/{event.generations}: {event.phase} phase, "
            f"{event.steps} steps"
        )
    if isinstance(event, ev.StepLogged):
        return (
            f"gen {event.generation} {event.phase} step {event.step}/{event.steps} "
            f"(global {event.global_step}/{event.total_steps}) loss {event.loss:.4f} "
            f"lr {event.lr:.3g} {event.images_per_s:,.0f} img/s"
        )
    if isinstance(event, ev.PseudoLabelStats):
        return (
            f"gen {event.generation} pseudo-labels: {event.labels_per_image:.2f} per image, "
            f"{event.contains_label:.1%} contain the label" + _quality_text(event)
        )
    if isinstance(event, ev.Evaluated):
        m = event.metrics
        # Records written before mAP existed have none: the line then leaves it out.
        ranking = f"mAP {m['map']:.4f} " if "map" in m else ""
        return (
            f"eval gen {event.generation}: {ranking}top-1 {m['top1']:.4f} ReaL acc "
            f"{m['real_accuracy']:.4f} ReaL F1 {m['real_f1']:.4f} (P {m['real_precision']:.3f}"
            f" R {m['real_recall']:.3f}) coverage {m['coverage']:.2f}"
            + (" *best*" if event.best else "")
        )
    if isinstance(event, ev.CheckpointSaved):
        return f"checkpoint saved ({event.reason}): {event.path}"
    if isinstance(event, ev.Paused):
        return f"paused at step {event.global_step}"
    if isinstance(event, ev.Resumed):
        return f"resumed at step {event.global_step}"
    if isinstance(event, ev.Steered):
        return f"steered from the run folder: {event.request} at step {event.global_step}"
    if isinstance(event, ev.DataProgress):
        # One line per tenth of the work is enough for a log.
        step = max(event.total // 10, 1)
        if event.done == event.total or event.done % step == 0:
            return f"{event.task}: {event.done:,}/{event.total:,}"
        return None
    if isinstance(event, ev.Message):
        return f"{event.level}: {event.text.rstrip()}"
    if isinstance(event, ev.RunEnded):
        # The best generation by the run's `monitor`; its mAP where it has one.
        best = (
            f"; best ReaL F1 {event.best['real_f1']:.4f} (generation "
            f"{int(event.best['generation'])}"
            + (f", mAP {event.best['map']:.4f}"
               if isinstance(event.best.get("map"), (int, float)) else "") + ")"
            if event.best else ""
        )
        error = f": {event.error}" if event.error else ""
        return (
            f"run {event.status} after {event.global_step} steps, {event.elapsed_s:.1f} s"
            f"{best}{error}"
        )
    return None


class PlainLog:
    """Writes timestamped plain lines, with no carriage returns, to a text stream.

    `details`: also write `Message`s of level `events.DETAIL` (tracebacks behind an
    error already said in one line), which belong in run.log, not on the terminal.
    """

    def __init__(self, stream: IO[str] | LineFile, close: bool = False,
                 details: bool = False) -> None:
        self.stream = stream
        self._close = close
        self._details = details

    def __call__(self, event: ev.Event) -> None:
        hidden = isinstance(event, ev.Message) and event.level == ev.DETAIL
        line = None if hidden and not self._details else describe(event)
        if line is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            # Built whole, then written at once: a failed write never splits an entry.
            self.stream.write("".join(f"{stamp} {part}\n" for part in line.splitlines() or [""]))
            self.stream.flush()
        if isinstance(event, ev.RunEnded) and self._close:
            self.stream.close()


def log_file(run_dir: Path, on_error: WriteFailed | None = None) -> PlainLog:
    """A plain-line log of the run in its folder (run.log), details included; a line
    that cannot be written is reported to `on_error`, never raised."""
    return PlainLog(LineFile(run_dir / LOG_FILE, on_error), close=True, details=True)


def check_record_files(run_dir: Path) -> None:
    """Refuse a run folder whose metrics.jsonl or run.log exists but is not a regular
    file (a named pipe, a device, a folder): call it before the folder is changed, so
    that a resume that cannot record leaves everything as it was.

    Raises:
        NotRegularFileError: naming the file and what it is.
    """
    for name in (METRICS_FILE, LOG_FILE):
        path = Path(run_dir) / name
        try:
            os.close(open_regular_fd(path))
        except FileNotFoundError:
            continue  # made afresh when the run opens it
        except PermissionError:
            continue  # the open for appending says so, in the same words as ever
