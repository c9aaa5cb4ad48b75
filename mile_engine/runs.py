"""Run folders and the sinks that record a run on disk (metrics.jsonl, run.log)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import IO, Any

from mile_engine import events as ev
from mile_engine.config import Settings

SETTINGS_FILE = "settings.toml"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "run.log"


def create_run_dir(settings: Settings, root: Path | None = None) -> Path:
    """Make a new folder for a run under `checkpoint_path` and write its settings there."""
    root = Path(root or settings.checkpoint_path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{settings.dataset}-{settings.schema.lower()}"
    run_dir = root / base
    n = 1
    while run_dir.exists():
        n += 1
        run_dir = root / f"{base}-{n}"
    run_dir.mkdir(parents=True)
    (run_dir / SETTINGS_FILE).write_text(settings.to_toml(), encoding="utf-8")
    return run_dir


def json_safe(value: Any) -> Any:
    """JSON has no NaN: NaN and infinities (at any depth) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def event_record(event: ev.Event) -> dict[str, Any]:
    """An event as a flat JSON-ready dict with its kind and a timestamp."""
    record = {"event": type(event).__name__, "time": round(time.time(), 3)}
    record.update(json_safe(dataclasses.asdict(event)))
    return record


class MetricsWriter:
    """Appends one JSON object per progress record and per evaluation to metrics.jsonl."""

    KINDS = (ev.StepLogged, ev.PseudoLabelStats, ev.Evaluated, ev.RunStarted, ev.RunEnded,
             ev.CheckpointSaved)

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / METRICS_FILE
        self._file: IO[str] = self.path.open("a", encoding="utf-8")

    def __call__(self, event: ev.Event) -> None:
        if not isinstance(event, self.KINDS):
            return
        record = event_record(event)
        if isinstance(event, ev.RunStarted):
            record.pop("settings")
        self._file.write(json.dumps(record) + "\n")
        # Flushed per record: a killed run keeps every line it reported.
        self._file.flush()
        if isinstance(event, ev.RunEnded):
            self._file.close()


def describe(event: ev.Event) -> str | None:
    """One plain line for an event, or None for events not worth a line."""
    if isinstance(event, ev.RunStarted):
        verb = "resumed" if event.resumed_from else "started"
        return (
            f"run {verb}: {event.settings['schema']} on {event.settings['dataset']} "
            f"({event.settings['model']}, {event.parameters:,} parameters) on {event.device} "
            f"in {event.precision}; {event.total_steps} steps; folder {event.run_dir}; "
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
            f"{event.contains_label:.1%} contain the label"
        )
    if isinstance(event, ev.Evaluated):
        m = event.metrics
        return (
            f"eval gen {event.generation}: top-1 {m['top1']:.4f} ReaL acc "
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
    if isinstance(event, ev.DataProgress):
        # One line per tenth of the work is enough for a log.
        step = max(event.total // 10, 1)
        if event.done == event.total or event.done % step == 0:
            return f"{event.task}: {event.done:,}/{event.total:,}"
        return None
    if isinstance(event, ev.Message):
        return f"{event.level}: {event.text.rstrip()}"
    if isinstance(event, ev.RunEnded):
        best = (
            f"; best ReaL F1 {event.best['real_f1']:.4f} (generation "
            f"{int(event.best['generation'])})" if event.best else ""
        )
        error = f": {event.error}" if event.error else ""
        return (
            f"run {event.status} after {event.global_step} steps, {event.elapsed_s:.1f} s"
            f"{best}{error}"
        )
    return None


class PlainLog:
    """Writes timestamped plain lines, with no carriage returns, to a text stream."""

    def __init__(self, stream: IO[str], close: bool = False) -> None:
        self.stream = stream
        self._close = close

    def __call__(self, event: ev.Event) -> None:
        line = describe(event)
        if line is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            for part in line.splitlines() or [""]:
                self.stream.write(f"{stamp} {part}\n")
            self.stream.flush()
        if isinstance(event, ev.RunEnded) and self._close:
            self.stream.close()


def log_file(run_dir: Path) -> PlainLog:
    """A plain-line log of the run in its folder (run.log)."""
    return PlainLog((run_dir / LOG_FILE).open("a", encoding="utf-8"), close=True)
