"""The console's look inside a model: validation samples with their label sets, the
pseudo-labels a teacher adds, and private copies of a live trainer's weights.

The networks run as in `mile_engine.reports.inference` (eval mode, inference mode, the run's
device and autocast). A live trainer's weights are copied between two of its steps
(`Control.request_snapshot`), so the inspector never runs the trainer's own modules while
they train, and never sees half of an update.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mile_engine.config.schema import Settings
from mile_engine.control import Snapshot
from mile_engine.data import DataSource, build_source
from mile_engine.data.batch import SampleSource, ValSample
from mile_engine.models import build_model
from mile_engine.placement import run_model
from mile_engine.reports.inference import (
    InferenceError,
    Label,
    label_sets,
    load_model,
    place,
    pseudo_label_sets,
)
from mile_engine.schemas import pseudo_labels, uses_sigmoid
from mile_engine.trainer import EVAL_BATCH

if TYPE_CHECKING:
    from mile_engine.trainer import Trainer


# ---------------------------------------------------------------------------- pseudo-labels
@dataclass
class PseudoLabelTable:
    """Which classes the teacher's pseudo-labels add beyond each image's training label.

    Attributes:
        images: images counted.
        added: int64 [C] how often each class was added (pseudo-label, not the label).
        correct: int64 [C] of those, how often the class is in the image's ReaL set.
        with_label: int64 [C, C] added[label, class]: which training label it joined.
        labels_per_image: mean number of pseudo-labels of an image.
        contains_label: share of images whose pseudo-labels hold the training label.
    """

    images: int
    added: torch.Tensor
    correct: torch.Tensor
    with_label: torch.Tensor
    labels_per_image: float
    contains_label: float
    class_names: list[str]

    def rows(self, limit: int = 10) -> list[dict[str, Any]]:
        """The most often added classes: name, count, share of images, share in ReaL,
        and the training label they were most often added to."""
        order = self.added.argsort(descending=True)[:limit].tolist()
        partner = self.with_label.argmax(dim=0).tolist()
        out = []
        for c in order:
            n = int(self.added[c])
            if n == 0:
                break
            out.append({
                "class": c,
                "name": self.class_names[c],
                "added": n,
                "share": n / max(self.images, 1),
                "in_real": int(self.correct[c]) / n,
                "most_with": self.class_names[partner[c]],
            })
        return out


def pseudo_label_table(
    teacher: nn.Module,
    source: DataSource,
    rho: float,
    device: torch.device,
    dtype: torch.dtype,
    max_images: int | None = None,
    class_names: Sequence[str] | None = None,
) -> PseudoLabelTable:
    """Count, per class, the pseudo-labels the teacher adds on validation images.

    Sums stay on the device (one matrix product per batch for the label/class pairs)
    and are read once at the end.
    """
    c = source.num_classes
    added = torch.zeros(c, dtype=torch.int64, device=device)
    correct = torch.zeros(c, dtype=torch.int64, device=device)
    with_label = torch.zeros(c, c, dtype=torch.float32, device=device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    contains = torch.zeros((), dtype=torch.float64, device=device)
    images = 0
    for batch in _limited(source.val_batches(EVAL_BATCH), max_images):
        pseudo = pseudo_labels(run_model(teacher, batch.images, device, dtype), rho)
        known = batch.labels >= 0
        one_hot = torch.zeros_like(pseudo)
        rows = torch.arange(len(pseudo), device=device)
        one_hot[rows[known], batch.labels[known]] = True
        extra = pseudo & ~one_hot
        added += extra.sum(dim=0)
        if batch.real is not None:
            correct += (extra & batch.real.bool()).sum(dim=0)
        with_label += one_hot.float().T @ extra.float()
        total += pseudo.sum()
        contains += (pseudo & one_hot).sum()
        images += len(pseudo)
    return PseudoLabelTable(
        images=images,
        added=added.cpu(),
        correct=correct.cpu(),
        with_label=with_label.cpu(),
        labels_per_image=float(total) / max(images, 1),
        contains_label=float(contains) / max(images, 1),
        class_names=list(class_names or getattr(source, "class_names", [])
                         or [str(i) for i in range(c)]),
    )


def _limited(batches: Iterator[Any], max_images: int | None) -> Iterator[Any]:
    """The first `max_images` images of a batch stream (all when None)."""
    seen = 0
    for batch in batches:
        if max_images is not None and seen >= max_images:
            return
        if max_images is not None and seen + len(batch.labels) > max_images:
            keep = max_images - seen
            batch = type(batch)(batch.images[:keep], batch.labels[:keep],
                                None if batch.real is None else batch.real[:keep])
        seen += len(batch.labels)
        yield batch


# ---------------------------------------------------------------------------- samples
@dataclass
class SampleView:
    """One validation image and what the networks make of it, ready to draw.

    `image` is uint8 [H, W] (grey) or [H, W, 3] (RGB), as the dataset stores it.
    """

    index: int
    image: torch.Tensor
    label: int
    real: list[int]
    prediction: list[Label]
    pseudo: list[Label] | None
    """The teacher's pseudo-labels (MILe only)."""


