"""Hostile image files for `predict` and the ImageNet loaders: decompression bombs,
truncated and non-image files, and high bit depths (16-bit PNG and PGM, 32-bit integer
and float TIFF), which must reach the model as the same picture as an 8-bit file.

The expectation is always the picture itself, drawn here with numpy: each file holds it
in another encoding (16-bit: value x 257; float: value / 255), so an 8-bit decoding of
any of them must give back exactly the numpy array (or within one level where float
rounding enters).
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageFile
from typer.testing import CliRunner

from mile_engine.checkpoints import RunCheckpointer
from mile_engine.data import image_files
from mile_engine.data.image_files import ImageFiles, ImageRefused, JpegFiles, val_transform
from mile_engine.data.tiles import MEAN, STD
from mile_engine.reports import inference as inf
from mile_engine.trainer import Trainer
from mile_tui.cli import app
from tests.helpers.settings import tiny

SIDE = 24  # the digits grid's native side: no resizing between file and model
BIG = (10_000, 10_000)  # 100 MP: over our limit, under twice it (where PIL only warns)
HUGE = (20_000, 20_000)  # 400 MP: PIL itself refuses it in Image.open


def picture(side: int = SIDE, seed: int = 0) -> np.ndarray:
    """A grey picture using the whole 0..255 range (both ends included)."""
    values = np.random.default_rng(seed).integers(0, 256, size=(side, side), dtype=np.uint8)
    values.flat[:2] = (0, 255)
    return values


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def blank_png(width: int, height: int) -> bytes:
    """A complete, valid 1-bit PNG of any size: its zero rows compress to a few KB."""
    row = b"\0" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body)
            + png_chunk(b"IEND", b""))


def pgm16(values: np.ndarray) -> bytes:
    """A binary PGM with maxval 65535 (PIL opens it in the 32-bit mode I)."""
    height, width = values.shape
    return f"P5\n{width} {height}\n65535\n".encode() + values.astype(">u2").tobytes()


def signed_16_bit_tiff(values: np.ndarray) -> bytes:
    """A grey TIFF of signed 16-bit samples (PIL writes none; it opens one in mode I)."""
    height, width = values.shape
    data = values.astype("<i2").tobytes()
    short = {256: width, 257: height, 258: 16, 259: 1, 262: 1, 277: 1, 278: height, 339: 2}
    long = {273: 0, 279: len(data)}  # 273: where the pixels start, known below
    count = len(short) + len(long)
    long[273] = 8 + 2 + 12 * count + 4
    entries = sorted([struct.pack("<HHIHH", tag, 3, 1, v, 0) for tag, v in short.items()]
                     + [struct.pack("<HHII", tag, 4, 1, v) for tag, v in long.items()])
    return (b"II" + struct.pack("<HI", 42, 8) + struct.pack("<H", count) + b"".join(entries)
            + struct.pack("<I", 0) + data)


def encodings(pic: np.ndarray, folder: Path) -> dict[str, Path]:
    """The same picture as 8-bit PNG, 16-bit PNG and PGM, 32-bit int and float TIFF."""
    files = {
        "8-bit.png": Image.fromarray(pic),
        "16-bit.png": Image.fromarray(pic.astype(np.uint16) * 257),
        "16-bit.tif": Image.fromarray(pic.astype(np.uint16) * 257),
        "int32.tif": Image.fromarray(np.rint(pic / 255 * (2**31 - 1)).astype(np.int32)),
        "float.tif": Image.fromarray(pic.astype(np.float32) / 255),
    }
    paths = {}
    for name, image in files.items():
        paths[name] = folder / name
        image.save(paths[name])
    paths["16-bit.pgm"] = folder / "16-bit.pgm"
    paths["16-bit.pgm"].write_bytes(pgm16(pic.astype(np.uint16) * 257))
    # Signed: white is 2**15 - 1, not the 2**31 - 1 of PIL's mode I.
    paths["int16.tif"] = folder / "int16.tif"
    paths["int16.tif"].write_bytes(signed_16_bit_tiff(np.rint(pic / 255 * (2**15 - 1))))
    return paths


@pytest.fixture
def no_pixel_loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Make decoding an image over the pixel limit fail loudly, without decoding it."""
    loads: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile) -> object:
        if self.size[0] * self.size[1] > image_files.MAX_PIXELS:
            loads.append(self.size)
            raise AssertionError(f"decoded a {self.size} image")
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return loads


