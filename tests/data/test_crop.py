"""The `crop` setting of image-file sources: "whole" keeps every part of the image.

The image is a 90 x 60 grey picture with a differently coloured 15 x 15 patch in each
corner (a stand-in for a grid or a document whose labelled objects sit at the edges).
The expected colour of each corner is read back from the saved file with PIL, not
from the code under test; the batch's corner pixels must show it, in training (where
a horizontal flip swaps left and right) and in validation, in both decoders.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from PIL import Image

from mile_engine.config.schema import SettingsError
from mile_engine.config.validation import build_settings
from mile_engine.data.folder import FolderSource

CPU = torch.device("cpu")
WIDTH, HEIGHT, PATCH = 90, 60, 15
SIZE = 30
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
COLOURS = {"top-left": (230, 30, 30), "top-right": (30, 200, 30),
           "bottom-left": (30, 30, 230), "bottom-right": (230, 220, 30)}
MIRROR = {"top-left": "top-right", "top-right": "top-left",
          "bottom-left": "bottom-right", "bottom-right": "bottom-left"}
# The colours differ by far more than this; JPEG and resizing blur them by far less.
TOLERANCE = 30.0
DECODERS = pytest.mark.parametrize("decode", ["workers", "device"])
FORMATS = pytest.mark.parametrize("suffix", [".jpg", ".png"])


@dataclasses.dataclass(frozen=True)
class _Spec:
    image_size: int
    resize_size: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # batches hold pixels / 255
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


def corner_picture() -> Image.Image:
    picture = Image.new("RGB", (WIDTH, HEIGHT), (128, 128, 128))
    for corner, colour in COLOURS.items():
        left = 0 if corner.endswith("left") else WIDTH - PATCH
        top = 0 if corner.startswith("top") else HEIGHT - PATCH
        picture.paste(colour, (left, top, left + PATCH, top + PATCH))
    return picture


def write_tree(root: Path, suffix: str) -> tuple[Path, Path, Path]:
    """Six training copies (two classes) and one validation copy of the picture."""
    picture = corner_picture()
    train, val = root / "train", root / "val"
    for c in ("ant", "bee"):
        (train / c).mkdir(parents=True)
        for k in range(3):
            picture.save(train / c / f"{k}{suffix}", quality=95)
    (val / "ant").mkdir(parents=True)
    picture.save(val / "ant" / f"v{suffix}", quality=95)
    return train, val, val / "ant" / f"v{suffix}"


def expected_corners(path: Path) -> dict[str, torch.Tensor]:
    """Mean RGB of each corner patch's inner 9 x 9 pixels in the file as PIL decodes it."""
    with Image.open(path) as image:
        raw = bytearray(image.convert("RGB").tobytes())
    pixels = torch.frombuffer(raw, dtype=torch.uint8).float().view(HEIGHT, WIDTH, 3)
    inner = slice(3, PATCH - 3)
    inner_end = slice(-PATCH + 3, -3)
    return {
        corner: pixels[inner if corner.startswith("top") else inner_end,
                       inner if corner.endswith("left") else inner_end].mean((0, 1))
        for corner in CORNERS
    }


def batch_corners(image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean RGB (0..255) of each 2 x 2 corner of one batch image [3, S, S].

    A source patch of 15 px is 5 (across) and 7 (down) output pixels at 30 px: 2 x 2
    output pixels sit inside it, out of reach of the resize filter's blur."""
    pixels = image * 255.0
    start, end = slice(0, 2), slice(-2, None)
    return {
        corner: pixels[:, start if corner.startswith("top") else end,
                       start if corner.endswith("left") else end].reshape(3, -1).mean(1)
        for corner in CORNERS
    }


def orientation(image: torch.Tensor, expected: dict[str, torch.Tensor]) -> str | None:
    """"as is" or "mirrored" when all four corners show the file's colours in that
    layout, None when any corner is lost."""
    found = batch_corners(image)
    for name, layout in (("as is", {c: c for c in CORNERS}), ("mirrored", MIRROR)):
        if all(float((found[c] - expected[layout[c]]).abs().max()) < TOLERANCE
               for c in CORNERS):
            return name
    return None


def source(train: Path, val: Path, decode: str, crop: str) -> FolderSource:
    return FolderSource(
        train, val, None, batch_size=6, num_workers=0, device=CPU, seed=0,
        spec=_Spec(SIZE, round(SIZE * 256 / 224)), warn=lambda text: None,
        decode=decode,  # type: ignore[arg-type]
        crop=crop,  # type: ignore[arg-type]
    )


def test_the_picture_tells_its_corners_apart(tmp_path: Path) -> None:
    """The oracle can fail: no two corner colours are within the tolerance."""
    _, _, path = write_tree(tmp_path, ".jpg")
    expected = expected_corners(path)
    for a in CORNERS:
        assert float((expected[a] - torch.tensor(COLOURS[a])).abs().max()) < TOLERANCE
        for b in CORNERS:
            if a != b:
                assert float((expected[a] - expected[b]).abs().max()) > 2 * TOLERANCE


@DECODERS
@FORMATS
def test_whole_validation_keeps_all_four_corners(
    tmp_path: Path, decode: str, suffix: str
) -> None:
    train, val, path = write_tree(tmp_path, suffix)
    images = next(iter(source(train, val, decode, "whole").val_batches(1))).images
    assert images.shape == (1, 3, SIZE, SIZE)
    assert orientation(images[0], expected_corners(path)) == "as is"


@DECODERS
@FORMATS
def test_whole_training_keeps_all_four_corners_and_flips(
    tmp_path: Path, decode: str, suffix: str
) -> None:
    train, val, path = write_tree(tmp_path, suffix)
    src = source(train, val, decode, "whole")
    expected = expected_corners(path)
    seen = []
    for _ in range(2):  # two epochs of six: 12 coin flips
        images = src.train_batch().images
        assert images.shape == (6, 3, SIZE, SIZE)
        seen += [orientation(image, expected) for image in images]
    assert None not in seen
    assert set(seen) == {"as is", "mirrored"}  # the flip is kept


@DECODERS
def test_the_default_validation_crop_still_trims_the_corners(
    tmp_path: Path, decode: str
) -> None:
    """random-resized (the default) is unchanged: its centre crop of a 90 x 60 image
    keeps the middle 60 x 52 or so, which misses every 15 px corner patch."""
    train, val, path = write_tree(tmp_path, ".jpg")
    src = source(train, val, decode, "random-resized")
    images = next(iter(src.val_batches(1))).images
    assert orientation(images[0], expected_corners(path)) is None
    default = FolderSource(train, val, None, batch_size=6, num_workers=0, device=CPU,
                           seed=0, spec=_Spec(SIZE, round(SIZE * 256 / 224)),
                           warn=lambda text: None,
                           decode=decode)  # type: ignore[arg-type]
    assert default.crop == "random-resized"
    assert torch.equal(next(iter(default.val_batches(1))).images, images)


def test_the_setting() -> None:
    assert build_settings({}).crop == "random-resized"
    assert build_settings({"crop": "whole"}).crop == "whole"
    with pytest.raises(SettingsError, match="crop"):
        build_settings({"crop": "centre"})
