"""The settings schema: the names each setting may take, and the `Settings` dataclass.

Every key of the original MILe implementation keeps its name and meaning
(`model`, `schema`, `dataset`, `lr`, `k_t`, `k_s`, `rho`, ...). Each field carries its
TOML group, its documentation and its limits, so that a setting's doc, limits and error
messages sit next to it and cannot drift apart (STYLE.md 2); `validation` reads those
limits as its table.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, overload

import tomlkit

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
        "F1 at rho) or map (mean average precision, threshold-free). Compare schemas with "
        "map: ReaL F1 falls as a single-label baseline learns, so a plateau on it cuts the "
        "baseline's learning rate early (docs/study.md).",
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
        """The settings as a grouped TOML document, without comments (`render` adds them).

        tomlkit writes each value, escaping what TOML needs (quotes, backslashes,
        newlines, control characters).
        """
        lines: list[str] = []
        for group in GROUPS:
            lines.append(f"[{group}]")
            lines += [
                f"{name} = {tomlkit.item(getattr(self, name)).as_string()}"
                for name, f in FIELDS.items()
                if f.metadata["group"] == group
            ]
            lines.append("")
        return "\n".join(lines)


FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Settings)}