# ---------------------------------------------------------------------------- bit depths
def test_the_files_really_hold_high_bit_depths(tmp_path: Path) -> None:
    """Guard the fixtures: PIL must open them in the modes under test."""
    modes = {name: Image.open(path).mode for name, path in encodings(picture(), tmp_path).items()}
    assert modes == {"8-bit.png": "L", "16-bit.png": "I;16", "16-bit.tif": "I;16",
                     "int32.tif": "I", "float.tif": "F", "16-bit.pgm": "I",
                     "int16.tif": "I"}


def test_every_encoding_decodes_to_the_picture(tmp_path: Path) -> None:
    pic = picture()
    for name, path in encodings(pic, tmp_path).items():
        for mode in ("L", "RGB"):
            decoded = np.asarray(inf.read_image(path, mode))
            expected = pic if mode == "L" else np.repeat(pic[..., None], 3, axis=2)
            assert np.array_equal(decoded, expected), (name, mode)


def test_model_inputs_agree_with_the_picture_within_one_level(tmp_path: Path) -> None:
    """Grid input: (picture / 255 - MEAN) / STD, derived here; the ImageNet input of every
    encoding equals that of the 8-bit file."""
    pic = picture()
    expected = (torch.from_numpy(pic).double() / 255 - MEAN) / STD
    paths = encodings(pic, tmp_path)
    grid = tiny()
    imagenet = dataclasses.replace(tiny(), dataset="imagenet", model="resnet18", image_size=16)
    reference = inf.image_input(paths["8-bit.png"], imagenet)
    for name, path in paths.items():
        x = inf.image_input(path, grid)
        assert x.shape == (3, SIDE, SIDE)
        assert (x.double() - expected).abs().max() <= 1 / 255 / STD, name
        assert torch.equal(inf.image_input(path, imagenet), reference), name


def test_every_16_bit_sample_rounds_to_the_nearest_8_bit_level() -> None:
    values = np.arange(2**16, dtype=np.uint16).reshape(256, 256)  # all of them
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    with Image.open(buffer) as image:
        decoded = np.asarray(image_files.pil_convert(image, "L"))
    # The nearest level; never a tie, as 255 v / 65535 = v / 257 and 257 is odd.
    assert np.array_equal(decoded, np.rint(values / 257))


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 9), st.integers(1, 9)),
              elements=st.floats(0, 1, width=32)))
def test_float_samples_in_0_1_keep_their_level(values: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="TIFF")
    with Image.open(buffer) as image:
        decoded = np.asarray(image_files.pil_convert(image, "L")).astype(np.float64)
    assert np.abs(decoded - values.astype(np.float64) * 255).max() <= 0.5 + 1e-4


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B"])
def test_every_16_bit_mode_is_scaled(mode: str) -> None:
    pic = picture(8)
    dtype = ">u2" if mode == "I;16B" else "<u2"
    image = Image.frombytes(mode, (8, 8), (pic.astype(np.uint16) * 257).astype(dtype).tobytes())
    assert np.array_equal(np.asarray(image_files.pil_convert(image, "L")), pic)


@pytest.mark.parametrize("values, reason", [
    (np.array([[0.0, 1.5]], np.float32), "samples from 0 to 1.5"),
    (np.array([[-0.25, 0.5]], np.float32), "samples from -0.25 to 0.5"),
    (np.array([[np.nan, 0.5]], np.float32), "NaN"),
    (np.array([[np.inf, 0.5]], np.float32), "NaN or infinite"),
    (np.array([[-7, 100]], np.int32), "samples from -7 to 100, outside .* 0..2147483647"),
])
def test_samples_without_a_known_white_are_refused(
    tmp_path: Path, values: np.ndarray, reason: str
) -> None:
    path = tmp_path / "odd.tif"
    Image.fromarray(values).save(path)
    with pytest.raises(inf.InferenceError, match=f"odd.tif: refused: .*{reason}"):
        inf.read_image(path, "L")


