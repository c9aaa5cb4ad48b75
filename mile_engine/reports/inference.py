"""Scoring a model: load a checkpoint, evaluate it, predict label sets for image files.
The console's inspection (samples, pseudo-label counts, live weights) builds on these in
`mile_engine.reports.inspection`.

Everything here runs the networks in `eval()` under `torch.inference_mode()`, in the
same arithmetic (device, autocast dtype, batch size) as the trainer's own evaluation, so
that a checkpoint scores here exactly what its run recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mile_engine import placement
from mile_engine.config.loader import apply_allowed_overrides
from mile_engine.config.schema import FIELDS, Settings
from mile_engine.config.validation import build_settings
from mile_engine.data import DataSource, build_source
from mile_engine.device import resolve_device, resolve_precision
from mile_engine.metrics import EvalAccumulator, ScoreKeeper, prediction_sets
from mile_engine.model_inputs import GRID_SIDE, input_side
from mile_engine.models import build_model, find_head, input_spec
from mile_engine.placement import run_model
from mile_engine.runstore.files import CheckpointError
from mile_engine.runstore.manifest import load_checkpoint
from mile_engine.schemas import pseudo_labels, uses_sigmoid
from mile_engine.trainer import EVAL_BATCH

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


# Settings an evaluation may take from --config / --set: where the data is, which
# validation set to score and how to compute. The model, the schema and the training
# hyper-parameters belong to the checkpoint.
EVAL_KEYS = frozenset({
    "dataset", "grid_objects", "val_size", "image_size", "rho",
    "data_path", "val_path", "val_labels_path", "real_path", "mnist_path", "num_workers",
    "decode",
    "device", "precision", "checkpoint_path",
})
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


def place(
    model: nn.Module, device: torch.device, dtype: torch.dtype = torch.float32
) -> nn.Module:
    """Move a network to `device` the way the trainer does, frozen in `eval()` mode."""
    return placement.place(model, device, dtype).eval().requires_grad_(False)


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
    side = input_side(settings)
    dtype = resolve_precision(settings.precision, device, side)
    sigmoid = uses_sigmoid(settings.schema)
    names = checkpoint_class_names(state, settings, path)
    # The checkpoint holds every tensor: `weights` (the run's starting point) is not read.
    student = build_model(settings.model, len(names), sigmoid, image_size=side)
    try:
        student.load_state_dict(state["student"])
        teacher = None
        if settings.schema == "MILe":
            teacher = build_model(settings.model, len(names), sigmoid, image_size=side)
            teacher.load_state_dict(state["teacher"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path}: the weights do not fit model "
                              f"'{settings.model}' ({str(exc).splitlines()[0]}).") from None
    return LoadedModel(
        path=path,
        settings=settings,
        student=place(student, device, dtype),
        teacher=place(teacher, device, dtype) if teacher is not None else None,
        device=device,
        dtype=dtype,
        class_names=names,
        recorded=meta.get("metrics"),
        meta=meta,
    )


# ---------------------------------------------------------------------------- class names
def checkpoint_class_names(state: Mapping[str, Any], settings: Settings, path: Path) -> list[str]:
    """The class names of a checkpoint: those its run recorded, else the dataset's.

    Checkpoints written before class names were recorded name the built-in datasets'
    classes from the settings; a folder run's count then comes from its head's weights.

    Raises:
        CheckpointError: the recorded names are not a list of strings, or the head of a
            folder run without names cannot be found.
    """
    recorded = state.get("class_names")
    if recorded:
        if not isinstance(recorded, list) or not all(isinstance(n, str) for n in recorded):
            raise CheckpointError(f"{path}: its class names are not a list of names.")
        return list(recorded)
    if settings.dataset != "folder":
        return class_names(settings)
    student = state.get("student")
    probe = build_model(settings.model, 1, False, image_size=input_side(settings))
    weight = student.get(find_head(probe)[0] + ".weight") if isinstance(student, Mapping) \
        else None
    if not isinstance(weight, torch.Tensor):
        raise CheckpointError(f"{path}: records no class names and its model has no head.")
    return [f"class-{i}" for i in range(weight.shape[0])]


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
    checkpoint's numbers match what its run recorded. mAP (and the count of classes left
    out of it) reads no threshold: every row carries the same value.
    """
    acc = EvalAccumulator(source.num_classes, rhos, sigmoid, device)
    scores = ScoreKeeper(sigmoid)
    model.eval()
    for batch in source.val_batches(EVAL_BATCH):
        assert batch.real is not None
        logits = run_model(model, batch.images, device, dtype)
        acc.update(logits, batch.labels, batch.real)
        scores.update(logits, batch.real)
    ranking = ScoreKeeper.compute([scores.parts()])
    return [{**row, **ranking} for row in acc.compute()]


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
    (`to_model_input`); ImageNet and folders: RGB, resized and centre-cropped, normalised
    as the model's `input_spec` says (256 / 224 and ImageNet's statistics by default; the
    whole image resized with `crop = "whole"`). High
    bit depths are scaled to 8 bits first, as in training (`read_image`).

    Raises:
        InferenceError: the file cannot be used; the message says why, in one line.
    """
    from PIL import Image

    if settings.dataset not in GRID_SIDE:
        from mile_engine.data.image_files import val_transform

        spec = input_spec(settings)
        rgb = read_image(path, "RGB")
        # As the run validated: centre crop, or the whole image with crop = "whole".
        pixels = val_transform(spec.image_size, spec.resize_size, crop=settings.crop)(rgb).float()
        mean = torch.tensor(spec.mean).view(3, 1, 1) * 255
        std = torch.tensor(spec.std).view(3, 1, 1) * 255
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
