"""ImageNet (ILSVRC2012) with ReaL labels as a data source.

- Files: the train folder's class sub-folders and the validation files in ReaL order
  (`imagenet_files`, which says how they are found); each validation image's ReaL set
  (`real_labels`). Without original validation labels top-1 is reported as NaN.
- Decoding (`decode`): either the DataLoader workers decode with PIL and crop to uint8
  (`workers`), or they only read the bytes and draw the crops while the training device
  decodes whole batches (`device`: nvjpeg on CUDA; `mile_engine.data.jpeg`). Whatever a
  file's real format, it ends as RGB. A file that cannot be decoded is skipped and
  counted (`skipped_files`) and reported through `warn`; a multi-day run does not die on
  one bad JPEG. Normalisation runs batched on the training device.

The public names of `imagenet_files` and `real_labels` are re-exported here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Sampler

from mile_engine.config import Decode, Settings, SettingsError
from mile_engine.data.batch import Batch, ValSample
from mile_engine.data.idx import Progress
from mile_engine.data.image_files import (
    ImageFiles,
    JpegFiles,
    collate,
    collate_jpeg,
    train_transform,
    val_transform,
)
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
from mile_engine.data.jpeg import decode_batch, probe_device_decode
from mile_engine.data.real_labels import (
    NUM_CLASSES,
    load_real,
    multi_hot,
    real_table,
    validate_real,
)

log = logging.getLogger(__name__)

Warn = Callable[[str], None]
"""Receives one line for the user's log (a skipped file, a note about the data)."""

DEFAULT_SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

__all__ = [
    "DEFAULT_SIZE", "IMAGE_EXTENSIONS", "LABEL_FILES", "MEAN", "NUM_CLASSES", "STD",
    "EpochSampler", "ImageNetSource", "TrainIndex", "ValIndex", "find_label_file",
    "is_image_name", "load_real", "multi_hot", "read_loc_solution", "read_val_labels",
    "real_table", "resolve_decode", "scan_train", "scan_val", "validate_real",
]


# ---------------------------------------------------------------------- the order


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, started `start` samples in (for exact resume)."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size = size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def permutation(self, epoch: int) -> torch.Tensor:
        """This rank's order in epoch `epoch`: a function of the seed and the epoch only.

        Like DistributedSampler with set_epoch: every rank draws the same permutation,
        trimmed to a multiple of the world size, and takes every world_size-th index.
        """
        generator = torch.Generator().manual_seed((self.seed << 16) + epoch)
        order = torch.randperm(self.size, generator=generator)
        usable = self.size - self.size % self.world_size
        return order[:usable][self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation(self.epoch)[self.start:].tolist())

    def __len__(self) -> int:
        return self.size // self.world_size - self.start


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


