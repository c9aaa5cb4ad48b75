"""Typed, validated settings: one dataclass, one loader, one set of error messages.

Every key of the original MILe implementation keeps its name and meaning
(`model`, `schema`, `dataset`, `lr`, `k_t`, `k_s`, `rho`, ...). In a TOML file the keys
may sit at the top level or inside the table of their group (`[mile] k_t = 2`); on the
command line (`--set k_t=2`) they are always bare names. Precedence: command line >
file > defaults.

Settings are declared, checked and loaded in one place (STYLE.md 2), so that every
setting's doc, limits and error messages sit next to it and cannot drift apart.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import math
import os
import re
import reprlib
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, overload

import tomlkit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

# The names a setting may take, as types: mypy catches a misspelt name where one is
# compared or passed. The tuples the loader and the console offer are derived from them.
# `model` is open: the names below plus every torchvision classification model
# (`MODELS`), checked when a value is loaded.
LegacyModel = Literal["resnet18-10", "resnet18", "resnet50"]
Schema = Literal["MILe", "sigmoid", "softmax", "EM", "LL-R", "LL-Ct"]
Dataset = Literal["digits", "mnist", "fashion-mnist", "imagenet", "folder"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Scheduler = Literal["plateau", "none"]
Monitor = Literal["real_f1", "map"]
Decode = Literal["auto", "workers", "device"]
Crop = Literal["random-resized", "whole"]

LEGACY_MODELS: tuple[LegacyModel, ...] = get_args(LegacyModel)
SCHEMAS: tuple[Schema, ...] = get_args(Schema)
DATASETS: tuple[Dataset, ...] = get_args(Dataset)
DEVICES = ("auto", "cpu", "cuda")  # `cuda:N` too: a pattern, not a closed set of names
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
SCHEDULERS: tuple[Scheduler, ...] = get_args(Scheduler)
MONITORS: tuple[Monitor, ...] = get_args(Monitor)
DECODERS: tuple[Decode, ...] = get_args(Decode)
CROPS: tuple[Crop, ...] = get_args(Crop)

# resnet18-10 names its class count; every other model's head is sized to the data.
MODEL_CLASSES = {"resnet18-10": 10}
# The class counts known without reading the data ("folder" counts its sub-folders).
DATASET_CLASSES = {"digits": 10, "mnist": 10, "fashion-mnist": 10, "imagenet": 1000}
GRID_DATASETS: tuple[Dataset, ...] = ("digits", "mnist", "fashion-mnist")

# A settings file is a page of text; reading more than this is a mistake (`--config
# /dev/zero`, a data file named by accident), not a configuration.
MAX_SETTINGS_BYTES = 1 << 20
# torch keeps a device index in 8 signed bits: cuda:0 to cuda:127. ASCII digits only
# (str.isdigit also accepts Arabic-Indic and superscript digits), no leading zeros, as torch
# parses them.
CUDA_DEVICE = re.compile(r"cuda:(0|[1-9][0-9]{0,2})")
MAX_CUDA_INDEX = 127

# The TOML tables, in the order the default file and the console show them.
GROUPS = {
    "run": "Model and schema",
    "data": "Data",
    "optim": "Optimisation",
    "mile": "MILe",
    "baselines": "Single-positive baselines (EM, LL-R, LL-Ct)",
    "checkpoints": "Checkpoints and logs",
    "device": "Device and speed",
}


class SettingsError(ValueError):
    """A settings file or value that cannot be used; the message says what to fix."""


class ModelNames(Sequence[str]):
    """Every name `model` accepts: the legacy names, then torchvision's classification
    models, sorted.

    A sequence that imports torchvision only when first read past the legacy names, so
    that loading settings (and starting the command line) stays fast.
    """

    def __init__(self) -> None:
        self._names: tuple[str, ...] | None = None

    def _all(self) -> tuple[str, ...]:
        if self._names is None:
            from torchvision import models as tv_models

            found = tv_models.list_models(module=tv_models)
            self._names = LEGACY_MODELS + tuple(n for n in found if n not in LEGACY_MODELS)
        return self._names

    @property
    def loaded(self) -> bool:
        """Whether torchvision's list has been read (reading it imports torchvision)."""
        return self._names is not None

    def __contains__(self, value: object) -> bool:
        return value in LEGACY_MODELS or value in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __bool__(self) -> bool:  # never empty; `if choices:` must not import torchvision
        return True

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._all()[index]

    def nearest(self, value: str, n: int = 3) -> list[str]:
        """Up to `n` names close to `value`: shared prefix first, then by similarity."""
        text = value.strip().lower()
        names = self._all()
        close = difflib.get_close_matches(text, names, n=n, cutoff=0.5)
        prefixed = [m for m in names if text and m.startswith(text) and m not in close]
        return (prefixed + close)[:n] if prefixed else close