def validation_sample(source: DataSource, index: int) -> ValSample:
    """Validation image `index` of `source`, to draw and to feed the networks.

    Raises:
        InferenceError: the source offers no single validation images, or this one
            cannot be decoded.
    """
    if not isinstance(source, SampleSource):
        raise InferenceError(f"{type(source).__name__} offers no validation samples.")
    sample = source.validation_sample(index)
    if sample is None:
        raise InferenceError(f"validation image {index} cannot be decoded.")
    return sample


def validation_size(source: DataSource) -> int:
    """Number of validation images a source holds."""
    return int(getattr(source, "val_size", 0))


class Inspection:
    """What the inspector looks at: a model's networks, its settings and its validation
    images, from a checkpoint or from a live trainer.

    A live trainer's weights change in its own thread; `refresh()` loads a copy the
    trainer took between two steps (`Control.request_snapshot`) into private networks, so
    the inspector never runs or reads the trainer's own modules while they train.
    """

    def __init__(
        self,
        settings: Settings,
        source: DataSource,
        student: nn.Module,
        teacher: nn.Module | None,
        device: torch.device,
        dtype: torch.dtype,
        names: list[str] | None = None,
        trainer: Trainer | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.student = student
        self.teacher = teacher
        self.device = device
        self.dtype = dtype
        self.class_names = names or list(source.class_names)
        self.trainer = trainer
        self.pending: Future[Snapshot] | None = None
        """A snapshot asked for and not yet loaded (a step outlasted `refresh`'s wait)."""
        self.version = 0
        """Bumped at every refresh: the weights the views show."""
        self.global_step: int | None = None

    @classmethod
    def from_checkpoint(
        cls, path: Path, overrides: Iterable[str] = (), source: DataSource | None = None
    ) -> Inspection:
        """Inspect a saved checkpoint (its validation set is built from its settings)."""
        loaded = load_model(path, overrides=overrides)
        source = source or build_source(loaded.settings, loaded.device)
        view = cls(loaded.settings, source, loaded.student, loaded.teacher, loaded.device,
                   loaded.dtype, loaded.class_names)
        view.global_step = int(loaded.meta.get("global_step", 0))
        return view

    @classmethod
    def from_trainer(cls, trainer: Trainer) -> Inspection:
        """Inspect a live trainer: private copies of its networks, its validation set."""
        s = trainer.settings
        sigmoid = uses_sigmoid(s.schema)
        # Shaped like the trainer's networks; refresh() copies their weights in.
        classes, side = trainer.source.num_classes, trainer.source.input_shape[-1]
        # Placed in the trainer's layout for its precision (channels_last under bf16),
        # so that the copies run the kernels the trainer runs.
        student = place(build_model(s.model, classes, sigmoid, image_size=side),
                        trainer.device, trainer.dtype)
        teacher = place(build_model(s.model, classes, sigmoid, image_size=side),
                        trainer.device, trainer.dtype) if s.schema == "MILe" else None
        view = cls(s, trainer.source, student, teacher, trainer.device, trainer.dtype,
                   list(trainer.source.class_names), trainer)
        view.refresh()
        return view

    @property
    def size(self) -> int:
        """Number of validation images."""
        return validation_size(self.source)

    @property
    def sigmoid(self) -> bool:
        """Whether the model predicts with per-class sigmoids."""
        return uses_sigmoid(self.settings.schema)

    def refresh(self, timeout: float = 2.0) -> bool:
        """Load a live trainer's current weights, waiting up to `timeout` seconds for it
        to finish its step; False when there is no trainer or the step outlasted the wait
        (the request stays, and the next refresh takes it)."""
        if self.trainer is None:
            return False
        if self.pending is None:
            self.pending = self.trainer.control.request_snapshot()
        try:
            snap = self.pending.result(timeout)
        except FutureTimeout:
            return False
        self.pending = None
        self.student.load_state_dict(snap.student)
        if self.teacher is not None:
            self.teacher.load_state_dict(snap.teacher)
        self.global_step = snap.global_step
        self.version += 1
        return True

    def close(self) -> None:
        """Withdraw a snapshot request not yet served (the inspector is closing)."""
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None

    def sample(self, index: int) -> SampleView:
        """Validation image `index` with its labels, the prediction and pseudo-labels."""
        index %= max(self.size, 1)
        shown = validation_sample(self.source, index)
        x = shown.model_input
        rho = self.settings.rho
        logits = run_model(self.student, x[None], self.device, self.dtype)
        prediction = label_sets(logits, rho, self.sigmoid, self.class_names)[0]
        pseudo = None
        if self.teacher is not None:
            t_logits = run_model(self.teacher, x[None], self.device, self.dtype)
            pseudo = pseudo_label_sets(t_logits, rho, self.class_names)[0]
        return SampleView(index, shown.image, shown.label, shown.real, prediction, pseudo)

    def pseudo_table(self, max_images: int | None = 2048) -> PseudoLabelTable | None:
        """The per-class pseudo-label counts (MILe only) over the first validation images."""
        if self.teacher is None:
            return None
        return pseudo_label_table(self.teacher, self.source, self.settings.rho, self.device,
                                  self.dtype, max_images, self.class_names)
