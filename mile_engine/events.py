"""The small typed events the trainer emits; sinks (UI, logs, checkpoints) subscribe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunStarted:
    """A run began (or resumed)."""

    run_dir: str
    settings: dict[str, Any]
    device: str
    precision: str
    parameters: int
    total_steps: int
    global_step: int
    reference: dict[str, float]
    resumed_from: str | None = None
    precision_reason: str = ""  # why this precision: "set", or `auto`'s rule and inputs
    # Where the validation label sets come from, when a data source says (folder data:
    # its label file, or "single labels (no val_labels_path)"); "" for the benchmarks.
    label_sets: str = ""


@dataclass(frozen=True)
class PhaseStarted:
    """A phase of a generation began (generation counts from 1)."""

    generation: int
    generations: int
    phase: str
    steps: int


@dataclass(frozen=True)
class StepLogged:
    """Training progress, averaged over the steps since the last record."""

    generation: int
    phase: str
    step: int
    steps: int
    global_step: int
    total_steps: int
    loss: float
    lr: float
    images_per_s: float
    elapsed_s: float


@dataclass(frozen=True)
class Position:
    """Where a run is between progress records (at most a second old, and at every pause
    and stop): counters only, so emitting it costs no host sync."""

    generation: int
    phase: str
    step: int
    steps: int
    global_step: int
    total_steps: int
    elapsed_s: float


@dataclass(frozen=True)
class PseudoLabelStats:
    """What the student trained towards over the steps since the last record: MILe's
    imitation targets, or LL-R / LL-Ct's targets and rejections.

    `precision` and `recall` compare the positive targets with the images' true label sets
    (summed over the images, then divided), where the training data knows them (the
    grids; a folder with `train_labels_path`), else None. `rejected_per_image` is LL's
    rejected (LL-R) or corrected (LL-Ct) labels per image, `rejected_true` the share of them
    that were true objects; None for MILe.
    """

    generation: int
    step: int
    global_step: int
    labels_per_image: float
    contains_label: float
    precision: float | None = None
    recall: float | None = None
    rejected_per_image: float | None = None
    rejected_true: float | None = None


@dataclass(frozen=True)
class Evaluated:
    """Validation metrics after a generation, at `rho` and at every swept threshold."""

    generation: int
    global_step: int
    metrics: dict[str, float]
    best: bool
    images_per_s: float
    sweep: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointSaved:
    """A checkpoint file was written completely."""

    path: str
    generation: int
    phase: str
    global_step: int
    reason: str
    kept: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Paused:
    """The run is paused between two steps."""

    global_step: int


@dataclass(frozen=True)
class Resumed:
    """A paused run goes on."""

    global_step: int


@dataclass(frozen=True)
class Steered:
    """The trainer acted on a steering request from its run folder (`runstore.steering`):
    "pause", "resume", "stop" or "save", at `global_step`."""

    request: str
    global_step: int


@dataclass(frozen=True)
class SystemStats:
    """The training process's load at a log interval: CPU (percent of one core, since the
    last record), resident memory, and the GPU's use where the run is on CUDA (else None)."""

    global_step: int
    cpu_percent: float
    rss_bytes: int
    gpu_util_percent: float | None
    gpu_memory_bytes: int | None
    gpu_memory_total_bytes: int | None


@dataclass(frozen=True)
class DataProgress:
    """Progress of long data work before training (downloads, scanning folders)."""

    task: str
    done: int
    total: int


DETAIL = "detail"
"""The `Message` level of a detail behind an error already said in one line (its
traceback): run.log keeps it, terminals leave it out."""


@dataclass(frozen=True)
class Message:
    """A warning or note for the user's log: level "info", "warning", "error" or DETAIL."""

    level: str
    text: str


@dataclass(frozen=True)
class RunEnded:
    """The run is over: status is "finished", "stopped" or "failed"."""

    status: str
    global_step: int
    elapsed_s: float
    best: dict[str, float] | None
    error: str | None = None


Event = (
    RunStarted
    | PhaseStarted
    | StepLogged
    | Position
    | PseudoLabelStats
    | Evaluated
    | CheckpointSaved
    | Paused
    | Resumed
    | Steered
    | SystemStats
    | DataProgress
    | Message
    | RunEnded
)
Sink = Callable[[Event], None]