MODELS = ModelNames()


def _setting(
    default: Any,
    group: str,
    doc: str,
    *,
    choices: Sequence[str] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive: bool = False,
) -> Any:
    """Declare one setting with its group, its documentation and its allowed values."""
    meta = {
        "group": group,
        "doc": doc,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
        "exclusive": exclusive,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Everything one run needs. Field docs are the comments of the default `mile.toml`."""

    # -- model and schema
    model: str = _setting(
        "resnet18-10",
        "run",
        "Backbone: any torchvision classification model by name (resnet18, resnet50, "
        "convnext_tiny, efficientnet_b0, vit_b_16, ...), its classifier head sized to the "
        "dataset's classes; resnet18-10 is ResNet-18 for the 10-class grids (the original "
        "name). See docs/models.md.",
        choices=MODELS,
    )
    weights: str = _setting(
        "",
        "run",
        "Starting weights: empty trains from scratch; a path to a state dict or torchvision "
        "weights file; or a torchvision weights name (ResNet50_Weights.IMAGENET1K_V2, or "
        "DEFAULT for the model's default) already in torch's cache, never downloaded. A "
        "head whose class count differs is replaced.",
    )
    schema: Schema = _setting(
        "MILe",
        "run",
        "Training schema: MILe (teacher/student generations on pseudo-labels), sigmoid "
        "(binary cross-entropy on the single labels, 'assume negative'), softmax "
        "(cross-entropy), EM (entropy maximisation on the unobserved labels, Zhou et al. "
        "2022) or LL-R / LL-Ct (reject / correct the largest unobserved-label losses, Kim "
        "et al. 2022). The baselines take the same k_t + k_s optimizer steps per generation "
        "as MILe. See docs/schemas.md.",
        choices=SCHEMAS,
    )
    # -- data
    dataset: Dataset = _setting(
        "digits",
        "data",
        "digits (embedded, no download), mnist, fashion-mnist (3x3 multi-label grids of "
        "28x28 tiles), imagenet (with ReaL labels) or folder (your own images, one "
        "sub-folder per class, in data_path and val_path).",
        choices=DATASETS,
    )
    grid_objects: int = _setting(
        3,
        "data",
        "Filled cells of each 3x3 grid, the centre included (1..9). 9 is the original "
        "benchmark, where predicting every class already scores ReaL F1 0.757; 3 keeps "
        "grids sparse (about 2.7 classes) so that F1 rewards seeing, not guessing.",
        minimum=1,
        maximum=9,
    )
    val_size: int = _setting(
        2000,
        "data",
        "Number of fixed (seeded) validation grids; ignored for imagenet. They are composed "
        "at once and kept in memory (7 KB each for mnist), so at most 100000.",
        minimum=1,
        maximum=100_000,
    )
    image_size: int = _setting(
        0,
        "data",
        "Side of the images fed to the model, in pixels; 0 keeps the natural size (24 for "
        "digits, 84 for mnist and fashion-mnist, the weights' crop size or 224 for imagenet "
        "and folder). 224 reproduces the original input.",
        minimum=0,
        maximum=1024,
    )
    mnist_path: str = _setting(
        "",
        "data",
        "Folder with the four MNIST-format IDX files (gzipped or not); for fashion-mnist an "
        "empty value also finds Debian's /usr/share/datasets/fashion-mnist.",
    )
    data_path: str = _setting(
        "", "data", "imagenet: the ILSVRC2012 train folder. folder: the training images, "
        "one sub-folder per class (named by the folder, sorted; nested folders allowed "
        "inside a class).",
    )
    val_path: str = _setting(
        "", "data", "imagenet: the validation images, in class sub-folders or flat. folder: "
        "the validation images, in the same layout as data_path.",
    )
    val_labels_path: str = _setting(
        "", "data", "folder: optional full label sets of the validation images, CSV "
        "(file,label;label) or JSON; empty uses each image's single label as its set.",
    )
    train_labels_path: str = _setting(
        "", "data", "folder: optional full label sets of the training images, in "
        "val_labels_path's formats (names relative to data_path); used only to measure how "
        "right MILe's pseudo-labels and LL's rejections are, never to train.",
    )
    real_path: str = _setting("", "data", "imagenet: ReaL's real.json.")
    num_workers: int = _setting(
        2, "data", "imagenet: data-loading worker processes (0 loads in the main process).",
        minimum=0, maximum=1024,
    )
    decode: Decode = _setting(
        "auto",
        "data",
        "imagenet: where JPEGs are decoded: workers (PIL in the num_workers processes), "
        "device (whole batches on the training device, nvjpeg on CUDA; the workers only "
        "read files) or auto (device on CUDA, workers on the CPU).",
        choices=DECODERS,
    )
    crop: Crop = _setting(
        "random-resized",
        "data",
        "imagenet, folder: how images are cut to the model's input. random-resized "
        "(ImageNet's: training on a random 8-100 % crop, validation on a centre crop; for "
        "photos of one main subject) or whole (the whole image resized, flipped at random "
        "in training; for images whose labelled objects sit anywhere: grids, documents, "
        "multi-object scenes).",
        choices=CROPS,
    )
    # -- optimisation
    lr: float = _setting(
        0.01, "optim", "Learning rate of SGD (momentum 0.9, weight decay 1e-4). 0.01 trained "
        "the digit grids better than 0.05 in our probes (docs/study.md). "
        "Below 10: a larger rate can only diverge.",
        minimum=0.0, maximum=10.0, exclusive=True,
    )
    batch_size: int = _setting(
        64, "optim", "Images per optimizer step and process (under torchrun each process "
        "takes batch_size images, so the global batch is batch_size x processes). At least 2, "
        "as batch norm cannot train on one image; at most 65536, though memory usually "
        "decides well below that.",
        minimum=2, maximum=65536,
    )
    epoch_num: int = _setting(
        8, "optim", "Number of generations (interactive + imitation phase, then evaluation).",
        minimum=1,
    )
    scheduler: Scheduler = _setting(
        "plateau",
        "optim",
        "Learning-rate schedule: plateau (divide by 10 when the monitor metric, ReaL F1 by "
        "default, stops improving for lr_patience generations) or none.",
        choices=SCHEDULERS,
    )
    lr_patience: int = _setting(
        3, "optim", "Generations without a better monitor metric that the plateau schedule "
        "tolerates: the learning rate drops tenfold at the next one without a gain, never "
        "after a gain (PyTorch's ReduceLROnPlateau patience).",
        minimum=0,
    )
    monitor: Monitor = _setting(
        "real_f1", "optim", "The metric that marks the best generation (and the best "
        "save, which retention keeps) and that the plateau schedule watches: real_f1 (ReaL "
        "F1 at rho) or map (mean average precision, threshold-free).",
        choices=MONITORS,
    )
    seed: int = _setting(
        0, "optim", "Seed of the model initialisation and the data order (at most 2^32 - 1, "
        "which every seeded generator here accepts).", minimum=0, maximum=2**32 - 1,
    )
    # -- MILe
    k_t: int = _setting(
        100, "mile", "Interactive steps per generation: the student learns the single labels.",
        minimum=1,
    )
    k_s: int = _setting(
        50, "mile", "Imitation steps per generation: the student learns the teacher's "
        "pseudo-labels.", minimum=1,
    )
    rho: float = _setting(
        0.1,
        "mile",
        "Threshold on sigmoid probabilities, for the teacher's pseudo-labels and for the "
        "prediction sets of the sigmoid schemas at evaluation (between 0 and 1). 0.1 gave "
        "MILe its best ReaL F1 on the sparse digit grids; at 0.25 the teacher hands about "
        "one label per image (MILe then acts like sigmoid) and at 0.05 it floods them.",
        minimum=0.0,
        maximum=1.0,
        exclusive=True,
    )
    gt_or: bool = _setting(
        False, "mile", "Add the ground-truth label to the teacher's pseudo-labels."
    )
    # -- single-positive baselines
    em_alpha: float = _setting(
        0.1,
        "baselines",
        "EM: weight alpha of the entropy -alpha*H(p) that each unobserved class maximises "
        "(Zhou et al., ECCV 2022, 'Acknowledging the Unknown for Multi-label Learning with "
        "Single Positive Labels'; the authors' defaults: 0.2 on VOC, 0.1 on COCO and "
        "NUS-WIDE, 0.01 on CUB). At most 100.",
        minimum=0.0,
        maximum=100.0,
    )
    ll_delta: float = _setting(
        0.002,
        "baselines",
        "LL-R, LL-Ct: growth of the rejection rate per generation (a generation is the "
        "paper's epoch): generation g (from 0) rejects or corrects the largest "
        "ceil(B*C*min(1, g*ll_delta)) unobserved-label losses of each batch (Kim et al., "
        "CVPR 2022, 'Large Loss Matters in Weakly Supervised Multi-Label Classification'; "
        "the authors' runs use 0.001 to 0.005 per epoch, over 10 epochs).",
        minimum=0.0,
        maximum=1.0,
    )
    # -- checkpoints and logs
    checkpoint_path: str = _setting(
        "runs", "checkpoints", "Folder that receives one sub-folder per run."
    )
    max_checkpoint_num: int = _setting(
        3, "checkpoints", "Newest checkpoints kept per run; the best by the monitor metric "
        "(ReaL F1 by default) is always kept as well.", minimum=1,
    )
    log_every: int = _setting(
        25, "checkpoints", "Optimizer steps between two progress lines and metrics records.",
        minimum=1,
    )
    tensorboard: bool = _setting(
        False, "checkpoints", "Also write the run's scalars and settings as TensorBoard "
        "event files in its folder (RUN/tensorboard/), live; needs pip install "
        "'mile-tui[tensorboard]'. `mile-tui export` writes them for any run afterwards. "
        "See docs/export.md.",
    )
    # -- device and speed
    device: str = _setting(
        "auto", "device", "auto (cuda when available, else cpu), cpu, cuda or cuda:N.",
    )
    precision: Precision = _setting(
        "auto",
        "device",
        "Arithmetic: auto (bf16 autocast on CUDA devices that support it; on the CPU bf16 "
        "with channels_last where the processor has bf16 matrix units (avx512_bf16 or "
        "amx_bf16) and inputs are at least 40 px on a side, else fp32), fp32, bf16 or fp16.",
        choices=PRECISIONS,
    )

    compile: bool = _setting(
        False,
        "device",
        "Compile the training networks with torch.compile: faster steps after a warm-up of "
        "a minute or more, so worth it for long runs (on the CPU it needs g++ and the "
        "Python headers, and was slower than eager in our measurements).",
    )
    sync_bn: bool = _setting(
        False,
        "device",
        "Under torchrun with several CUDA processes: batch-norm statistics over the global "
        "batch (SyncBatchNorm) instead of each process's share.",
    )

    @property
    def num_classes(self) -> int:
        """Classes of a built-in dataset (and of the model's head).

        Raises:
            SettingsError: for "folder", whose classes are its sub-folders: take
                `source.num_classes` from the data source instead.
        """
        if self.dataset not in DATASET_CLASSES:
            raise SettingsError(
                f"dataset {self.dataset!r}: the number of classes is known only once the "
                "data is read; use the data source's num_classes."
            )
        return DATASET_CLASSES[self.dataset]

    def to_dict(self) -> dict[str, Any]:
        """The settings as a flat mapping of bare names to values."""
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The settings as a grouped TOML document (comments left out)."""
        return render_toml(self, comments=False)


FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Settings)}


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def allowed_text(name: str) -> str:
    """Describe in words the values a setting allows."""
    f = FIELDS[name]
    meta = f.metadata
    if name == "model":  # 80-odd names: say what they are, the console lists them
        return (
            '"resnet18-10" or a torchvision classification model name ("resnet18", '
            '"convnext_tiny", "vit_b_16", ...; `mile-tui models` lists them)'
        )
    if meta["choices"]:
        return "one of " + ", ".join(f'"{c}"' for c in meta["choices"])
    kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[
        type(f.default)
    ]
    lo, hi, exclusive = meta["minimum"], meta["maximum"], meta["exclusive"]
    if lo is not None and hi is not None:
        op = "strictly between" if exclusive else "from"
        joiner = "and" if exclusive else "to"
        return f"{kind} {op} {_num(lo)} {joiner} {_num(hi)}"
    if lo is not None:
        return f"{kind} {'>' if exclusive else '>='} {_num(lo)}"
    if name == "device":
        return f'"auto", "cpu", "cuda" or "cuda:N" (N from 0 to {MAX_CUDA_INDEX})'
    return kind


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# Values quoted in messages are cut short: an error is one line, even for a 5,000-deep
# array or a megabyte of text, and repr escapes newlines and undecodable bytes.
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong, _SHORT.maxlevel = 80, 80, 40, 3


