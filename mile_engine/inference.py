"""Looking inside a model: evaluate a checkpoint, predict label sets for image files,
inspect validation samples and count the classes the teacher's pseudo-labels add.

Everything here runs the networks in `eval()` under `torch.inference_mode()`, in the
same arithmetic (device, autocast dtype, batch size) as the trainer's own evaluation, so
that a checkpoint scores here exactly what its run recorded.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mile_engine import events as ev
from mile_engine import placement
from mile_engine.checkpoints import CheckpointError, load_checkpoint
from mile_engine.config import FIELDS, Settings, apply_allowed_overrides, build_settings
from mile_engine.data import DataSource, build_source
from mile_engine.data.batch import SampleSource, ValSample
from mile_engine.device import resolve_device, resolve_precision
from mile_engine.metrics import EvalAccumulator, prediction_sets
from mile_engine.models import build_model
from mile_engine.placement import run_model
from mile_engine.schemas import pseudo_labels, uses_sigmoid
from mile_engine.trainer import EVAL_BATCH

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from mile_engine.trainer import Trainer

# Settings an evaluation may take from --config / --set: where the data is, which
# validation set to score and how to compute. The model, the schema and the training
# hyper-parameters belong to the checkpoint.
EVAL_KEYS = frozenset({
    "dataset", "grid_objects", "val_size", "image_size", "rho",
    "data_path", "val_path", "real_path", "mnist_path", "num_workers", "decode",
    "device", "precision", "checkpoint_path",
})
# Native side of a grid image (3 tiles): what a grid dataset's validation images measure.
GRID_SIDE = {"digits": 24, "mnist": 84, "fashion-mnist": 84}
SYNSET_FILE = "LOC_synset_mapping.txt"


class InferenceError(Exception):
    """Input that cannot be scored (a bad checkpoint, settings, or image); says why."""


# ---------------------------------------------------------------------------- loading
@dataclass
class LoadedModel:
    """A checkpoint's networks on their device, with the settings to run them."""

    path: Path
    settings: Settings
    student: nn.Module
    teacher: nn.Module | None
    """The frozen teacher (MILe only: the baselines never update theirs)."""
    device: torch.device
    dtype: torch.dtype
    class_names: list[str]
    recorded: dict[str, Any] | None
    """The metrics the run recorded for these weights (None between evaluations)."""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sigmoid(self) -> bool:
        """Whether the model predicts with per-class sigmoids (MILe, sigmoid)."""
        return uses_sigmoid(self.settings.schema)


def eval_settings(
    saved: Mapping[str, Any],
    file_values: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
    source: str = "--config",
) -> Settings:
    """The settings to evaluate a checkpoint with: its run's, plus data/device changes.

    Args:
        saved: the settings the checkpoint was saved with.
        file_values: the keys a `--config` file sets explicitly; those in `EVAL_KEYS`
            apply, the others (training hyper-parameters) are the checkpoint's business.
        overrides: `--set key=value` strings; only keys in `EVAL_KEYS` may change.

    Raises:
        SettingsError: an override changes the model, the schema or a training setting,
            or a value is invalid.
    """
    base = build_settings({k: v for k, v in saved.items() if k in FIELDS},
                          "the checkpoint's settings")
    from_file = {k: v for k, v in (file_values or {}).items() if k in EVAL_KEYS}
    if from_file:
        base = build_settings(from_file, source, base=base)
    return apply_allowed_overrides(base, overrides, EVAL_KEYS, "the checkpoint")


