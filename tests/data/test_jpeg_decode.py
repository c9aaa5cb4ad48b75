"""decode = "device": crops drawn in the workers, batches decoded on the device.

The CPU stands in for the GPU here: torchvision's `decode_jpeg` takes the same batched
call on either device, and everything around it (boxes, fallbacks, failures) is ours.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mile_engine.config.schema import SettingsError
from mile_engine.data import imagenet, jpeg
from mile_engine.data.image_files import (
    ImageFiles,
    JpegFiles,
    collate_jpeg,
    train_transform,
    val_transform,
)
from mile_engine.data.imagenet import resolve_decode
from mile_engine.data.jpeg import centre_box, decode_batch, random_resized_box
from tests.helpers.images import picture

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Full-size-like JPEGs in landscape, portrait and small shapes, a grey one, a PNG."""
    root = tmp_path_factory.mktemp("photos")
    paths = []
    for i, (h, w) in enumerate([(375, 500), (500, 375), (333, 500), (64, 96)]):
        path = root / f"{i}.JPEG"
        picture(h, w).save(path, quality=95)
        paths.append(str(path))
    picture(300, 400).convert("L").save(root / "grey.JPEG", quality=95)
    picture(300, 400).save(root / "png.JPEG", format="PNG")
    return [*paths, str(root / "grey.JPEG"), str(root / "png.JPEG")]


def device_batch(files: JpegFiles) -> tuple[torch.Tensor, torch.Tensor, dict[int, str]]:
    payloads, boxes, flips, _, _ = collate_jpeg([files[i] for i in range(len(files))])
    return decode_batch(payloads, boxes, flips, files.size, CPU)


def test_device_decoding_reproduces_the_validation_preprocessing(photos: list[str]) -> None:
    size = 224
    reference = torch.stack(
        [ImageFiles("", photos, val_transform(size), size, False)[i][0]
         for i in range(len(photos))]
    ).float()
    files = JpegFiles("", photos, val_transform(size), size, substitute=False, train=False)
    kinds = [int(files[i][0][1][2] > 0) for i in range(len(photos))]
    assert kinds == [1, 1, 1, 1, 1, 0]  # JPEGs (grey included) on the device; PNG by PIL
    images, ok, failures = device_batch(files)
    assert ok.all() and not failures and images.shape == (len(photos), 3, size, size)
    # Crop-then-resize on the device against PIL's resize-then-crop: the same region,
    # so only interpolation and rounding differ (under 2 of 255 levels on average).
    difference = (images - reference).abs().mean(dim=(1, 2, 3))
    assert difference.max() < 2.0, difference


def test_training_crops_follow_the_seed_and_stay_inside(photos: list[str]) -> None:
    files = JpegFiles("", photos[:4], train_transform(64), 64, substitute=True, train=True)
    torch.manual_seed(3)
    first = [files[i][0][1] for i in range(4)]
    torch.manual_seed(3)
    again = [files[i][0][1] for i in range(4)]
    assert first == again
    images, ok, _ = device_batch(files)
    assert ok.all() and images.shape == (4, 3, 64, 64)
    assert float(images.min()) >= 0 and float(images.max()) <= 255


@pytest.mark.parametrize(("height", "width"), [(375, 500), (500, 375), (50, 50), (7, 9)])
def test_random_resized_boxes_keep_area_and_aspect_limits(height: int, width: int) -> None:
    torch.manual_seed(0)
    for _ in range(300):
        top, left, h, w = random_resized_box(height, width)
        assert top >= 0 and top + h <= height and left >= 0 and left + w <= width
        assert h > 0 and w > 0
        if min(height, width) >= 50:  # rounding dominates on tiny images
            assert 0.08 * 0.9 <= h * w / (height * width) <= 1.0
            assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_elongated_images_fall_back_to_a_centred_crop() -> None:
    torch.manual_seed(0)
    top, left, h, w = random_resized_box(10, 1000)  # no 3/4..4/3 crop of 8% fits
    assert (h, w) == (10, round(10 * 4 / 3)) and left == (1000 - w) // 2 and top == 0


