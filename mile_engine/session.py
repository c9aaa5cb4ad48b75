"""Opening a run: the trainer, its folder and its on-disk sinks, for the CLI and the console."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mile_engine import events as ev
from mile_engine.config import Settings
from mile_engine.control import Control
from mile_engine.runs import MetricsWriter, create_run_dir, log_file
from mile_engine.trainer import Trainer


def open_run(
    settings: Settings,
    sinks: Sequence[ev.Sink] = (),
    control: Control | None = None,
) -> Trainer:
    """Build a trainer in a new run folder that records metrics.jsonl and run.log.

    The trainer is built before the folder is made, so settings or data errors
    (SettingsError) leave nothing behind.
    """
    trainer = Trainer(settings, Path(), control=control)
    trainer.run_dir = create_run_dir(settings)
    trainer.sinks = [*sinks, MetricsWriter(trainer.run_dir), log_file(trainer.run_dir)]
    return trainer
