"""ImageNet (ILSVRC2012) with ReaL labels as a data source.

- Files: the train folder's class sub-folders and the validation files in ReaL order
  (`imagenet_files`, which says how they are found); each validation image's ReaL set
  (`real_labels`). Without original validation labels top-1 is reported as NaN.
- Loading, decoding, corrupt-file tolerance and the training order are every image-file
  source's (`file_source.FileSource`): ImageNet is a folder data set with a known class
  list and ReaL as its label file. `decode` is resolved here (`resolve_decode`): either
  the DataLoader workers decode with PIL (`workers`), or the training device decodes
  whole batches (`device`: nvjpeg on CUDA; `mile_engine.data.jpeg`).

The public names of `imagenet_files` and `real_labels` are re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch

from mile_engine.config.schema import Crop, Decode, Settings, SettingsError
from mile_engine.data.file_source import (
    DEFAULT_SIZE,
    EpochSampler,
    FileSource,
    ImageNetInput,
    IndexedFiles,
    InputSpecLike,
    Warn,
)
from mile_engine.data.idx import Progress
from mile_engine.data.image_files import probe_decoding
from mile_engine.data.imagenet_files import (
    IMAGE_EXTENSIONS,
    LABEL_FILES,
    TrainIndex,
    ValIndex,
    find_label_file,
    is_image_name,
    read_loc_solution,
    read_val_labels,
    scan_train,
    scan_val,
)
from mile_engine.data.jpeg import probe_device_decode
from mile_engine.data.real_labels import (
    NUM_CLASSES,
    load_real,
    multi_hot,
    real_table,
    validate_real,
)

__all__ = [
    "DEFAULT_SIZE", "IMAGE_EXTENSIONS", "LABEL_FILES", "NUM_CLASSES",
    "EpochSampler", "ImageNetSource", "TrainIndex", "ValIndex", "find_label_file",
    "is_image_name", "load_real", "multi_hot", "read_loc_solution", "read_val_labels",
    "real_table", "resolve_decode", "scan_train", "scan_val", "validate_real",
]


# ---------------------------------------------------------------------- the source


def resolve_decode(
    decode: Decode, device: torch.device
) -> tuple[Literal["workers", "device"], str | None]:
    """Where JPEGs are decoded, "workers" or "device", and a note when auto fell back.

    auto means device on CUDA (where nvjpeg takes the decoding off the CPU) and workers on
    the CPU (where decoding in the main process would only serialise it).

    Raises:
        SettingsError: decode = "device" and `decode_jpeg` does not work on `device`.
    """
    if decode == "workers" or (decode == "auto" and device.type != "cuda"):
        return "workers", None
    problem = probe_device_decode(device)
    if problem is None:
        return "device", None
    if decode == "device":
        raise SettingsError(
            f"decode = \"device\": torchvision cannot decode JPEGs on {device} ({problem}). "
            "Use decode = \"workers\"."
        )
    return "workers", (
        f"JPEG decoding on {device} is unavailable ({problem}); the num_workers loader "
        f"processes decode instead (this machine has {os.cpu_count() or 1} CPU cores: "
        "raise num_workers if training waits for data)."
    )


class ImageNetSource(FileSource):
    """ILSVRC2012 train images for training, validation images with ReaL sets for evaluation.

    A `FileSource` whose files are ImageNet's (`imagenet_files`) and whose label sets are
    ReaL's, mapped by file name.

    Attributes:
        num_classes: always 1000 (ReaL's class ids index the 1000 sorted wnids).
        class_names: the wnids of the train folder (padded when it has fewer than 1000).
        label_source: where the validation images' single labels came from, in words.
    """

    def __init__(
        self,
        data_path: Path,
        val_path: Path,
        real_path: Path,
        batch_size: int,
        image_size: int,
        num_workers: int,
        device: torch.device,
        seed: int,
        progress: Progress | None = None,
        warn: Warn | None = None,
        cache: Path | None = None,
        rank: int = 0,
        world_size: int = 1,
        decode: Decode = "workers",
        spec: InputSpecLike | None = None,
        crop: Crop = "random-resized",
    ) -> None:
        train = scan_train(data_path, cache, progress)
        val = scan_val(val_path, train.classes, progress)
        table = real_table(load_real(real_path), val.real_index, f"real_path '{real_path}'")
        if len(train.paths) // world_size < batch_size:
            raise SettingsError(
                f"data_path '{data_path}' holds {len(train.paths)} images, fewer than "
                f"batch_size = {batch_size}."
            )
        probe_decoding("data_path", data_path, train.paths)
        # The validation index holds paths under val_path; the probe wants them relative.
        prefix = os.path.join(str(val_path), "")
        probe_decoding("val_path", val_path,
                       [p[len(prefix):] if p.startswith(prefix) else p for p in val.paths])
        notes = []
        if len(train.classes) != NUM_CLASSES:
            notes.append(
                f"data_path holds {len(train.classes)} class folders, not {NUM_CLASSES}: "
                "class ids follow their sorted names, and ReaL labels assume all 1000."
            )
        if val.label_source == "none":
            notes.append(
                f"val_path '{val_path}' is flat and has no LOC_val_solution.csv or "
                "val_labels.txt: top-1 accuracy is unavailable (NaN); ReaL metrics work."
            )
        resolved, fallback_note = resolve_decode(decode, device)
        if fallback_note:
            notes.append(fallback_note)
        self.label_source = val.label_source
        super().__init__(
            IndexedFiles(str(data_path), train.paths, train.labels),
            IndexedFiles("", val.paths, val.labels, table),
            num_classes=NUM_CLASSES,
            class_names=train.classes + [
                f"class-{i}" for i in range(len(train.classes), NUM_CLASSES)],
            batch_size=batch_size,
            spec=spec or ImageNetInput.of_size(image_size),
            num_workers=num_workers,
            device=device,
            seed=seed,
            warn=warn,
            rank=rank,
            world_size=world_size,
            decode=resolved,
            notes=notes,
            crop=crop,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        device: torch.device,
        progress: Progress | None = None,
        warn: Warn | None = None,
        rank: int = 0,
        world_size: int = 1,
        spec: InputSpecLike | None = None,
    ) -> ImageNetSource:
        """Build the source from `data_path`, `val_path`, `real_path` and friends.

        `spec` is the model's input (`mile_engine.models.input_spec`); None gives
        ImageNet's usual one at `image_size`.
        """
        return cls(
            Path(settings.data_path).expanduser(),
            Path(settings.val_path).expanduser(),
            Path(settings.real_path).expanduser(),
            batch_size=settings.batch_size,
            image_size=settings.image_size,
            num_workers=settings.num_workers,
            device=device,
            seed=settings.seed,
            progress=progress,
            warn=warn,
            rank=rank,
            world_size=world_size,
            decode=settings.decode,
            spec=spec,
            crop=settings.crop,
        )
