"""A run's records as scalars for the tools researchers already use: TensorBoard and CSV.

One mapping, `record_scalars`, turns a metrics.jsonl record into named scalars (losses,
learning rate, every evaluation metric at `rho` and at each swept threshold,
pseudo-label statistics, throughput, system load), each at the run's global step. The
export (`export_runs`) and the live sink (`TensorBoardSink`) both use it, so a run
exported later and a run recorded live hold the same curves.

A resumed run appends to the same metrics.jsonl, starting again from the step of the
checkpoint it resumed from; the records written after that step before the run stopped
(a run killed between saves) are superseded. `run_scalars` keeps the newer ones, so
every curve has strictly increasing steps: one continuous line. The live sink does the
same with TensorBoard's own mechanism (a writer opened with `purge_step`).

TensorBoard is an optional dependency (`pip install 'mile-tui[tensorboard]'`); CSV
needs nothing.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mile_engine import events as ev
from mile_engine.config.schema import SettingsError
from mile_engine.runstore.history import read_run_settings
from mile_engine.runstore.records import event_record, read_metrics

TENSORBOARD_HINT = "pip install 'mile-tui[tensorboard]'"
# The folder inside a run folder that the live sink writes its event files to.
TENSORBOARD_DIR = "tensorboard"
CSV_COLUMNS = ("run", "step", "metric", "value", "generation", "phase")
# The metrics the hparams dashboard lists beside the settings (when the run has them).
HPARAM_METRICS = ("eval/real_f1", "eval/map", "eval/real_accuracy", "eval/top1")
# How often the live writer pushes its queue to disk: a curve followed live in
# TensorBoard lags by at most this much (evaluations are flushed at once).
LIVE_FLUSH_S = 10


class ExportError(ValueError):
    """An export that cannot be done: the message says what and how to fix it."""


@dataclass(frozen=True)
class Scalar:
    """One value of one metric at one global step."""

    tag: str  # "train/loss", "eval/real_f1", "eval_rho0.05/real_f1", ...
    step: int
    value: float
    generation: int | None = None
    phase: str | None = None


def require_tensorboard() -> None:
    """Check that TensorBoard's writer can be imported.

    Raises:
        SettingsError: naming the package to install (one line; exit 2 on the CLI).
    """
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise SettingsError(
            f"TensorBoard is not installed; {TENSORBOARD_HINT} (or set tensorboard = false)."
        ) from None


def _number(value: Any) -> float | None:
    """A finite float from a record's value; None for null, NaN, text or booleans."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def record_scalars(record: dict[str, Any]) -> list[Scalar]:
    """The scalars one metrics.jsonl record holds ([] for records that hold none)."""
    kind = record.get("event")
    step = record.get("global_step")
    if not isinstance(step, int) or isinstance(step, bool):
        return []
    gen = record.get("generation") if isinstance(record.get("generation"), int) else None
    phase = record.get("phase") if isinstance(record.get("phase"), str) else None
    values: list[tuple[str, Any]] = []
    if kind == "StepLogged":
        values = [("train/loss", record.get("loss")),
                  (f"train/loss_{phase}", record.get("loss")) if phase else ("", None),
                  ("train/lr", record.get("lr")),
                  ("train/images_per_s", record.get("images_per_s"))]
    elif kind == "PseudoLabelStats":
        values = [("pseudo/labels_per_image", record.get("labels_per_image")),
                  ("pseudo/contains_label", record.get("contains_label"))]
        phase = "imitation"
    elif kind == "Evaluated":
        metrics = record.get("metrics") or {}
        values = [(f"eval/{name}", v) for name, v in metrics.items() if name != "rho"]
        for threshold, swept in (record.get("sweep") or {}).items():
            if isinstance(swept, dict):
                values += [(f"eval_rho{threshold}/{name}", v) for name, v in swept.items()]
        values.append(("eval/images_per_s", record.get("images_per_s")))
        phase = "evaluated"
    elif kind == "SystemStats":
        values = [("system/cpu_percent", record.get("cpu_percent")),
                  ("system/rss_bytes", record.get("rss_bytes")),
                  ("system/gpu_util_percent", record.get("gpu_util_percent")),
                  ("system/gpu_memory_bytes", record.get("gpu_memory_bytes"))]
    out = []
    for tag, raw in values:
        value = _number(raw)
        if tag and value is not None:
            out.append(Scalar(tag, step, value, gen, phase))
    return out