def shown(value: Any) -> str:
    """`value` for a one-line message: repr, cut short."""
    return _SHORT.repr(value)


def shown_path(path: str | os.PathLike[str]) -> str:
    """A path for a one-line message: undecodable bytes as \\xNN, newlines escaped."""
    text = os.fspath(path)
    try:
        text = os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name can hold: repr shows it
        return shown(text)
    return text if text.isprintable() else shown(text)


def validate_value(name: str, value: Any, source: str = "settings") -> Any:
    """Check one value against its setting; return it (ints widened to float where needed).

    Raises:
        SettingsError: naming the source, the key, the value and what is allowed.
    """
    if name not in FIELDS:
        raise SettingsError(_unknown_key_message(name, source))
    f = FIELDS[name]
    meta = f.metadata
    expected = type(f.default)
    ok_type = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
    bad = False
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value, ok_type = float(value), True
        except OverflowError:  # an integer too large for a float is out of range
            ok_type = bad = True
    if not ok_type:
        raise SettingsError(
            f"{source}: {name!r} must be {allowed_text(name)}, "
            f"got {shown(value)} ({_type_name(value)})."
        )
    if isinstance(value, str):
        _check_text(name, value, source)
    if name == "model" and value not in MODELS:
        near = [f'"{m}"' for m in MODELS.nearest(value)]
        hint = (" Did you mean " + (", ".join(near[:-1]) + " or " if near[:-1] else "")
                + near[-1] + "?") if near else ""
        raise SettingsError(
            f"{source}: 'model' {shown(value)} is not a torchvision classification model."
            f"{hint} `mile-tui models` lists them all."
        )
    if meta["choices"] and value not in meta["choices"]:
        lowered = {c.lower(): c for c in meta["choices"]}
        close = [lowered[m] for m in difflib.get_close_matches(str(value).lower(), lowered, n=1)]
        hint = f' Did you mean "{close[0]}"?' if close else ""
        raise SettingsError(
            f"{source}: {name!r} must be {allowed_text(name)}, got {shown(value)}.{hint}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        bad = True
    lo, hi, exclusive = meta["minimum"], meta["maximum"], meta["exclusive"]
    if not bad and lo is not None and (value <= lo if exclusive else value < lo):
        bad = True
    if not bad and hi is not None and (value >= hi if exclusive else value > hi):
        bad = True
    if name == "device" and not valid_device(value):
        bad = True
    if bad:
        raise SettingsError(
            f"{source}: {name!r} must be {allowed_text(name)}, got {shown(value)}."
        )
    return value


def _check_text(name: str, value: str, source: str) -> None:
    """Refuse text that cannot be saved in settings.toml or used as a path."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        # An undecodable byte from the command line (`$'\xff'`) arrives as a surrogate.
        raise SettingsError(
            f"{source}: {name!r} holds a byte that is not UTF-8 "
            f"({shown_path(value[exc.start:exc.end])} in {shown_path(value)}); settings are "
            "saved as UTF-8 text, so rename the file or folder, or pick another."
        ) from None
    if "\0" in value:
        raise SettingsError(
            f"{source}: {name!r} holds a NUL character, which no path or setting may "
            f"contain: {shown(value)}."
        )


# Numbers typed by a user: ASCII digits only, as TOML and the device setting read them
# (Python's int() and float() would also take Arabic-Indic or full-width digits and "_").
ASCII_INT = re.compile(r"[+-]?[0-9]+")
ASCII_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_ascii_int(text: str) -> int:
    """An integer written in ASCII digits (surrounding spaces allowed).

    Raises:
        ValueError: anything else, other scripts' digits included.
    """
    text = text.strip()
    if not ASCII_INT.fullmatch(text):
        raise ValueError(f"not an integer in ASCII digits: {text!r}")
    return int(text)


def parse_ascii_float(text: str) -> float:
    """A decimal number written in ASCII (`0.25`, `.5`, `1e-3`; no `nan`, `inf`, `_`).

    Raises:
        ValueError: anything else, other scripts' digits included.
    """
    text = text.strip()
    if not ASCII_FLOAT.fullmatch(text):
        raise ValueError(f"not a number in ASCII digits: {text!r}")
    return float(text)


def valid_device(value: str) -> bool:
    """Whether `value` is a device setting torch parses: auto, cpu, cuda or cuda:0..127."""
    if value in DEVICES:
        return True
    match = CUDA_DEVICE.fullmatch(value)
    return match is not None and int(match.group(1)) <= MAX_CUDA_INDEX


def _unknown_key_message(name: str, source: str) -> str:
    close = difflib.get_close_matches(name, list(FIELDS), n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return (
        f"{source}: {shown(name)} is not a setting.{hint} Known settings: {', '.join(FIELDS)}."
    )


def flatten(document: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Turn a TOML document whose keys are bare or grouped into tables into bare names."""
    flat: dict[str, Any] = {}
    places: dict[str, str] = {}  # where each key was set, for the "set twice" error

    def put(name: str, value: Any, place: str) -> None:
        if name in flat:
            raise SettingsError(
                f"{source}: {shown(name)} is set twice, {places[name]} and {place}; keep one."
            )
        flat[name], places[name] = value, place

    for key, value in document.items():
        if key in GROUPS and isinstance(value, Mapping):
            for inner, inner_value in value.items():
                if inner in FIELDS and FIELDS[inner].metadata["group"] != key:
                    group = FIELDS[inner].metadata["group"]
                    raise SettingsError(
                        f"{source}: '{inner}' belongs in the [{group}] table, not in [{key}]."
                    )
                put(inner, inner_value, f"in [{key}]")
        else:
            put(key, value, "at the top level")
    return flat


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one `--set key=value`; the value is read as TOML, else taken as a string."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise SettingsError(
            f"--set {shown(text)}: write it as key=value, for example --set k_t=2."
        )
    try:
        document = tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError:
        return key, raw
    except RecursionError:
        raise SettingsError(f"--set {shown(key)}: the value nests too deeply to read.") from None
    # More than one key means the text held a newline and more TOML: that is a string.
    return key, document["v"] if len(document) == 1 else raw


