"""Opening a run: the trainer, its folder and its on-disk sinks, for the CLI and the console.

A new run gets a new folder under `checkpoint_path`. A resumed run reuses its folder:
the settings it saved with, its checkpoints (the trainer's whole state) and its
`metrics.jsonl` and `run.log`, which continue where they stopped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from mile_engine import distributed
from mile_engine import events as ev
from mile_engine.checkpoints import RunCheckpointer, find_resume
from mile_engine.config.loader import apply_allowed_overrides
from mile_engine.config.schema import FIELDS, Settings, SettingsError
from mile_engine.config.validation import build_settings, check_checkpoint_path
from mile_engine.control import Control
from mile_engine.data.batch import DataSource
from mile_engine.reports.export import TensorBoardSink, require_tensorboard
from mile_engine.runstore.files import atomic_write_text
from mile_engine.runstore.layout import SETTINGS_FILE
from mile_engine.runstore.records import (
    MetricsWriter,
    WriteFailed,
    check_record_files,
    create_run_dir,
    log_file,
)
from mile_engine.trainer import Trainer

# Settings a resumed run may change: they neither alter the training maths nor the shape
# of the saved state. Anything else (k_t, lr, seed, ...) would make "resume" a different
# run, so it is refused; start a new run instead.
RESUMABLE = frozenset({
    "epoch_num",  # train for more (or fewer) generations
    "device", "precision", "compile", "num_workers", "decode",  # where and how fast
    "log_every", "max_checkpoint_num", "checkpoint_path", "tensorboard",  # records
    "data_path", "val_path", "real_path", "mnist_path",  # the data moved
})


def resume_settings(saved: dict[str, object], overrides: Iterable[str] = ()) -> Settings:
    """The settings of a resumed run: those it saved with, plus allowed `--set` overrides.

    Raises:
        SettingsError: an override changes a setting that a resume must keep.
    """
    names = {k: v for k, v in saved.items() if k in FIELDS}
    base = build_settings(names, "the run's saved settings")
    return apply_allowed_overrides(
        base, overrides, RESUMABLE, "the resumed run (start a new run to change it)"
    )


class RunFiles:
    """A run's folder as the trainer receives it at construction: its path, its records
    (metrics.jsonl, run.log, TensorBoard) and its checkpoint saver, in one object.

    Nothing on disk is touched until `open()`, which `open_run` calls once the trainer
    is built and every check has passed, so a refused run leaves no folder behind (a new
    run) or its folder as it was (a resume). Events before then are kept, and written
    first.
    """

    def __init__(self, fail: WriteFailed) -> None:
        """`fail` hears of a record the disk refused (the run then stops, "failed")."""
        self._fail = fail
        self._path = Path()
        self._early: list[ev.Event] = []
        self._sinks: list[ev.Sink] | None = None  # None until opened
        self._saver: RunCheckpointer | None = None

    @property
    def path(self) -> Path:
        """The run folder; `Path()` until opened."""
        return self._path

    def open(self, run_dir: Path, settings: Settings, saver: RunCheckpointer) -> None:
        """Record into `run_dir` from now on, the events kept so far first; `saver` holds
        the folder's lock and saves the checkpoints."""
        files: list[ev.Sink] = [MetricsWriter(run_dir, self._fail),
                                log_file(run_dir, self._fail), saver]
        if settings.tensorboard:
            files.insert(2, TensorBoardSink(run_dir, self._fail))
        self._path, self._saver, self._sinks = run_dir, saver, files
        for event in self._early:
            self(event)
        self._early.clear()

    def __call__(self, event: ev.Event) -> None:
        """As a sink: keep the event until the folder is open, then write it."""
        if self._sinks is None:
            self._early.append(event)
            return
        for sink in self._sinks:
            sink(event)

    def save(self, trainer: Trainer, reason: str) -> ev.CheckpointSaved:
        """As the trainer's checkpointer: save through the folder's saver."""
        if self._saver is None:
            raise RuntimeError("the run folder is not open yet: nothing can be saved")
        return self._saver.save(trainer, reason)

    def close(self) -> None:
        """Release the run folder's lock (the run is over); nothing if never opened."""
        if self._saver is not None:
            self._saver.close()


def probe_memory(device: torch.device) -> bool:
    """Whether a new run tries a step's memory before making its folder: on CUDA, where a
    batch too large fails cleanly and the probe costs milliseconds. On the CPU memory is
    rarely the limit, the operating system may over-commit it rather than refuse, and a
    probe step would cost as much as a training step."""
    return device.type == "cuda"


