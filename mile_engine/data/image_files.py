"""Image files as DataLoader datasets: what the worker processes do for ImageNet and
the user's folders (`file_source.FileSource`).

Two datasets share one rule for undecodable files:

- `ImageFiles` (`decode = "workers"`): PIL decodes each file to RGB whatever its real
  format, and the transform crops it to uint8 [3, S, S].
- `JpegFiles` (`decode = "device"`): the worker reads the file's bytes and its header and
  draws the crop; the device decodes the batch later (`mile_engine.data.jpeg`). Files the
  device decoder does not take are decoded here, as `ImageFiles` does.

A file that cannot be decoded is recorded as (path, reason). In training the next
decodable file takes its place (the batch keeps its size); in validation its index is -1
and the batch drops the row (every image is scored once at most).

Both datasets, and `mile-tui predict`, open image files with `open_image`, which refuses
one larger than `MAX_PIXELS` from its header, before any pixel is decoded, and convert
them with `pil_convert`, which scales high bit depths to the 8 bits the models train on:

- integer samples (16-bit PNG, PGM and TIFF, 32-bit TIFF: PIL modes `I;16*` and `I`) are
  scaled from their format's full range, 0 = black to the largest value the samples can
  hold = white, as the PNG and TIFF specifications define them (2**bits - 1, or
  2**(bits-1) - 1 for a signed TIFF; a TIFF's bits are its BitsPerSample; PNG and PGM hold
  at most 16; other formats the 32 signed bits of PIL's `I`); a sample outside that
  range (a negative one) is refused;
- float samples (PIL mode `F`, float TIFF) are used as they are when all of them lie in
  [0, 1], the usual range of float images; any other float image is refused, since
  nothing in the file says which value is white (stretching its min..max would invent
  a contrast the picture may not have).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Generic, TypeVar

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from mile_engine.config.schema import Crop, SettingsError
from mile_engine.config.validation import shown_path
from mile_engine.data.jpeg import Box, random_resized_box, whole_box
from mile_engine.model_inputs import VAL_RESIZE

# A training sample that cannot be decoded is replaced by the next decodable file; this
# many failures in a row mean the data set itself is broken.
MAX_SUBSTITUTES = 64
# Files decoded before a run starts, spread over each folder: enough to tell a folder of
# images from one of something else, a fraction of a second.
PROBE = 16
# Python exceptions PIL raises on files it cannot decode (UnidentifiedImageError and
# "image file is truncated" are OSErrors; DecompressionBombError is an Exception;
# ImageRefused is a ValueError).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
# Colour modes the device decoder turns into RGB itself; others go through PIL.
DEVICE_MODES = frozenset({"RGB", "L"})
# The largest image decoded, in pixels: PIL's default decompression-bomb limit (2**30 / 4 /
# 3, about 89 megapixels: 268 MB as RGB). PIL itself only warns between this and twice
# it; we refuse from the header. ImageNet's largest photos have under 20 megapixels.
MAX_PIXELS = 89_478_485
# The most elongated image decoded, long side over short side. A 2,000,000 x 1 PNG is
# 323 bytes and under MAX_PIXELS, but resizing its short side to 256 asks for 512
# megapixels. Wide panoramas are under 20:1.
MAX_ASPECT = 100
# The most pixels a validation resize may produce before its centre crop: the long side is
# capped (torchvision's `max_size`) so that short side x long side stays under this.
MAX_RESIZED_PIXELS = 1 << 24
# PIL modes with more than 8 bits per sample, which PIL's convert() would clip.
HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# Formats whose integer samples have at most 16 bits (PIL opens 16-bit PGM files, and
# before Pillow 10 16-bit PNGs, in the 32-bit mode I).
SIXTEEN_BIT_FORMATS = frozenset({"PNG", "PPM"})
TIFF_BITS_PER_SAMPLE = 258
TIFF_SAMPLE_FORMAT = 339  # 1 unsigned integer, 2 signed integer, 3 float

Skipped = list[tuple[str, str]]
"""Undecodable files met while producing a sample: (path, reason)."""


class ImageRefused(ValueError):
    """An image file we decline to decode: too large, or samples with no known white."""


def _too_large(size: str) -> ImageRefused:
    return ImageRefused(f"image too large: {size} is over the limit of "
                        f"{MAX_PIXELS / 1e6:.1f} megapixels")


@contextlib.contextmanager
def open_image(file: str | IO[bytes]) -> Iterator[Image.Image]:
    """Open an image file lazily (its header, not its pixels) and close it afterwards.

    Raises:
        ImageRefused: the header claims more than `MAX_PIXELS` pixels; nothing is decoded.
        One of DECODE_ERRORS: PIL does not know the file.
    """
    with warnings.catch_warnings():
        # Refused below: PIL's warning for images above its limit would only add noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(file)
        except Image.DecompressionBombError as exc:
            # Above twice PIL's limit PIL refuses in open(), before we see the size.
            claimed = re.search(r"\((\d+) pixels\)", str(exc))
            raise _too_large(f"{int(claimed[1]) / 1e6:.1f} megapixels" if claimed
                             else "its size") from None
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise _too_large(f"{width} x {height} pixels ({width * height / 1e6:.1f} "
                             "megapixels)")
        if max(width, height) > MAX_ASPECT * max(min(width, height), 1):
            raise ImageRefused(
                f"image too elongated: {width} x {height} pixels, over the limit of "
                f"{MAX_ASPECT}:1 between its sides")
        yield image


def white_level(image: Image.Image) -> int:
    """The value of white for an integer image: its format's full range (see above)."""
    if image.format == "TIFF":
        tags = image.tag_v2  # type: ignore[attr-defined]
        bits = _first(tags.get(TIFF_BITS_PER_SAMPLE), 16 if image.mode != "I" else 32)
        signed = _first(tags.get(TIFF_SAMPLE_FORMAT), 1) == 2
        return 2 ** (bits - 1 if signed else bits) - 1
    if image.mode != "I" or image.format in SIXTEEN_BIT_FORMATS:
        return 2 ** 16 - 1
    return 2 ** 31 - 1