@pytest.mark.parametrize("make", [
    lambda: Image.fromarray(picture(8)),
    lambda: Image.fromarray(np.stack([picture(8), picture(8, 1), picture(8, 2)], axis=2)),
    lambda: Image.fromarray(np.stack([picture(8, k) for k in range(4)], axis=2)),  # RGBA
    lambda: Image.frombytes("CMYK", (8, 8), np.stack([picture(8, k) for k in range(4)],
                                                     axis=2).tobytes()),
    lambda: Image.fromarray(picture(8)).convert("P"),
    lambda: Image.fromarray(picture(8)).convert("1"),
])
def test_8_bit_images_convert_as_pil_converts_them(
    tmp_path: Path, make: Callable[[], Image.Image]
) -> None:
    source = make()
    path = tmp_path / ("x.jpg" if source.mode == "CMYK" else "x.png")  # PNG has no CMYK
    source.save(path)
    for mode in ("L", "RGB"):
        with Image.open(path) as image:
            expected = np.asarray(image.convert(mode))
        assert np.array_equal(np.asarray(inf.read_image(path, mode)), expected), mode


# ---------------------------------------------------------------------------- size and junk
def test_a_bomb_is_refused_from_its_header(
    tmp_path: Path, no_pixel_loads: list[tuple[int, int]]
) -> None:
    for size, text in ((BIG, "10000 x 10000 pixels (100.0 megapixels)"),
                       (HUGE, "400.0 megapixels")):
        path = tmp_path / f"{size[0]}.png"
        path.write_bytes(blank_png(*size))
        assert path.stat().st_size < 100_000
        with pytest.raises(inf.InferenceError) as caught:
            inf.image_input(path, tiny())
        assert str(caught.value) == (f"{path}: refused: image too large: {text} is over "
                                     "the limit of 89.5 megapixels")
    assert no_pixel_loads == []


def test_the_pixel_limit_is_width_times_height(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image_files, "MAX_PIXELS", 40 * 30)
    # Long thin shapes stay within MAX_ASPECT, which has its own test below.
    for width, height in [(40, 30), (30, 40), (100, 12), (41, 30), (40, 31), (101, 12)]:
        path = tmp_path / f"{width}x{height}.png"
        Image.new("L", (width, height), 7).save(path)
        if width * height <= 40 * 30:
            assert inf.read_image(path, "L").size == (width, height)
        else:
            with pytest.raises(inf.InferenceError, match="too large"):
                inf.read_image(path, "L")


def junk_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files that are no usable image, with the words their error must hold."""
    whole = io.BytesIO()
    Image.fromarray(picture(64)).save(whole, format="PNG")
    truncated = folder / "truncated.png"
    truncated.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    text = folder / "notes.png"
    text.write_text("not an image\n")
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    sub = folder / "a-folder.png"
    sub.mkdir()
    return {
        "truncated": (truncated, "not a readable image"),
        "text": (text, "not a readable image"),
        "empty": (empty, "not a readable image"),
        "folder": (sub, "not a regular file"),
        "missing": (folder / "missing.png", "no such file"),
    }


def test_junk_files_give_one_line_reasons(tmp_path: Path) -> None:
    for name, (path, words) in junk_files(tmp_path).items():
        with pytest.raises(inf.InferenceError) as caught:
            inf.image_input(path, tiny())
        message = str(caught.value)
        assert message.startswith(f"{path}: {words}") and "\n" not in message, name


def test_any_decoder_error_is_one_files_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIL's plugins raise more than OSError on some malformed files."""
    path = tmp_path / "odd.png"
    Image.new("L", (4, 4)).save(path)

    def broken(*args: object, **kwargs: object) -> Image.Image:
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(Image, "open", broken)
    with pytest.raises(inf.InferenceError) as caught:
        inf.read_image(path, "L")
    assert str(caught.value) == (f"{path}: not a readable image (error: unpack requires a "
                                 "buffer of 4 bytes)")


# ---------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny digits checkpoint (its logits still depend on the picture)."""
    root = tmp_path_factory.mktemp("run")
    trainer = Trainer(tiny(checkpoint_path=str(root), k_t=2, k_s=2, val_size=16), root)
    return Path(RunCheckpointer(root, 3).save(trainer, "manual").path)