def read_toml(path: Path) -> dict[str, Any]:
    """Read a settings file as bare names; anything unreadable becomes SettingsError.

    Refused with a message: a missing or unreadable file, anything but a regular file
    (a folder, `/dev/zero`, a pipe), more than `MAX_SETTINGS_BYTES`, a UTF-8
    byte-order mark, text that is not UTF-8, invalid TOML, nesting too deep to parse.
    """
    name = shown_path(path)
    text = _decode_settings(_read_settings_bytes(path, name), name)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{name}: not valid TOML: {exc}.") from None
    except RecursionError:
        raise SettingsError(
            f"{name}: arrays or tables nest too deeply to read; a settings file needs none."
        ) from None
    return flatten(document, name)


def _read_settings_bytes(path: Path, name: str) -> bytes:
    """The bytes of a regular file of at most MAX_SETTINGS_BYTES, else SettingsError."""
    try:
        # O_NONBLOCK: opening a named pipe must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise SettingsError(f"{name}: no such settings file.") from None
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read the settings file ({exc.strerror}).") from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        mode = 0
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise SettingsError(f"{name}: is a folder; give a settings file (TOML).")
        raise SettingsError(
            f"{name}: not a regular file (a device, pipe or socket); give a settings file "
            "(TOML)."
        )
    with os.fdopen(fd, "rb") as file:
        try:
            data = file.read(MAX_SETTINGS_BYTES + 1)
        except OSError as exc:
            raise SettingsError(
                f"{name}: cannot read the settings file ({exc.strerror})."
            ) from None
    if len(data) > MAX_SETTINGS_BYTES:
        raise SettingsError(
            f"{name}: larger than {MAX_SETTINGS_BYTES // 2**20} MiB; a settings file is a "
            "page of TOML."
        )
    return data