def run_scalars(records: Iterable[dict[str, Any]]) -> list[Scalar]:
    """Every scalar of a run's records, each tag's steps strictly increasing.

    A `RunStarted` at global step g (a resume) supersedes what was recorded after g;
    of two values of one tag at one step, the later record wins.
    """
    points: dict[tuple[str, int], Scalar] = {}
    for record in records:
        if record.get("event") == "RunStarted":
            start = record.get("global_step")
            if isinstance(start, int) and not isinstance(start, bool):
                points = {key: s for key, s in points.items() if s.step <= start}
            continue
        for scalar in record_scalars(record):
            points.pop((scalar.tag, scalar.step), None)  # re-inserted last: newest order
            points[(scalar.tag, scalar.step)] = scalar
    return sorted(points.values(), key=lambda s: (s.step, s.tag))


def hparam_values(settings: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """Settings as hparams: the values TensorBoard's hparams plugin accepts."""
    out: dict[str, bool | int | float | str] = {}
    for name, value in settings.items():
        if isinstance(value, (bool, int, float, str)):
            out[name] = value
        elif value is not None:
            out[name] = str(value)
    return out


class _Writer:
    """A `SummaryWriter` for one run folder, with its hparams written once."""

    def __init__(self, log_dir: Path, purge_step: int | None = None,
                 flush_secs: int = 120) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step,
                                    flush_secs=flush_secs)

    def hparams(self, settings: dict[str, Any], metrics: Sequence[str]) -> None:
        """Write the settings as the run's hparams, listing `metrics` (scalar tags of
        this same run, whose values the hparams dashboard shows beside them)."""
        from torch.utils.tensorboard.summary import hparams

        values = hparam_values(settings)
        if not values:
            return
        # The metric values given here only declare the metrics: the dashboard reads each
        # one from the run's scalars of that tag, so no copy of them is written.
        exp, ssi, sei = hparams(values, {tag: 0.0 for tag in metrics})
        file_writer = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)

    def add(self, scalar: Scalar, walltime: float | None = None) -> None:
        """Write one scalar at its global step."""
        self.writer.add_scalar(scalar.tag, scalar.value, scalar.step, walltime=walltime)

    def flush(self) -> None:
        """Push what is queued to disk."""
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


def _remove_event_files(folder: Path) -> None:
    """Remove TensorBoard event files of an earlier export to `folder` (a second export
    beside them would draw every curve twice)."""
    if folder.is_dir():
        for path in folder.glob("events.out.tfevents.*"):
            path.unlink()


def _unique_names(run_dirs: Sequence[Path]) -> list[str]:
    """A distinct name for each run: its folder name, with the parent's when two clash."""
    names = [p.name for p in run_dirs]
    return [
        f"{p.parent.name}-{p.name}" if names.count(p.name) > 1 else p.name for p in run_dirs
    ]