def test_predict_reports_each_bad_file_and_scores_the_others(
    checkpoint: Path, tmp_path: Path, no_pixel_loads: list[tuple[int, int]]
) -> None:
    pic = picture()
    good = encodings(pic, tmp_path)
    white = tmp_path / "white.png"
    Image.new("L", (SIDE, SIDE), 255).save(white)
    bombs = {"big": tmp_path / "big.png", "huge": tmp_path / "huge.png"}
    bombs["big"].write_bytes(blank_png(*BIG))
    bombs["huge"].write_bytes(blank_png(*HUGE))
    hot = tmp_path / "hot.tif"
    Image.fromarray(pic.astype(np.float32)).save(hot)  # 0..255 stored as float
    bad = {**{k: (p, "refused: image too large") for k, p in bombs.items()},
           "hot": (hot, "refused: float image"), **junk_files(tmp_path)}
    # Good files between bad ones: none is lost, the order is kept.
    order = [good["8-bit.png"], *[p for p, _ in bad.values()], *good.values(), white]
    result = CliRunner().invoke(app, ["predict", str(checkpoint), *map(str, order), "--json"])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    images = json.loads(result.stdout)["images"]
    assert [row["file"] for row in images] == [str(p) for p in order]
    rows = {row["file"]: row for row in images}
    for name, (path, words) in bad.items():
        assert "labels" not in rows[str(path)], name
        assert rows[str(path)]["error"].startswith(f"{path}: {words}"), name
    labels = {name: rows[str(path)]["labels"] for name, path in good.items()}
    assert all(found == labels["8-bit.png"] for found in labels.values()), labels
    # The model does look at the picture: a white one scores otherwise.
    assert rows[str(white)]["labels"] != labels["8-bit.png"]
    assert no_pixel_loads == []


def test_predict_table_names_the_reason_and_goes_on(checkpoint: Path, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(blank_png(*HUGE))
    good = encodings(picture(), tmp_path)["16-bit.png"]
    result = CliRunner().invoke(app, ["predict", str(checkpoint), str(bomb), str(good)])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output and "DecompressionBomb" not in result.output
    # Each reason whole on one line of stderr, however narrow the table.
    assert result.stderr.splitlines() == [
        f"error: {bomb}: refused: image too large: 400.0 megapixels is over the limit of "
        "89.5 megapixels"]
    assert "refused: image too large" in result.stdout  # in the table too
    assert re.search(r"│ [0-9] \(0\.[0-9]{2}\)", result.stdout)  # the good file's labels


# ---------------------------------------------------------------------------- ImageNet folders
def test_imagenet_datasets_decode_high_bit_depths_like_8_bit(tmp_path: Path) -> None:
    pic = np.stack([picture(40), picture(40, 1), picture(40, 2)], axis=2).mean(2)
    paths = encodings(pic.astype(np.uint8), tmp_path)
    names = [p.name for p in paths.values()]
    size = 16
    workers = ImageFiles(str(tmp_path), names, val_transform(size), size, substitute=False)
    device = JpegFiles(str(tmp_path), names, val_transform(size), size, substitute=False,
                       train=False)
    reference, _, _ = workers[0]
    for i, name in enumerate(names):
        item, index, skipped = workers[i]
        assert (index, skipped) == (i, []) and torch.equal(item, reference), name
        (payload, box, flip), index, skipped = device[i]
        assert box[2] == 0 and torch.equal(payload, reference), name  # PIL decoded it


def test_imagenet_datasets_skip_images_over_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_pixel_loads: list[tuple[int, int]]
) -> None:
    (tmp_path / "bomb.png").write_bytes(blank_png(*BIG))
    Image.new("RGB", (64, 48), (10, 20, 30)).save(tmp_path / "small.jpg")
    names = ["bomb.png", "small.jpg"]
    for kind in (ImageFiles, JpegFiles):
        extra: dict[str, Any] = {"train": False} if kind is JpegFiles else {}
        val = kind(str(tmp_path), names, val_transform(16), 16, substitute=False, **extra)
        _, index, skipped = val[0]
        assert index == -1 and "too large" in skipped[0][1], kind
        train = kind(str(tmp_path), names, val_transform(16), 16, substitute=True, **extra)
        _, index, skipped = train[0]
        assert index == 1 and [p for p, _ in skipped] == [str(tmp_path / "bomb.png")], kind
    # The device path refuses from the header too, whatever the format.
    monkeypatch.setattr(image_files, "MAX_PIXELS", 64 * 48 - 1)
    _, index, skipped = JpegFiles(str(tmp_path), ["small.jpg"], val_transform(16), 16,
                                  substitute=False, train=False)[0]
    assert index == -1 and "too large" in skipped[0][1]
    assert no_pixel_loads == []
    assert issubclass(ImageRefused, image_files.DECODE_ERRORS)