def test_centre_box_is_the_region_resize_and_centre_crop_keep() -> None:
    # 375 x 500 -> shorter side 256 -> 224 x 224 centre: 328 source pixels square.
    assert centre_box(375, 500, 224) == ((375 - 328) // 2, (500 - 328) // 2, 328, 328)
    assert centre_box(500, 375, 224)[2:] == (328, 328)
    assert centre_box(1, 1, 224) == (0, 0, 1, 1)


def test_a_jpeg_the_device_refuses_is_decoded_by_pil(
    photos: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    files = JpegFiles("", photos[:4], val_transform(32), 32, substitute=False, train=False)
    expected, _, _ = device_batch(files)
    refused = files[2][0][0]
    real_decode = jpeg.decode_jpeg
    calls: list[int] = []

    def picky(data: torch.Tensor | list[torch.Tensor], **kw: object) -> object:
        # As nvjpeg does with a JPEG flavour it lacks: the batched call fails whole.
        batch = data if isinstance(data, list) else [data]
        calls.append(len(batch))
        if any(d.shape == refused.shape and torch.equal(d, refused) for d in batch):
            raise RuntimeError("nvjpegDecode: unsupported JPEG")
        return real_decode(data, **kw)

    monkeypatch.setattr(jpeg, "decode_jpeg", picky)
    images, ok, failures = device_batch(files)
    assert calls == [4, 1, 1, 1, 1]  # the batch, then one by one
    assert ok.all() and not failures
    assert (images - expected).abs().mean() < 1.0  # PIL's decoding of the same file


@pytest.fixture
def truncated(tmp_path: Path) -> Path:
    """A JPEG cut in half: its header reads, its pixels do not."""
    val = tmp_path / "val"
    val.mkdir()
    whole = val / "whole.JPEG"
    picture(120, 160).save(whole, quality=95)
    data = whole.read_bytes()
    cut = val / "ILSVRC2012_val_00000002.JPEG"
    cut.write_bytes(data[: len(data) // 2])
    whole.rename(val / "ILSVRC2012_val_00000001.JPEG")
    return cut


def test_a_jpeg_no_decoder_can_read_fails_with_both_reasons(truncated: Path) -> None:
    files = JpegFiles("", [str(truncated.with_name("ILSVRC2012_val_00000001.JPEG")),
                           str(truncated)], val_transform(32), 32, substitute=False,
                      train=False)
    assert files[1][0][1][2] > 0  # the header passed: the worker handed the bytes on
    images, ok, failures = device_batch(files)
    assert ok.tolist() == [True, False] and list(failures) == [1]
    assert "truncated" in failures[1] and "device decoder" in failures[1]
    assert float(images[1].abs().sum()) == 0


def test_the_source_drops_or_replaces_rows_the_device_cannot_decode(
    truncated: Path, tmp_path: Path
) -> None:
    train = tmp_path / "train" / "n01440764"
    train.mkdir(parents=True)
    for i in range(3):
        picture(90 + i, 120).save(train / f"a{i}.JPEG", quality=90)
    (train / "cut.JPEG").write_bytes(truncated.read_bytes())
    real = tmp_path / "real.json"
    real.write_text("[[0], [0]]")
    notes: list[str] = []
    src = imagenet.ImageNetSource(
        train.parent, truncated.parent, real, batch_size=4, image_size=32, num_workers=0,
        device=CPU, seed=0, warn=notes.append, decode="device",
    )
    batch = src.train_batch()  # the whole epoch, the truncated file included
    assert batch.images.shape == (4, 3, 32, 32) and batch.labels.tolist() == [0] * 4
    val = list(src.val_batches(8))
    assert [len(b.labels) for b in val] == [1]  # the truncated validation image dropped
    assert set(src.skipped_files) == {str(train / "cut.JPEG"), str(truncated)}
    assert sum("skipped an undecodable image" in n for n in notes) == 2
    assert all(math.isfinite(float(b.images.sum())) for b in val)


def test_auto_decodes_in_the_workers_on_the_cpu() -> None:
    assert resolve_decode("auto", CPU) == ("workers", None)
    assert resolve_decode("workers", CPU) == ("workers", None)
    assert resolve_decode("device", CPU) == ("device", None)


def test_a_device_without_jpeg_decoding_falls_back_or_is_refused(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imagenet, "probe_device_decode", lambda device: "no nvjpeg")
    cuda = torch.device("cuda", 0)
    decode, note = resolve_decode("auto", cuda)
    assert decode == "workers" and note is not None and "no nvjpeg" in note
    with pytest.raises(SettingsError, match='decode = "workers"'):
        resolve_decode("device", cuda)


def test_the_decoder_probe_answers_on_the_cpu() -> None:
    assert jpeg.probe_device_decode(CPU) is None