class ImageNetSource:
    """ILSVRC2012 train images for training, validation images with ReaL sets for evaluation.

    Attributes:
        num_classes: always 1000 (ReaL's class ids index the 1000 sorted wnids).
        decode: "workers" or "device", where JPEGs are decoded (`resolve_decode`).
        class_names: the wnids of the train folder (padded when it has fewer than 1000).
        skipped_files: undecodable files met so far, path -> reason.
        notes: remarks about the data found at start-up (also sent to `warn`).
        epoch, batches: the position in the training stream.
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
    ) -> None:
        self.device = device
        self.batch_size = batch_size
        self.size = image_size or DEFAULT_SIZE
        self.num_workers = num_workers
        self.seed = seed
        self.warn: Warn = warn or (lambda text: log.warning("%s", text))
        self.skipped_files: dict[str, str] = {}
        self.notes: list[str] = []

        train = scan_train(data_path, cache, progress)
        val = scan_val(val_path, train.classes, progress)
        table = real_table(load_real(real_path), val.real_index, f"real_path '{real_path}'")
        if len(train.paths) // world_size < batch_size:
            raise SettingsError(
                f"data_path '{data_path}' holds {len(train.paths)} images, fewer than "
                f"batch_size = {batch_size}."
            )
        self.num_classes = NUM_CLASSES
        self.class_names = train.classes + [
            f"class-{i}" for i in range(len(train.classes), NUM_CLASSES)
        ]
        self.train_size, self.val_size = len(train.paths), len(val.paths)
        self.label_source = val.label_source
        if len(train.classes) != NUM_CLASSES:
            self._note(
                f"data_path holds {len(train.classes)} class folders, not {NUM_CLASSES}: "
                "class ids follow their sorted names, and ReaL labels assume all 1000."
            )
        if val.label_source == "none":
            self._note(
                f"val_path '{val_path}' is flat and has no LOC_val_solution.csv or "
                "val_labels.txt: top-1 accuracy is unavailable (NaN); ReaL metrics work."
            )

        self._train_labels = train.labels
        self._val_labels = val.labels
        self._val_real = table
        self._mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255
        self._sampler = EpochSampler(self.train_size, seed, rank, world_size)
        self.epoch = 0
        self.batches = 0
        self.decode, fallback_note = resolve_decode(decode, device)
        if fallback_note:
            self._note(fallback_note)
        self._train_data = self._files(str(data_path), train.paths, train=True)
        self._val_data = self._files("", val.paths, train=False)
        self._collate = collate_jpeg if self.decode == "device" else collate
        self._train_loader = self._loader(self._train_data, batch_size, self._sampler)
        self._train_iter: Iterator[Any] | None = None
        self._val_loaders: dict[tuple[int, int, int], DataLoader[Any]] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        device: torch.device,
        progress: Progress | None = None,
        warn: Warn | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> ImageNetSource:
        """Build the source from `data_path`, `val_path`, `real_path` and friends."""
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
        )

    # ------------------------------------------------------------------ helpers
    def _note(self, text: str) -> None:
        self.notes.append(text)
        self.warn(text)

    def _files(self, root: str, paths: Sequence[str], train: bool) -> ImageFiles | JpegFiles:
        """The loader's dataset: training files are substituted when undecodable."""
        transform = (train_transform if train else val_transform)(self.size)
        if self.decode == "device":
            return JpegFiles(root, paths, transform, self.size, substitute=train, train=train)
        return ImageFiles(root, paths, transform, self.size, substitute=train)

    def _loader(
        self, data: ImageFiles | JpegFiles, batch_size: int, sampler: Sampler[int] | None
    ) -> DataLoader[Any]:
        workers = self.num_workers
        return DataLoader(
            data,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            drop_last=sampler is not None,  # constant training batches; every val image
            num_workers=workers,
            collate_fn=self._collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _record_skips(self, skipped: list[tuple[str, str]]) -> None:
        for path, reason in skipped:
            if path not in self.skipped_files:
                self.skipped_files[path] = reason
                self.warn(
                    f"skipped an undecodable image ({len(self.skipped_files)} so far): "
                    f"{path}: {reason}"
                )

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).float()
        return (x - self._mean) / self._std

    def _images(
        self, batch: tuple[Any, ...], data: ImageFiles | JpegFiles
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A loader batch as (images 0..255 on the device, file indices, decoded rows).

        Skipped files are recorded. With decode = "workers" every row is decoded already;
        with "device" the batch is decoded here, and rows no decoder can read are False.
        """
        if self.decode == "workers":
            images, index, skipped = batch
            self._record_skips(skipped)
            return images, index, torch.ones(len(index), dtype=torch.bool)
        payloads, boxes, flips, index, skipped = batch
        self._record_skips(skipped)
        images, ok, failures = decode_batch(payloads, boxes, flips, self.size, self.device)
        self._record_skips([(data.path(int(index[row])), why) for row, why in failures.items()])
        return images, index, ok

    # ------------------------------------------------------------------ DataSource
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one crop as the model sees it."""
        return 3, self.size, self.size

    def train_batch(self) -> Batch:
        """The next training batch (real=None: training images have no ReaL sets)."""
        while True:
            if self._train_iter is None:
                self._sampler.epoch = self.epoch
                self._sampler.start = self.batches * self.batch_size
                self._train_iter = iter(self._train_loader)
            try:
                loaded = next(self._train_iter)
            except StopIteration:
                self.epoch, self.batches, self._train_iter = self.epoch + 1, 0, None
                continue
            self.batches += 1
            images, index, ok = self._images(loaded, self._train_data)
            if not bool(ok.any()):
                continue  # not one decodable file: the next batch
            if not bool(ok.all()):
                # Rows the device could not decode take a decoded row's place, so the
                # batch keeps its size, as the workers' substitution does.
                rows, fill = torch.arange(len(ok)), ok.nonzero().flatten()
                take = torch.where(ok, rows, fill[rows % len(fill)])
                images, index = images[take.to(images.device)], index[take]
            labels = self._train_labels[index].to(self.device, non_blocking=True)
            return Batch(self._normalise(images), labels, None)

    def val_batches(
        self, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[Batch]:
        """Every decodable validation image, in ReaL order, with its ReaL multi-hot.

        Batch `i` (images `i * batch_size` onwards) goes to rank `i % world_size`.
        """
        key = (batch_size, rank, world_size)
        if key not in self._val_loaders:
            self._val_loaders[key] = self._val_loader(batch_size, rank, world_size)
        for loaded in self._val_loaders[key]:
            images, index, ok = self._images(loaded, self._val_data)
            keep = (index >= 0) & ok
            if not bool(keep.all()):
                images, index = images[keep.to(images.device)], index[keep]
            if not len(index):
                continue
            yield Batch(
                self._normalise(images),
                self._val_labels[index].to(self.device),
                multi_hot(self._val_real[index].to(self.device)),
            )

    def _val_loader(self, batch_size: int, rank: int, world_size: int) -> DataLoader[Any]:
        if world_size == 1:
            return self._loader(self._val_data, batch_size, None)
        starts = range(rank * batch_size, self.val_size, batch_size * world_size)
        batches = [list(range(s, min(s + batch_size, self.val_size))) for s in starts]
        return DataLoader(
            self._val_data,
            batch_sampler=batches,
            num_workers=self.num_workers,
            collate_fn=self._collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.num_workers > 0,
        )

    def val_targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels [N] (-1 = unknown) and ReaL sets bool [N, 1000] of every validation file."""
        return self._val_labels.to(self.device), multi_hot(self._val_real.to(self.device))

    def validation_sample(self, index: int) -> ValSample | None:
        """Validation file `index` decoded and normalised as its validation batch is.

        None when the file cannot be decoded (it is reported through `warn`).
        """
        item: Any = self._val_data[index]  # its type follows `decode`, as `_collate`'s
        loaded = self._collate([item])
        images, rows, ok = self._images(loaded, self._val_data)
        if int(rows[0]) < 0 or not bool(ok[0]):
            return None
        real = sorted({int(r) for r in self._val_real[index].tolist() if r >= 0})
        pixels = images[0].cpu()
        if pixels.dtype != torch.uint8:  # the device decoder hands out floats 0..255
            pixels = pixels.round().clamp(0, 255).to(torch.uint8)
        return ValSample(
            pixels.permute(1, 2, 0).contiguous(),
            self._normalise(images)[0].cpu(),
            int(self._val_labels[index]),
            real,
        )

    def state_dict(self) -> dict[str, Any]:
        """The data order: seed, epoch and batches consumed in it."""
        return {"seed": self.seed, "epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the training stream at the saved epoch and batch."""
        self.seed = self._sampler.seed = int(state["seed"])
        self.epoch, self.batches = int(state["epoch"]), int(state["batches"])
        self._train_iter = None

