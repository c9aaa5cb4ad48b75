"""What every data source made of image files shares: ImageNet's and the user's folders.

A `FileSource` is given its files already indexed (training paths with their class,
validation paths with their label and label set) and does the rest the same way for
every such data set:

- the training order: a seeded permutation per epoch (`EpochSampler`), resumable to the
  batch, ranks of a torchrun job taking disjoint shards;
- loading in `num_workers` DataLoader processes, with the JPEG decoding either in the
  workers (`decode = "workers"`) or batched on the training device (`"device"`), see
  `mile_engine.data.image_files`;
- corrupt-file tolerance: an undecodable file is skipped, counted (`skipped_files`) and
  reported through `warn`, never fatal;
- resizing and cropping to the model's input (`InputSpec`: crop side, validation resize
  side) and normalisation with its mean and standard deviation, batched on the device.

`ImageNetSource` (`imagenet.py`) and `FolderSource` (`folder.py`) only find the files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch.utils.data import DataLoader, Sampler

from mile_engine.config.schema import Crop
from mile_engine.data.batch import Batch, ValSample
from mile_engine.data.image_files import (
    ImageFiles,
    JpegFiles,
    collate,
    collate_jpeg,
    train_transform,
    val_transform,
)
from mile_engine.data.jpeg import decode_batch
from mile_engine.data.real_labels import multi_hot
from mile_engine.model_inputs import MEAN, STD, VAL_RESIZE

log = logging.getLogger(__name__)

Warn = Callable[[str], None]
"""Receives one line for the user's log (a skipped file, a note about the data)."""

DEFAULT_SIZE = 224


class InputSpecLike(Protocol):
    """The model's input, as `mile_engine.models.InputSpec` gives it."""

    @property
    def image_size(self) -> int:
        """Side of the square crop the model sees."""
        ...

    @property
    def resize_size(self) -> int:
        """Validation: the shorter side is resized to this, then centre-cropped."""
        ...

    @property
    def mean(self) -> tuple[float, float, float]:
        """Per-channel mean of the 0..1 pixels, subtracted."""
        ...

    @property
    def std(self) -> tuple[float, float, float]:
        """Per-channel standard deviation of the 0..1 pixels, divided by."""
        ...


@dataclass(frozen=True)
class ImageNetInput:
    """ImageNet's usual input: a `size` crop, 256/224 of it for validation resizing, and
    ImageNet's mean and standard deviation (torchvision's weights use these)."""

    image_size: int = DEFAULT_SIZE
    resize_size: int = round(DEFAULT_SIZE * VAL_RESIZE)
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD

    @classmethod
    def of_size(cls, image_size: int) -> ImageNetInput:
        """The input at `image_size` (0 = 224), its resize side in proportion."""
        size = image_size or DEFAULT_SIZE
        return cls(size, round(size * VAL_RESIZE))


@dataclass(frozen=True)
class IndexedFiles:
    """The files of one split and what is known of each.

    Attributes:
        root: the folder the paths are relative to ("" when they are absolute).
        paths: one per file.
        labels: int64 [N], the single label; -1 where unknown.
        sets: int64 [N, K], each file's label set padded with -1 (an all -1 row: no
            class fits, left out of the ReaL metrics); validation, and training where a
            folder has `train_labels_path`.
    """

    root: str
    paths: Sequence[str]
    labels: torch.Tensor
    sets: torch.Tensor | None = None


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


class FileSource:
    """Training and validation image files as batches on the training device.

    Attributes:
        num_classes: the classes of the labels and of the label sets.
        class_names: a name per class.
        decode: "workers" or "device", where JPEGs are decoded.
        crop: "random-resized" (ImageNet's random crop; validation centre crop) or "whole"
            (the whole image resized, in training and validation).
        spec: the model's input (crop side, resize side, mean, std).
        size: the crop side (`spec.image_size`).
        skipped_files: undecodable files met so far, path -> reason.
        notes: remarks about the data found at start-up (also sent to `warn`).
        epoch, batches: the position in the training stream.
    """

    def __init__(
        self,
        train: IndexedFiles,
        val: IndexedFiles,
        num_classes: int,
        class_names: list[str],
        batch_size: int,
        spec: InputSpecLike,
        num_workers: int,
        device: torch.device,
        seed: int,
        warn: Warn | None = None,
        rank: int = 0,
        world_size: int = 1,
        decode: Literal["workers", "device"] = "workers",
        notes: Sequence[str] = (),
        crop: Crop = "random-resized",
    ) -> None:
        if val.sets is None:
            raise ValueError("validation files need their label sets")
        self.device = device
        self.batch_size = batch_size
        self.spec = spec
        self.size = spec.image_size
        self.num_workers = num_workers
        self.seed = seed
        self.warn: Warn = warn or (lambda text: log.warning("%s", text))
        self.skipped_files: dict[str, str] = {}
        self.notes: list[str] = []
        for text in notes:
            self._note(text)
        self.num_classes = num_classes
        self.class_names = class_names
        self.train_size, self.val_size = len(train.paths), len(val.paths)
        self._train_labels = train.labels
        self._train_real = train.sets  # the training images' true sets, where known
        self._val_labels = val.labels
        self._val_real = val.sets
        self._mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255
        self._sampler = EpochSampler(self.train_size, seed, rank, world_size)
        self.epoch = 0
        self.batches = 0
        self.decode = decode
        self.crop = crop
        self._train_data = self._files(train.root, train.paths, train=True)
        self._val_data = self._files(val.root, val.paths, train=False)
        self._collate = collate_jpeg if self.decode == "device" else collate
        self._train_loader = self._loader(self._train_data, batch_size, self._sampler)
        self._train_iter: Iterator[Any] | None = None
        self._val_loaders: dict[tuple[int, int, int], DataLoader[Any]] = {}

    # ------------------------------------------------------------------ helpers
    def _note(self, text: str) -> None:
        self.notes.append(text)
        self.warn(text)

    def _files(self, root: str, paths: Sequence[str], train: bool) -> ImageFiles | JpegFiles:
        """The loader's dataset: training files are substituted when undecodable."""
        resize = self.spec.resize_size
        transform = (train_transform(self.size, self.crop) if train
                     else val_transform(self.size, resize, self.crop))
        if self.decode == "device":
            return JpegFiles(root, paths, transform, self.size, substitute=train, train=train,
                             resize=resize, crop=self.crop)
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
        """The next training batch, with the images' label sets where the training split
        has them (a folder's `train_labels_path`), else real=None."""
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
            real = None
            if self._train_real is not None:  # only measured, never trained on
                real = multi_hot(self._train_real[index].to(self.device), self.num_classes)
            return Batch(self._normalise(images), labels, real)

    def val_batches(
        self, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[Batch]:
        """Every decodable validation image, in index order, with its label set.

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
                multi_hot(self._val_real[index].to(self.device), self.num_classes),
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
        """Labels [N] (-1 = unknown) and label sets bool [N, C] of every validation file."""
        return (self._val_labels.to(self.device),
                multi_hot(self._val_real.to(self.device), self.num_classes))

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