def _decode_settings(data: bytes, name: str) -> str:
    """UTF-8 text without a byte-order mark, else SettingsError naming the place."""
    if data.startswith(codecs.BOM_UTF8):
        raise SettingsError(
            f"{name}: starts with a UTF-8 byte-order mark; save it as UTF-8 without one."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SettingsError(
            f"{name}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it "
            "as UTF-8."
        ) from None


def build_settings(
    values: Mapping[str, Any], source: str = "settings", base: Settings | None = None
) -> Settings:
    """Validate bare-named values on top of `base` (the defaults when None)."""
    checked = {name: validate_value(name, value, source) for name, value in values.items()}
    settings = dataclasses.replace(base or Settings(), **checked)
    check_consistency(settings, source)
    return settings


def apply_allowed_overrides(
    base: Settings, overrides: Iterable[str], allowed: Iterable[str], owner: str
) -> Settings:
    """Apply `--set key=value` strings that may change only the keys in `allowed`.

    Setting another key to its current value is accepted; changing it is an error that
    says it belongs to `owner` (a resumed run, a checkpoint) and lists what may change.
    """
    allowed = frozenset(allowed)
    parsed = dict(parse_override(text) for text in overrides)
    for key, value in parsed.items():
        if key in FIELDS and key not in allowed and value != getattr(base, key):
            raise SettingsError(
                f"--set {key}: '{key}' belongs to {owner} ({getattr(base, key)!r}); "
                f"only these may change: {', '.join(sorted(allowed))}."
            )
    return build_settings(parsed, "--set", base=base) if parsed else base


def check_consistency(settings: Settings, source: str = "settings") -> None:
    """Reject combinations of values that cannot work together."""
    model_classes = MODEL_CLASSES.get(settings.model)
    known = DATASET_CLASSES.get(settings.dataset)
    if model_classes is not None and known is not None and model_classes != known:
        raise SettingsError(
            f"{source}: model '{settings.model}' predicts {model_classes} classes but dataset "
            f"'{settings.dataset}' has {known}; use model = \"resnet18\" or \"resnet50\" (or "
            "any torchvision classifier: its head is sized to the dataset's classes)."
        )
    if settings.dataset == "folder":
        missing = [k for k in ("data_path", "val_path") if not getattr(settings, k)]
        if missing:
            raise SettingsError(
                f"{source}: dataset 'folder' needs {', '.join(missing)} (the training and "
                "validation folders, one sub-folder per class)."
            )
    if settings.dataset == "imagenet":
        missing = [k for k in ("data_path", "val_path", "real_path") if not getattr(settings, k)]
        if missing:
            raise SettingsError(
                f"{source}: dataset 'imagenet' needs {', '.join(missing)} "
                "(the train folder, the validation images and ReaL's real.json)."
            )


def check_checkpoint_path(settings: Settings) -> None:
    """Refuse a `checkpoint_path` under which no run folder can be made; make nothing.

    Run before a new run builds anything: a file (or a path under one), a broken link, a
    read-only or pseudo file system (`/proc/runs`) would otherwise fail only once the
    trainer is built. Writability is proven by making and removing an empty folder in
    the nearest existing folder, the one test that no permission bit or mount flag fools.

    Raises:
        SettingsError: naming checkpoint_path and what is wrong with it.
    """
    root = Path(settings.checkpoint_path)
    where = f"checkpoint_path {shown_path(root)}"
    existing = root
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing.is_file() else "is not a folder"
        if existing == root:
            raise SettingsError(f"{where}: {what}; name a folder for the runs.")
        raise SettingsError(
            f"{where}: {shown_path(existing)} {what}, so no folder can be made under it."
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mile-write-test-", dir=existing))
    except OSError as exc:
        raise SettingsError(
            f"{where}: cannot make folders in {shown_path(existing)} ({exc.strerror}); name "
            "a writable folder."
        ) from None


def load_settings(
    path: Path | None = None, overrides: Iterable[str] = (), missing_ok: bool = False
) -> Settings:
    """Load settings: defaults, then the file at `path`, then `--set` overrides.

    Args:
        path: a TOML settings file, or None for the defaults alone.
        overrides: `key=value` strings from the command line.
        missing_ok: start from the defaults when `path` does not exist.

    Raises:
        SettingsError: with a message naming the file, the key and what is allowed.
    """
    settings = Settings()
    if path is not None and (path.exists() or not missing_ok):
        settings = build_settings(read_toml(path), shown_path(path))
    parsed = dict(parse_override(text) for text in overrides)
    if parsed:
        settings = build_settings(parsed, "--set", base=settings)
    return settings


def _toml_value(value: Any) -> str:
    # tomlkit escapes what TOML needs (quotes, backslashes, newlines, control characters).
    return tomlkit.item(value).as_string()


def _wrap(text: str, width: int = 88) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width - 2)


def render_toml(settings: Settings | None = None, comments: bool = True) -> str:
    """Render settings as a grouped TOML document, each key with its comment."""
    settings = settings or Settings()
    lines: list[str] = []
    if comments:
        lines += [
            "# mile-tui settings. Every key may also sit at the top level; on the command line",
            "# use bare names: mile-tui run --headless --set k_t=200 --set schema=sigmoid",
            "",
        ]
    for group, title in GROUPS.items():
        if comments:
            lines.append(f"# {title}")
        lines.append(f"[{group}]")
        for name, f in FIELDS.items():
            if f.metadata["group"] != group:
                continue
            if comments:
                lines += [f"# {line}" for line in _wrap(f.metadata["doc"])]
                lines.append(f"# Allowed: {allowed_text(name)}.")
            lines.append(f"{name} = {_toml_value(getattr(settings, name))}")
        lines.append("")
    return "\n".join(lines)