def _read(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run, or ExportError saying why they cannot be read."""
    try:
        return read_metrics(run_dir)
    except FileNotFoundError:
        raise ExportError(f"{run_dir}: no metrics.jsonl; is it a run folder?") from None
    except (OSError, ValueError) as exc:
        raise ExportError(f"{run_dir}: cannot read its records ({exc}).") from None


def _walltimes(records: Iterable[dict[str, Any]]) -> dict[int, float]:
    """The newest record time of each global step (the wall time TensorBoard shows)."""
    out: dict[int, float] = {}
    for record in records:
        step, when = record.get("global_step"), _number(record.get("time"))
        if isinstance(step, int) and when is not None:
            out[step] = when
    return out


def export_tensorboard(run_dirs: Sequence[Path], out: Path) -> list[Path]:
    """Write each run's scalars and settings as TensorBoard event files, one sub-folder of
    `out` per run (an earlier export's event files there are replaced). Returns the
    sub-folders: `tensorboard --logdir OUT` shows them as runs.

    Raises:
        ExportError: a run's records cannot be read.
        SettingsError: TensorBoard is not installed.
    """
    require_tensorboard()
    runs = [(Path(d), _read(Path(d))) for d in run_dirs]
    written = []
    for (run_dir, records), name in zip(runs, _unique_names([r for r, _ in runs]), strict=True):
        target = Path(out) / name
        _remove_event_files(target)
        scalars = run_scalars(records)
        times = _walltimes(records)
        writer = _Writer(target)
        try:
            present = {s.tag for s in scalars}
            writer.hparams(read_run_settings(run_dir),
                           [t for t in HPARAM_METRICS if t in present])
            for scalar in scalars:
                writer.add(scalar, times.get(scalar.step))
        finally:
            writer.close()
        written.append(target)
    return written


def csv_rows(run_name: str, records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One tidy row per (run, step, metric), in `CSV_COLUMNS`."""
    for s in run_scalars(records):
        yield {"run": run_name, "step": s.step, "metric": s.tag, "value": repr(s.value),
               "generation": "" if s.generation is None else s.generation,
               "phase": s.phase or ""}


def export_csv(run_dirs: Sequence[Path], out: Path) -> Path:
    """Write every run's scalars to `out/metrics.csv`: one row per (run, step, metric),
    columns `CSV_COLUMNS`. Returns the file.

    Raises:
        ExportError: a run's records cannot be read.
    """
    runs = [(Path(d), _read(Path(d))) for d in run_dirs]
    Path(out).mkdir(parents=True, exist_ok=True)
    path = Path(out) / "metrics.csv"
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for (_, records), name in zip(runs, _unique_names([r for r, _ in runs]), strict=True):
            writer.writerows(csv_rows(name, records))
    tmp.replace(path)
    return path


class TensorBoardSink:
    """A live sink: writes a run's scalars and settings as TensorBoard event files in
    `RUN_DIR/tensorboard/` while it trains (the `tensorboard = true` setting).

    A resumed run opens its writer with `purge_step` just after the step it resumed
    from, so TensorBoard hides what the run recorded past that step before it stopped,
    and the curve goes on from the resumed step as one line. Errors writing never reach
    the training loop: the sink reports the first to `on_error` and goes quiet.
    """

    def __init__(self, run_dir: Path, on_error: Any = None) -> None:
        require_tensorboard()
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self.on_error = on_error
        self._writer: _Writer | None = None
        self._failed = False

    def __call__(self, event: ev.Event) -> None:
        if self._failed:
            return
        try:
            self._handle(event)
        except Exception as exc:  # a record must not take a run down
            self._failed = True
            if self.on_error is not None:
                self.on_error(f"TensorBoard sink: {exc}")

    def _handle(self, event: ev.Event) -> None:
        if isinstance(event, ev.RunStarted):
            purge = event.global_step + 1 if event.global_step > 0 else None
            self._writer = _Writer(self.log_dir, purge_step=purge, flush_secs=LIVE_FLUSH_S)
            self._writer.hparams(event.settings, HPARAM_METRICS[:1])
            return
        if self._writer is None:
            return
        if isinstance(event, ev.RunEnded):
            self._writer.close()
            self._writer = None
            return
        if not isinstance(event, (ev.StepLogged, ev.PseudoLabelStats, ev.Evaluated,
                                  ev.SystemStats)):
            return
        record = event_record(event)
        for scalar in record_scalars(record):
            self._writer.add(scalar, time.time())
        if isinstance(event, ev.Evaluated):
            self._writer.flush()