def _first(value: object, default: int) -> int:
    """A TIFF tag's first number (PIL gives one number or a tuple per sample)."""
    if isinstance(value, tuple):
        value = value[0] if value else None
    return int(value) if isinstance(value, int) else default


def to_8bit(image: Image.Image) -> Image.Image:
    """An image with 8-bit samples: high bit depths scaled to 0..255 (rounded), others as
    they are.

    Raises:
        ImageRefused: float samples outside [0, 1] (or not finite), or integer samples
            outside 0..white.
    """
    if image.mode not in HIGH_DEPTH_MODES:
        return image
    if image.mode == "F":
        values = _samples(image, torch.float32)
        if not bool(torch.isfinite(values).all()):
            raise ImageRefused("float image with NaN or infinite samples")
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            raise ImageRefused(
                f"float image with samples from {low:g} to {high:g}: only [0, 1] has a "
                "known white; save it scaled to [0, 1], or as an 8- or 16-bit image")
        scaled = values.mul_(255.0)
    else:
        white = white_level(image)
        values = _samples(image.convert("I"), torch.int32)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > white:
            raise ImageRefused(f"integer image with samples from {low} to {high}, outside "
                               f"its format's range 0..{white}")
        # float64: exact for every 32-bit sample, so 16-bit 257*v maps to exactly v.
        scaled = values.double().mul_(255.0).div_(white)
    pixels = scaled.round_().to(torch.uint8)
    return Image.frombytes("L", image.size, pixels.numpy().tobytes())


def _samples(image: Image.Image, dtype: torch.dtype) -> torch.Tensor:
    """The samples of a one-band PIL image (mode I or F) as a flat tensor."""
    return torch.frombuffer(bytearray(image.tobytes()), dtype=dtype)


def pil_convert(image: Image.Image, mode: str) -> Image.Image:
    """Convert any PIL image to the 8-bit `mode` ("RGB" or "L"), high bit depths scaled.

    Raises:
        ImageRefused: a high-bit-depth image without a known white (see `to_8bit`).
    """
    image = to_8bit(image)
    with warnings.catch_warnings():
        # Palette images with transparency warn on convert; the pixels are still right.
        warnings.simplefilter("ignore", UserWarning)
        return image.convert(mode)