# ------------------------------------------------------------------ elongated images
# A 2,000,000 x 1 PNG is a few hundred bytes and under the pixel limit, but resizing its
# short side to 256 would ask for 512 megapixels: refused from the header by its sides'
# ratio (at most image_files.MAX_ASPECT : 1).
@pytest.mark.parametrize(("width", "height"), [
    (2_000_000, 1), (1, 2_000_000), (101, 1), (1, 101), (100, 1), (1, 100), (5_001, 50),
    (5_000, 50),
])
def test_elongated_images_are_refused_from_their_header(
    tmp_path: Path, width: int, height: int, no_pixel_loads: list[tuple[int, int]]
) -> None:
    path = tmp_path / f"{width}x{height}.png"
    path.write_bytes(blank_png(width, height))
    if max(width, height) > image_files.MAX_ASPECT * min(width, height):
        with pytest.raises(inf.InferenceError) as caught:
            inf.read_image(path, "L")
        assert str(caught.value) == (
            f"{path}: refused: image too elongated: {width} x {height} pixels, over the "
            f"limit of {image_files.MAX_ASPECT}:1 between its sides")
        assert no_pixel_loads == []
    else:
        assert inf.read_image(path, "L").size == (width, height)


def test_the_2_000_000_by_1_png_is_small_and_under_the_pixel_limit(tmp_path: Path) -> None:
    """Guard the fixture: the file is the one of the report, under the pixel limit."""
    data = blank_png(2_000_000, 1)
    assert len(data) < 1_000 and image_files.MAX_PIXELS > 2_000_000


def test_imagenet_datasets_skip_elongated_images(tmp_path: Path) -> None:
    (tmp_path / "line.png").write_bytes(blank_png(2_000_000, 1))
    Image.new("RGB", (64, 48), (10, 20, 30)).save(tmp_path / "small.jpg")
    names = ["line.png", "small.jpg"]
    for kind in (ImageFiles, JpegFiles):
        extra: dict[str, Any] = {"train": False} if kind is JpegFiles else {}
        val = kind(str(tmp_path), names, val_transform(16), 16, substitute=False, **extra)
        _, index, skipped = val[0]
        assert index == -1 and "too elongated" in skipped[0][1], kind
        train = kind(str(tmp_path), names, val_transform(16), 16, substitute=True, **extra)
        _, index, skipped = train[0]
        assert index == 1 and [p for p, _ in skipped] == [str(tmp_path / "line.png")], kind


@pytest.mark.parametrize(("size", "resize", "sides"), [
    (224, 2048, (10, 100)), (224, 2048, (100, 10)), (224, 256, (100, 1)), (224, 256, (3, 4)),
    (64, 4096, (1, 50)),
])
def test_the_validation_resize_is_bounded_whatever_the_sides(
    size: int, resize: int, sides: tuple[int, int]
) -> None:
    image = Image.new("RGB", sides, (1, 2, 3))
    transform = val_transform(size, resize)
    resized = transform.transforms[0](image)  # type: ignore[attr-defined]
    width, height = resized.size
    assert width * height <= image_files.MAX_RESIZED_PIXELS
    # The short side reaches `resize` unless the long one had to stop short of it.
    short, long_ = sorted(sides)
    if long_ * resize // short <= image_files.MAX_RESIZED_PIXELS // resize:
        assert min(width, height) == resize
    assert tuple(transform(image).shape) == (3, size, size)


def test_predict_reports_an_elongated_image_and_scores_the_good_one(
    checkpoint: Path, tmp_path: Path
) -> None:
    line = tmp_path / "line.png"
    line.write_bytes(blank_png(2_000_000, 1))
    good = encodings(picture(), tmp_path)["8-bit.png"]
    result = CliRunner().invoke(app, ["predict", str(checkpoint), str(line), str(good),
                                      "--json"])
    assert result.exit_code == 1, result.output
    bad_row, good_row = json.loads(result.stdout)["images"]
    assert bad_row["error"].startswith(f"{line}: refused: image too elongated")
    assert "labels" in good_row and "error" not in good_row