def place(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a network to `device` the way the trainer does, frozen in `eval()` mode."""
    return placement.place(model, device).eval().requires_grad_(False)


def load_model(
    path: Path,
    file_values: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
) -> LoadedModel:
    """Load a checkpoint's student (and MILe teacher) with its run's settings.

    Raises:
        CheckpointError: the file is missing, damaged or unsafe.
        SettingsError: the settings (with the changes asked for) are invalid.
    """
    path = Path(path)
    state = load_checkpoint(path)
    meta = dict(state["meta"])
    settings = eval_settings(meta.get("settings", {}), file_values, overrides)
    device = resolve_device(settings.device)
    dtype = resolve_precision(settings.precision, device)
    sigmoid = uses_sigmoid(settings.schema)
    student = build_model(settings.model, sigmoid_head=sigmoid)
    try:
        student.load_state_dict(state["student"])
        teacher = None
        if settings.schema == "MILe":
            teacher = build_model(settings.model, sigmoid_head=sigmoid)
            teacher.load_state_dict(state["teacher"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path}: the weights do not fit model "
                              f"'{settings.model}' ({str(exc).splitlines()[0]}).") from None
    return LoadedModel(
        path=path,
        settings=settings,
        student=place(student, device),
        teacher=place(teacher, device) if teacher is not None else None,
        device=device,
        dtype=dtype,
        class_names=class_names(settings),
        recorded=meta.get("metrics"),
        meta=meta,
    )


# ---------------------------------------------------------------------------- class names
def class_names(settings: Settings) -> list[str]:
    """Names of the dataset's classes: digits, Fashion-MNIST's ten, ImageNet wnids.

    ImageNet's wnids come from the sorted class folders of `data_path` (the order of the
    class ids), with the words of `LOC_synset_mapping.txt` when one lies next to the train
    folder (or up to three folders above it, as in Kaggle's layout).
    """
    if settings.dataset == "fashion-mnist":
        from mile_engine.data.idx import FASHION_MNIST

        return list(FASHION_MNIST.class_names)
    if settings.dataset != "imagenet":
        return [str(d) for d in range(settings.num_classes)]
    root = Path(settings.data_path).expanduser()
    wnids: list[str] = []
    with contextlib.suppress(OSError):
        wnids = sorted(p.name for p in root.iterdir() if p.is_dir() and
                       not p.name.startswith("."))
    words = synset_words(root)
    if not wnids and len(words) == settings.num_classes:
        wnids = sorted(words)
    names = [f"{w} {words[w]}" if w in words else w for w in wnids]
    return names + [f"class-{i}" for i in range(len(names), settings.num_classes)]


def synset_words(train_root: Path) -> dict[str, str]:
    """wnid -> words from a `LOC_synset_mapping.txt` found next to the train folder."""
    for folder in [train_root, *list(train_root.parents)[:4]]:
        path = folder / SYNSET_FILE
        if path.is_file():
            words = {}
            with contextlib.suppress(OSError, UnicodeDecodeError):
                for line in path.read_text(encoding="utf-8").splitlines():
                    wnid, _, text = line.strip().partition(" ")
                    if wnid:
                        words[wnid] = text.split(",")[0].strip()
            return words
    return {}


# ---------------------------------------------------------------------------- evaluation
def evaluate_model(
    model: nn.Module,
    source: DataSource,
    rhos: Sequence[float],
    sigmoid: bool,
    device: torch.device,
    dtype: torch.dtype,
) -> list[dict[str, float]]:
    """Every metric at every threshold of `rhos`, in one pass over the validation set.

    The same batches, arithmetic and accumulator as `Trainer.evaluate`, so a
    checkpoint's numbers match what its run recorded.
    """
    acc = EvalAccumulator(source.num_classes, rhos, sigmoid, device)
    model.eval()
    for batch in source.val_batches(EVAL_BATCH):
        assert batch.real is not None
        acc.update(run_model(model, batch.images, device, dtype), batch.labels, batch.real)
    return acc.compute()


def evaluate_checkpoint(
    loaded: LoadedModel, rhos: Sequence[float] | None = None, source: DataSource | None = None
) -> list[dict[str, float]]:
    """Evaluate a loaded checkpoint at `rhos` (default: its run's `rho`), one dict each.

    Raises:
        SettingsError: the validation data cannot be loaded.
    """
    source = source or build_source(loaded.settings, loaded.device)
    return evaluate_model(loaded.student, source, list(rhos or [loaded.settings.rho]),
                          loaded.sigmoid, loaded.device, loaded.dtype)


# ---------------------------------------------------------------------------- label sets
@dataclass(frozen=True)
class Label:
    """One predicted class with its probability."""

    index: int
    name: str
    prob: float


def label_sets(
    logits: torch.Tensor, rho: float, sigmoid: bool, names: Sequence[str]
) -> list[list[Label]]:
    """Prediction sets with probabilities, most probable first, one list per row.

    `P = {argmax} | {c : sigmoid > rho}` for the sigmoid schemas, `{argmax}` with its
    softmax probability otherwise (the sets the metrics score). The set is found with
    tensor maths; only the few chosen entries are read back.
    """
    probs = torch.sigmoid(logits.float()) if sigmoid else torch.softmax(logits.float(), 1)
    rhos = torch.tensor([rho], dtype=probs.dtype, device=probs.device)
    return _chosen_labels(probs, prediction_sets(logits, rhos, sigmoid)[0], names)


def pseudo_label_sets(
    teacher_logits: torch.Tensor, rho: float, names: Sequence[str]
) -> list[list[Label]]:
    """The teacher's pseudo-labels `sigmoid > rho` (possibly empty), most probable first."""
    probs = torch.sigmoid(teacher_logits.float())
    return _chosen_labels(probs, pseudo_labels(teacher_logits, rho), names)


def _chosen_labels(
    probs: torch.Tensor, chosen: torch.Tensor, names: Sequence[str]
) -> list[list[Label]]:
    """The chosen entries of each row with their probabilities, most probable first."""
    # Sort once on the device; unchosen entries sink to the end of each row.
    order = probs.masked_fill(~chosen, -1.0).argsort(dim=1, descending=True)
    counts = chosen.sum(dim=1).tolist()
    width = max(counts, default=0)
    top_index = order[:, :width].cpu().tolist()
    top_prob = probs.gather(1, order[:, :width]).cpu().tolist()
    return [
        [Label(c, names[c], p) for c, p in zip(idx[:n], pr[:n], strict=True)]
        for idx, pr, n in zip(top_index, top_prob, counts, strict=True)
    ]


# ---------------------------------------------------------------------------- image files
@dataclass
class FilePrediction:
    """What the model sees in one image file, or why the file could not be read."""

    path: str
    labels: list[Label] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: the file, its labels (class, name, probability) or its error."""
        if self.error is not None:
            return {"file": self.path, "error": self.error}
        return {"file": self.path, "labels": [
            {"class": lab.index, "name": lab.name, "prob": round(lab.prob, 6)}
            for lab in self.labels
        ]}


def read_image(path: Path, mode: str) -> PILImage:
    """Decode an image file (any format PIL reads) to the 8-bit `mode` ("RGB" or "L").

    Images larger than `image_files.MAX_PIXELS` are refused from their header, before
    any pixel is decoded; 16-bit, 32-bit and float images are scaled to 8 bits, or
    refused where the file does not say which value is white (`image_files.to_8bit`).

    Raises:
        InferenceError: one line: the file is missing, not a regular file, too large,
            not an image PIL can decode, or of a bit depth without a known white.
    """
    from mile_engine.data.image_files import (
        DECODE_ERRORS,
        ImageRefused,
        open_image,
        pil_convert,
    )

    if path.exists() and not path.is_file():
        # A folder, a FIFO or a device: Image.open would fail late, or wait forever.
        raise InferenceError(f"{path}: not a regular file")
    try:
        with open_image(str(path)) as image:
            return pil_convert(image, mode)
    except FileNotFoundError:
        raise InferenceError(f"{path}: no such file") from None
    except ImageRefused as exc:
        raise InferenceError(f"{path}: refused: {exc}") from None
    except DECODE_ERRORS as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InferenceError(f"{path}: not a readable image ({reason})") from None
    except Exception as exc:
        # PIL's plugins raise other errors on some malformed files (struct.error,
        # IndexError...); one bad file must not take the others down. The type is kept.
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise InferenceError(f"{path}: not a readable image ({type(exc).__name__}: "
                             f"{first})") from None


def image_input(path: Path, settings: Settings) -> torch.Tensor:
    """Read an image file (any format PIL reads) as the model's input [3, S, S].

    Grid datasets: grey, resized to the grid's native side, then the training pipeline
    (`to_model_input`); ImageNet: RGB, resize 256 / centre crop 224, normalised. High
    bit depths are scaled to 8 bits first, as in training (`read_image`).

    Raises:
        InferenceError: the file cannot be used; the message says why, in one line.
    """
    from PIL import Image

    if settings.dataset == "imagenet":
        from mile_engine.data.image_files import val_transform
        from mile_engine.data.imagenet import DEFAULT_SIZE, MEAN, STD

        rgb = read_image(path, "RGB")
        pixels = val_transform(settings.image_size or DEFAULT_SIZE)(rgb).float()
        mean = torch.tensor(MEAN).view(3, 1, 1) * 255
        std = torch.tensor(STD).view(3, 1, 1) * 255
        return (pixels - mean) / std
    from mile_engine.data.tiles import to_model_input

    side = GRID_SIDE[settings.dataset]
    grey = read_image(path, "L")
    if grey.size != (side, side):
        grey = grey.resize((side, side), Image.Resampling.BILINEAR)
    pixels = torch.frombuffer(bytearray(grey.tobytes()), dtype=torch.uint8).view(side, side)
    return to_model_input(pixels[None], settings.image_size)[0]


def predict_files(
    loaded: LoadedModel, paths: Sequence[Path], rho: float | None = None,
    batch_size: int = 64,
) -> list[FilePrediction]:
    """The prediction set of each image file; a bad file gets an error, the rest go on."""
    rho = loaded.settings.rho if rho is None else rho
    results = [FilePrediction(str(p)) for p in paths]
    inputs: list[tuple[int, torch.Tensor]] = []
    for i, path in enumerate(paths):
        try:
            inputs.append((i, image_input(Path(path), loaded.settings)))
        except InferenceError as exc:
            results[i].error = str(exc)
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start:start + batch_size]
        logits = run_model(loaded.student, torch.stack([x for _, x in chunk]),
                           loaded.device, loaded.dtype)
        sets = label_sets(logits, rho, loaded.sigmoid, loaded.class_names)
        for (i, _), labels in zip(chunk, sets, strict=True):
            results[i].labels = labels
    return results


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

    A live trainer's weights change in its own thread; `refresh()` takes a consistent
    copy (between two steps, see `WeightTap`) into private networks, so the inspector
    never runs or reads the trainer's own modules while they train.
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
        self.tap = WeightTap(trainer) if trainer is not None else None
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
        student = place(build_model(s.model, sigmoid_head=sigmoid), trainer.device)
        teacher = place(build_model(s.model, sigmoid_head=sigmoid), trainer.device) \
            if s.schema == "MILe" else None
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
        """Copy a live trainer's current weights; False when there is nothing to copy."""
        if self.tap is None or self.trainer is None:
            return False
        state = self.tap.snapshot(timeout)
        self.student.load_state_dict(state["student"])
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.global_step = int(state["global_step"])
        self.version += 1
        return True

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


class WeightTap:
    """A trainer sink that copies the networks' weights between two steps, on request.

    Events are emitted by the trainer's thread between optimizer steps, when no
    parameter is half-updated; copying there gives a consistent snapshot without a lock
    in the trainer. A trainer that emits nothing (paused, finished, not started) is not
    changing its weights, so after `timeout` the copy is taken directly.
    """

    _BETWEEN_STEPS = (ev.StepLogged, ev.PhaseStarted, ev.Evaluated, ev.Paused, ev.RunEnded,
                      ev.CheckpointSaved)

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self._want = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._state: dict[str, Any] | None = None
        trainer.sinks.append(self)

    def __call__(self, event: ev.Event) -> None:
        if self._want.is_set() and isinstance(event, self._BETWEEN_STEPS):
            self._take()

    def _take(self) -> None:
        with self._lock:
            if not self._want.is_set():
                return
            t = self.trainer
            self._state = {
                "student": {k: v.detach().clone() for k, v in t.student.state_dict().items()},
                "teacher": {k: v.detach().clone() for k, v in t.teacher.state_dict().items()},
                "global_step": t.global_step,
            }
            self._want.clear()
            self._ready.set()

    def snapshot(self, timeout: float = 2.0) -> dict[str, Any]:
        """A copy of the student's and teacher's weights and the global step."""
        self._ready.clear()
        self._want.set()
        if not self._ready.wait(timeout):
            self._take()  # the trainer is idle: its weights are not moving
        with self._lock:
            assert self._state is not None
            return self._state

    def detach(self) -> None:
        """Stop listening to the trainer."""
        with contextlib.suppress(ValueError):
            self.trainer.sinks.remove(self)