def open_run(
    settings: Settings,
    sinks: Sequence[ev.Sink] = (),
    control: Control | None = None,
    resume: Path | str | None = None,
    overrides: Iterable[str] = (),
    dist: distributed.DistContext | None = None,
    source: DataSource | None = None,
    model: nn.Module | None = None,
) -> Trainer:
    """Build a trainer that records metrics.jsonl, run.log and checkpoints in its folder.

    Args:
        settings: the settings of a new run. With `resume` only its `checkpoint_path`
            is used, to find "latest" and relative run names.
        sinks: receivers of the trainer's events (UI, console), before the file sinks.
        control: the pause / stop / save-now object the caller keeps.
        resume: None for a new run; "latest" for the newest run under
            `checkpoint_path`; a run folder (its newest good checkpoint) or a
            checkpoint file. The run continues in its own folder, exactly.
        overrides: `key=value` strings applied on top of a resumed run's saved
            settings; only the keys in `RESUMABLE` may change.
        dist: this process's place in a torchrun job. Only rank 0 makes the run folder,
            writes files and saves checkpoints; every rank resumes from the checkpoint
            that rank 0 chose (so `checkpoint_path` must be shared between machines).
        source: the caller's own data (a `mile_engine.data.DataSource`) in place of the
            data set the settings name.
        model: the caller's own network (`nn.Module`, one logit a class) in place of the
            backbone the settings name; its teacher is a deep copy. A resumed run needs
            the same network again: the checkpoint holds its weights, not its code.

    The trainer is built before any folder is made or changed, so settings, data or
    checkpoint errors (SettingsError, CheckpointError) leave nothing behind. The sinks
    see what happens while it is built (download and scan progress, data notes) as it
    happens, and run.log receives it once the folder exists. A resume that fell back
    past a corrupt checkpoint reports it as a warning `Message` to the sinks.
    """
    dist = dist or distributed.DistContext()
    if settings.tensorboard:
        require_tensorboard()  # before anything is built: a missing extra is one line
    if not dist.is_main:
        return _open_follower(settings, sinks, control, resume, overrides, dist, source,
                              model)
    control = control or Control()
    files = RunFiles(control.fail)
    live: list[ev.Sink] = [*sinks, files]
    if resume is None:
        # Every caller (console, headless, study) gets a bad folder refused before the
        # trainer is built: nothing made, nothing spent.
        check_checkpoint_path(settings)
        # Rank 0 tells the others what to load before any other collective (DDP's own
        # start-up broadcast happens inside Trainer), so the ranks stay in step.
        distributed.broadcast_object(None, dist)
        trainer = Trainer(settings, files, sinks=live, control=control, checkpointer=files,
                          dist=dist, source=source, model=model)
        if probe_memory(trainer.device):
            trainer.check_memory()  # a batch too large fails here, before any folder
        run_dir = create_run_dir(settings)
        files.open(run_dir, settings, RunCheckpointer(run_dir, settings.max_checkpoint_num))
        return trainer
    point = find_resume(resume, Path(settings.checkpoint_path))
    distributed.broadcast_object(str(point.path), dist)
    run_settings = resume_settings(point.settings, overrides)
    trainer = Trainer(run_settings, files, sinks=live, control=control, checkpointer=files,
                      dist=dist, load_weights=False, source=source, model=model,
                      resumed_from=str(point.path))
    trainer.load_state_dict(point.state)
    if run_settings.epoch_num < trainer.generation:
        # Checked before the folder is touched: settings.toml would otherwise say
        # fewer generations than the run's own history holds.
        raise SettingsError(
            f"epoch_num = {run_settings.epoch_num} is fewer than the "
            f"{trainer.generation} generations this run has done; give "
            f"{trainer.generation} or more."
        )
    # Taken before touching the folder: refuses a run that another process trains.
    checkpointer = RunCheckpointer(point.run_dir, run_settings.max_checkpoint_num)
    try:
        check_record_files(point.run_dir)  # before settings.toml changes
    except OSError:
        checkpointer.close()  # lets the folder's lock go
        raise
    saved = point.run_dir / SETTINGS_FILE
    if dataclasses.asdict(run_settings) != point.settings or not saved.exists():
        atomic_write_text(saved, run_settings.to_toml())
    files.open(point.run_dir, run_settings, checkpointer)
    for text in point.warnings:
        for sink in live:
            sink(ev.Message("warning", text))
    return trainer


def _open_follower(
    settings: Settings,
    sinks: Sequence[ev.Sink],
    control: Control | None,
    resume: Path | str | None,
    overrides: Iterable[str],
    dist: distributed.DistContext,
    source: DataSource | None,
    model: nn.Module | None,
) -> Trainer:
    """A rank other than 0: the same trainer, resumed from rank 0's choice, no files."""
    chosen = distributed.broadcast_object(None, dist)
    if chosen is None:
        return Trainer(settings, Path(), sinks=sinks, control=control, dist=dist,
                       source=source, model=model)
    point = find_resume(Path(chosen), Path(settings.checkpoint_path))
    trainer = Trainer(resume_settings(point.settings, overrides), point.run_dir,
                      sinks=sinks, control=control, dist=dist, load_weights=False,
                      source=source, model=model, resumed_from=str(point.path))
    trainer.load_state_dict(point.state)
    return trainer
