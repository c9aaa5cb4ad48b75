"""Image files as DataLoader datasets: what the worker processes do for ImageNet.

Two datasets share one rule for undecodable files:

- `ImageFiles` (`decode = "workers"`): PIL decodes each file to RGB whatever its real
  format, and the transform crops it to uint8 [3, S, S].
- `JpegFiles` (`decode = "device"`): the worker reads the file's bytes and its header and
  draws the crop; the device decodes the batch later (`mile_engine.data.jpeg`). Files the
  device decoder does not take are decoded here, as `ImageFiles` does.

A file that cannot be decoded is recorded as (path, reason). In training the next
decodable file takes its place (the batch keeps its size); in validation its index is -1
and the batch drops the row (every image is scored once at most).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from mile_engine.data.jpeg import Box, centre_box, random_resized_box

# A training sample that cannot be decoded is replaced by the next decodable file; this
# many failures in a row mean the data set itself is broken.
MAX_SUBSTITUTES = 64
# Python exceptions PIL raises on files it cannot decode (UnidentifiedImageError and
# "image file is truncated" are OSErrors; DecompressionBombError is an Exception).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
# Colour modes the device decoder turns into RGB itself; others go through PIL.
DEVICE_MODES = frozenset({"RGB", "L"})

Skipped = list[tuple[str, str]]
"""Undecodable files met while producing a sample: (path, reason)."""


def pil_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image to RGB."""
    with warnings.catch_warnings():
        # Palette images with transparency warn on convert; the pixels are still right.
        warnings.simplefilter("ignore", UserWarning)
        return image.convert("RGB")


def decode_rgb(path: str) -> Image.Image:
    """Decode any image file PIL knows (whatever its extension says) to RGB."""
    with Image.open(path) as image:
        return pil_rgb(image)


def train_transform(size: int) -> Callable[[Image.Image], torch.Tensor]:
    """RandomResizedCrop + horizontal flip, to uint8 (normalised later, on the device)."""
    return T.Compose([T.RandomResizedCrop(size, antialias=True), T.RandomHorizontalFlip(),
                      T.PILToTensor()])


def val_transform(size: int) -> Callable[[Image.Image], torch.Tensor]:
    """The usual resize to 256/224 of the crop, then a centre crop, to uint8."""
    return T.Compose([T.Resize(round(size * 256 / 224), antialias=True), T.CenterCrop(size),
                      T.PILToTensor()])


class StringTable:
    """Many strings in two tensors: DataLoader workers that read them do not touch Python
    reference counts, so forked workers do not copy the 1.28 M-path list page by page."""

    def __init__(self, strings: Sequence[str]) -> None:
        encoded = [s.encode("utf-8") for s in strings]
        # One spare byte: torch.frombuffer refuses an empty buffer.
        self.blob = torch.frombuffer(bytearray(b"".join(encoded) + b"\0"), dtype=torch.uint8)
        lengths = torch.tensor([len(e) for e in encoded], dtype=torch.int64)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return bytes(self.blob[start:end].numpy()).decode("utf-8")


Item = TypeVar("Item")


class _Files(Dataset[tuple[Item, int, Skipped]], Generic[Item]):
    """An item per file, with the index of the file actually used and the files skipped."""

    def __init__(
        self, root: str, paths: Sequence[str], transform: Callable[[Image.Image], torch.Tensor],
        size: int, substitute: bool,
    ) -> None:
        self.root = root
        self.paths = StringTable(paths)
        self.transform = transform
        self.size = size
        self.substitute = substitute

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> str:
        """The full path of file `index`."""
        return os.path.join(self.root, self.paths[index])

    def load(self, path: str) -> Item:
        """Read one file; raises one of DECODE_ERRORS when it cannot be decoded."""
        raise NotImplementedError

    def failed(self) -> Item:
        """The placeholder item of a validation file that cannot be decoded."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Item, int, Skipped]:
        skipped: Skipped = []
        tries = MAX_SUBSTITUTES if self.substitute else 1
        for k in range(tries):
            i = (index + k) % len(self.paths)
            path = self.path(i)
            try:
                return self.load(path), i, skipped
            except DECODE_ERRORS as exc:
                skipped.append((path, f"{type(exc).__name__}: {exc}"))
        if self.substitute:
            raise RuntimeError(
                f"{MAX_SUBSTITUTES} undecodable images in a row from {skipped[0][0]}; "
                "the data set looks broken."
            )
        return self.failed(), -1, skipped


class ImageFiles(_Files[torch.Tensor]):
    """Files decoded by PIL and transformed to uint8 [3, S, S]."""

    def load(self, path: str) -> torch.Tensor:
        return self.transform(decode_rgb(path))

    def failed(self) -> torch.Tensor:
        return torch.zeros(3, self.size, self.size, dtype=torch.uint8)


Encoded = tuple[torch.Tensor, Box, bool]
"""(payload, crop box, flip). With box height > 0 the payload is the file's bytes (uint8
[n]) to decode on the device; with height 0 it is already the final uint8 [3, S, S]."""


class JpegFiles(_Files[Encoded]):
    """JPEG bytes with the crop and flip to apply after decoding, or PIL-decoded pixels.

    Crops and flips are drawn from torch's global generator, which the DataLoader seeds
    per worker, so they follow the run's seed as those of `ImageFiles` do. `transform` is
    the PIL path's transform, used for files the device decoder does not take.
    """

    def __init__(
        self, root: str, paths: Sequence[str], transform: Callable[[Image.Image], torch.Tensor],
        size: int, substitute: bool, train: bool,
    ) -> None:
        super().__init__(root, paths, transform, size, substitute)
        self.train = train

    def load(self, path: str) -> Encoded:
        with open(path, "rb") as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as image:  # parses the header, not the pixels
            if image.format != "JPEG" or image.mode not in DEVICE_MODES:
                return self.transform(pil_rgb(image)), (0, 0, 0, 0), False
            width, height = image.size
        if self.train:
            box, flip = random_resized_box(height, width), bool(torch.rand(()) < 0.5)
        else:
            box, flip = centre_box(height, width, self.size), False
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), box, flip

    def failed(self) -> Encoded:
        return torch.zeros(3, self.size, self.size, dtype=torch.uint8), (0, 0, 0, 0), False


ImageBatch = tuple[torch.Tensor, torch.Tensor, Skipped]
JpegBatch = tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, Skipped]


def collate(samples: list[tuple[torch.Tensor, int, Skipped]]) -> ImageBatch:
    """Stack images and indices; gather the skipped files of the whole batch."""
    images = torch.stack([s[0] for s in samples])
    index = torch.tensor([s[1] for s in samples], dtype=torch.int64)
    return images, index, [skip for s in samples for skip in s[2]]


def collate_jpeg(samples: list[tuple[Encoded, int, Skipped]]) -> JpegBatch:
    """Payloads as a list (their lengths differ); boxes, flips and indices as tensors."""
    return (
        [s[0][0] for s in samples],
        torch.tensor([s[0][1] for s in samples], dtype=torch.int64).view(-1, 4),
        torch.tensor([s[0][2] for s in samples], dtype=torch.bool),
        torch.tensor([s[1] for s in samples], dtype=torch.int64),
        [skip for s in samples for skip in s[2]],
    )