def pil_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB (high bit depths scaled, see `to_8bit`)."""
    return pil_convert(image, "RGB")


def decode_rgb(path: str) -> Image.Image:
    """Decode any image file PIL knows (whatever its extension says) to RGB.

    Raises:
        One of DECODE_ERRORS: the file is too large, unreadable or not an image.
    """
    with open_image(path) as image:
        return pil_rgb(image)


def train_transform(
    size: int, crop: Crop = "random-resized"
) -> Callable[[Image.Image], torch.Tensor]:
    """Training: RandomResizedCrop (`crop = "random-resized"`) or the whole image resized
    to `size` x `size` (`"whole"`), then a horizontal flip, to uint8 (normalised later, on
    the device)."""
    cut: T.Transform = (T.RandomResizedCrop(size, antialias=True) if crop == "random-resized"
                        else T.Resize((size, size), antialias=True))
    return T.Compose([cut, T.RandomHorizontalFlip(), T.PILToTensor()])


def val_transform(
    size: int, resize: int | None = None, crop: Crop = "random-resized"
) -> Callable[[Image.Image], torch.Tensor]:
    """Validation: the shorter side resized to `resize` (the usual 256/224 of the crop when
    None), then a centre crop of `size` (`crop = "random-resized"`); or the whole image
    resized to `size` x `size` (`"whole"`, `resize` unused). To uint8."""
    if crop == "whole":
        return T.Compose([T.Resize((size, size), antialias=True), T.PILToTensor()])
    resize = resize or round(size * VAL_RESIZE)
    longest = max(resize + 1, MAX_RESIZED_PIXELS // resize)
    return T.Compose([T.Resize(resize, max_size=longest, antialias=True), T.CenterCrop(size),
                      T.PILToTensor()])


def centre_crop_box(height: int, width: int, size: int, resize: int | None) -> Box:
    """The source region `val_transform(size, resize)` keeps (for resize None, the region
    `jpeg.centre_box` gives)."""
    resize = resize or round(size * VAL_RESIZE)
    side = max(1, min(round(min(height, width) * size / resize), height, width))
    return (height - side) // 2, (width - side) // 2, side, side


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
    the PIL path's transform, used for files the device decoder does not take; `resize`
    the side validation images are resized to before their centre crop (as in
    `val_transform`); `crop` as in `train_transform` and `val_transform` ("whole": the
    whole image, flipped at random in training).
    """

    def __init__(
        self, root: str, paths: Sequence[str], transform: Callable[[Image.Image], torch.Tensor],
        size: int, substitute: bool, train: bool, resize: int | None = None,
        crop: Crop = "random-resized",
    ) -> None:
        super().__init__(root, paths, transform, size, substitute)
        self.train = train
        self.resize = resize
        self.crop = crop

    def load(self, path: str) -> Encoded:
        with open(path, "rb") as f:
            data = f.read()
        with open_image(io.BytesIO(data)) as image:  # parses the header, not the pixels
            if image.format != "JPEG" or image.mode not in DEVICE_MODES:
                return self.transform(pil_rgb(image)), (0, 0, 0, 0), False
            width, height = image.size
        if self.crop == "whole":
            box = whole_box(height, width)
            flip = self.train and bool(torch.rand(()) < 0.5)
        elif self.train:
            box, flip = random_resized_box(height, width), bool(torch.rand(()) < 0.5)
        else:
            box, flip = centre_crop_box(height, width, self.size, self.resize), False
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


def probe_decoding(key: str, root: Path, paths: Sequence[str], hint: str = "",
                   tries: int = PROBE) -> None:
    """Decode up to `tries` files spread over `paths`; refuse a folder where none of
    them decodes, before a run folder is made (training would die at its first batch,
    an evaluation at its first image). Some files that do not decode are fine: a run
    skips and counts them. `hint`, if any, ends the message: what to do next.

    Raises:
        SettingsError: not one file tried decodes; the message names one and why.
    """
    if not paths:
        return
    n = min(tries, len(paths))
    picks = sorted({round(i * (len(paths) - 1) / max(n - 1, 1)) for i in range(n)})
    failures: list[tuple[str, str]] = []
    for index in picks:
        rel = paths[index]
        try:
            decode_rgb(os.path.join(root, rel))
        except DECODE_ERRORS as exc:
            failures.append((rel, f"{type(exc).__name__}: {exc}"))
        else:
            return
    rel, reason = failures[0]
    images = "image" if len(picks) == 1 else "images"
    raise SettingsError(
        f"{key} '{shown_path(root)}': none of the {len(picks)} {images} tried can be "
        f"decoded ({rel}: {reason})" + (f"; {hint}." if hint else ".")
    )
