"""IDX files: hand-made good and bad files, both layouts, downloads with a fake server."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import struct
from pathlib import Path
from typing import Any

import pytest
import torch

from mile_engine import events as ev
from mile_engine.config.schema import SettingsError
from mile_engine.config.validation import build_settings
from mile_engine.data import build_source, idx
from mile_engine.data.idx import IMAGE_MAGIC, LABEL_MAGIC, IdxError, load_idx_tiles
from mile_engine.trainer import Trainer
from tests.helpers.settings import tiny

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
TILE = 4


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file: magic number, dimensions, then the values (big-endian header)."""
    return struct.pack(f">I{len(dims)}I", magic, *dims) + payload


def split_files(n: int, offset: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Tiles whose pixels encode their position, and labels 0..9 in turn."""
    tiles = (torch.arange(n * TILE * TILE) + offset).remainder(256).to(torch.uint8)
    return {"x": (tiles.view(n, TILE, TILE), (torch.arange(n) % 10).to(torch.uint8))}


def write(path: Path, data: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_dataset(folder: Path, gz: bool, n_train: int = 12, n_val: int = 5) -> dict[str, Any]:
    """The four files of an MNIST-format data set; returns the tensors written."""
    written: dict[str, Any] = {}
    for prefix, n, offset in (("train", n_train, 0), ("t10k", n_val, 7)):
        tiles, labels = split_files(n, offset)["x"]
        write(folder / f"{prefix}-images-idx3-ubyte",
              idx_bytes(IMAGE_MAGIC, (n, TILE, TILE), tiles.numpy().tobytes()), gz)
        write(folder / f"{prefix}-labels-idx1-ubyte",
              idx_bytes(LABEL_MAGIC, (n,), labels.numpy().tobytes()), gz)
        written[prefix] = (tiles, labels)
    return written


# ---------------------------------------------------------------------- good files


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize(
    "dataset,layout",
    [("mnist", "MNIST/raw"), ("fashion-mnist", "FashionMNIST/raw"), ("mnist", ""),
     ("fashion-mnist", "")],
)
def test_reads_both_layouts_gz_and_raw(tmp_path: Path, gz: bool, dataset: str,
                                       layout: str) -> None:
    written = write_dataset(tmp_path / layout if layout else tmp_path, gz)
    train, val = load_idx_tiles(dataset, str(tmp_path), allow_download=False)
    assert torch.equal(train.tiles, written["train"][0])
    assert torch.equal(train.labels, written["train"][1].long())
    assert torch.equal(val.tiles, written["t10k"][0])
    assert train.labels.dtype == torch.int64 and train.tile_size == TILE
    assert len(train.class_names) == 10


def test_class_names_and_mixed_compression(tmp_path: Path) -> None:
    write_dataset(tmp_path, gz=True)
    # One file uncompressed: each file is read by its bytes, not its name.
    gz_file = tmp_path / "t10k-labels-idx1-ubyte.gz"
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(gz_file.read_bytes()))
    gz_file.unlink()
    _, val = load_idx_tiles("fashion-mnist", str(tmp_path), allow_download=False)
    assert val.class_names[0] == "T-shirt/top" and val.class_names[9] == "Ankle boot"
    train, _ = load_idx_tiles("mnist", str(tmp_path), allow_download=False)
    assert train.class_names == [str(d) for d in range(10)]


def test_folder_with_both_datasets_picks_the_right_one(tmp_path: Path) -> None:
    write_dataset(tmp_path / "MNIST" / "raw", gz=True, n_train=12)
    write_dataset(tmp_path / "FashionMNIST" / "raw", gz=True, n_train=20)
    assert len(load_idx_tiles("mnist", str(tmp_path))[0].labels) == 12
    assert len(load_idx_tiles("fashion-mnist", str(tmp_path))[0].labels) == 20


def test_empty_mnist_path_finds_the_system_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert str(DEBIAN_FASHION) in idx.FASHION_MNIST.system_folders
    write_dataset(tmp_path, gz=True, n_train=14)
    moved = dataclasses.replace(idx.FASHION_MNIST, system_folders=(str(tmp_path),))
    monkeypatch.setitem(idx.IDX_DATASETS, "fashion-mnist", moved)
    assert len(load_idx_tiles("fashion-mnist", "")[0].labels) == 14


# ---------------------------------------------------------------------- bad files


def _dataset_with(tmp_path: Path, name: str, data: bytes, gz: bool = False) -> None:
    """A good raw data set in which the file `name` is replaced by `data`."""
    write_dataset(tmp_path, gz=False)
    (tmp_path / name).unlink()
    write(tmp_path / name, data, gz)


def _error(tmp_path: Path) -> str:
    with pytest.raises(IdxError) as info:
        load_idx_tiles("mnist", str(tmp_path), allow_download=False)
    return str(info.value)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_wrong_magic_number(tmp_path: Path, gz: bool) -> None:
    labels_as_images = idx_bytes(IMAGE_MAGIC, (12, TILE, TILE), bytes(12 * TILE * TILE))
    _dataset_with(tmp_path, "train-labels-idx1-ubyte", labels_as_images, gz)
    message = _error(tmp_path)
    assert "train-labels-idx1-ubyte" in message
    assert "wrong magic number 0x00000803" in message and "0x00000801" in message


def test_not_an_idx_file(tmp_path: Path) -> None:
    _dataset_with(tmp_path, "t10k-images-idx3-ubyte", b"<html>404 Not Found</html>")
    message = _error(tmp_path)
    assert "t10k-images-idx3-ubyte" in message and "wrong magic number" in message


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_truncated_data(tmp_path: Path, gz: bool) -> None:
    data = idx_bytes(IMAGE_MAGIC, (12, TILE, TILE), bytes(12 * TILE * TILE))[:-10]
    _dataset_with(tmp_path, "train-images-idx3-ubyte", data, gz)
    message = _error(tmp_path)
    assert "train-images-idx3-ubyte" in message and "truncated" in message
    assert "12x4x4" in message


def test_truncated_header(tmp_path: Path) -> None:
    _dataset_with(tmp_path, "train-images-idx3-ubyte", idx_bytes(IMAGE_MAGIC, (12,), b""))
    assert "truncated inside its header" in _error(tmp_path)
    _dataset_with(tmp_path, "train-images-idx3-ubyte", b"\x00\x00")
    assert "not even an IDX header" in _error(tmp_path)


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    write_dataset(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    message = _error(tmp_path)
    assert str(path) in message and "gzip stream is truncated or corrupt" in message


def test_trailing_bytes(tmp_path: Path) -> None:
    data = idx_bytes(LABEL_MAGIC, (12,), bytes(12) + b"junk")
    _dataset_with(tmp_path, "train-labels-idx1-ubyte", data)
    assert "4 unexpected bytes" in _error(tmp_path)


def test_image_and_label_counts_disagree(tmp_path: Path) -> None:
    _dataset_with(tmp_path, "t10k-labels-idx1-ubyte", idx_bytes(LABEL_MAGIC, (4,), bytes(4)))
    message = _error(tmp_path)
    assert "holds 5 images but" in message and "holds 4 labels" in message
    assert "t10k-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message


def test_label_out_of_range(tmp_path: Path) -> None:
    labels = bytes([1] * 11 + [12])
    _dataset_with(tmp_path, "train-labels-idx1-ubyte", idx_bytes(LABEL_MAGIC, (12,), labels))
    assert "label 12 is out of range" in _error(tmp_path)


def test_bad_file_is_a_settings_error_from_build_source(tmp_path: Path) -> None:
    _dataset_with(tmp_path, "train-images-idx3-ubyte", b"nonsense")
    settings = tiny(dataset="mnist", mnist_path=str(tmp_path))
    with pytest.raises(SettingsError, match="wrong magic number"):
        build_source(settings, torch.device("cpu"))


# ---------------------------------------------------------------------- missing files


def test_missing_files_offline_say_what_where_and_how(tmp_path: Path) -> None:
    write_dataset(tmp_path, gz=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(IdxError) as info:
        load_idx_tiles("mnist", str(tmp_path))
    message = str(info.value)
    assert "missing t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz)" in message
    assert str(tmp_path) in message and "train-images" not in message
    assert "download failed" in message and "network disabled in tests" in message
    assert "ossci-datasets" in message and "mnist_path" in message


def test_missing_fashion_files_suggest_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(IdxError) as info:
        load_idx_tiles("fashion-mnist", str(tmp_path / "nowhere"), allow_download=False)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "FashionMNIST/raw" in message and "download failed" not in message


def test_a_grid_dataset_takes_any_model_but_imagenet_refuses_the_10_class_one() -> None:
    # resnet18 and every other open model are sized to the dataset's classes (10 here);
    # resnet18-10 is a fixed 10-class network and cannot serve ImageNet's 1000.
    assert build_settings({"dataset": "fashion-mnist", "model": "resnet18"}).model == "resnet18"
    with pytest.raises(SettingsError, match="predicts 10 classes but dataset 'imagenet'"):
        build_settings({"dataset": "imagenet", "model": "resnet18-10"})


# ---------------------------------------------------------------------- downloads


class FakeResponse(io.BytesIO):
    """What urlopen returns: a readable body with headers, usable as a context manager."""

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body))}


def _serve(monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes], tamper: bool = False
           ) -> list[str]:
    """Serve `files` (name -> .gz bytes) from a fake mirror; returns the URLs asked for."""
    asked: list[str] = []

    def urlopen(url: str, timeout: float) -> FakeResponse:
        asked.append(url)
        assert timeout <= 30
        body = files[url.rsplit("/", 1)[1]]
        return FakeResponse(body + (b"x" if tamper else b""))

    md5 = {name[:-3]: hashlib.md5(body).hexdigest() for name, body in files.items()}
    spec = dataclasses.replace(idx.MNIST, mirrors=("https://mirror.invalid/mnist/",), md5=md5)
    monkeypatch.setitem(idx.IDX_DATASETS, "mnist", spec)
    monkeypatch.setattr(idx, "_urlopen", urlopen)
    return asked


def _gz_files(tmp_path: Path) -> dict[str, bytes]:
    source = tmp_path / "source"
    write_dataset(source, gz=True)
    return {p.name: p.read_bytes() for p in source.iterdir()}


def test_download_verifies_checksums_and_reports_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _serve(monkeypatch, _gz_files(tmp_path))
    reports: list[tuple[str, int, int]] = []
    target = tmp_path / "data"
    train, val = load_idx_tiles("mnist", str(target), progress=lambda *r: reports.append(r))
    assert len(train.labels) == 12 and len(val.labels) == 5
    assert len(asked) == 4 and all(u.startswith("https://mirror.invalid/") for u in asked)
    assert sorted(p.name for p in target.iterdir()) == sorted(
        f"{b}.gz" for b in idx.FILE_NAMES)
    assert reports and reports[-1][1] == reports[-1][2] > 0
    assert reports[0][0].startswith("downloading ")


def test_download_with_empty_path_goes_to_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_cache: Path
) -> None:
    _serve(monkeypatch, _gz_files(tmp_path))
    load_idx_tiles("mnist", "")
    assert len(list((private_cache / "mile-tui" / "MNIST" / "raw").glob("*.gz"))) == 4


def test_download_checksum_mismatch_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve(monkeypatch, _gz_files(tmp_path), tamper=True)
    target = tmp_path / "data"
    with pytest.raises(IdxError, match="checksum mismatch"):
        load_idx_tiles("mnist", str(target))
    assert list(target.iterdir()) == []


# ---------------------------------------------------------------------- a real run


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(),
                    reason="Fashion-MNIST is absent: apt-get install dataset-fashion-mnist")
def test_one_generation_on_debian_fashion_mnist(tmp_path: Path) -> None:
    settings = tiny(dataset="fashion-mnist", k_t=1, k_s=1, epoch_num=1, val_size=32)
    seen: list[ev.Event] = []
    trainer = Trainer(settings, tmp_path, sinks=[seen.append])
    ended = trainer.train()
    assert ended.status == "finished", ended.error
    source = trainer.source
    assert source.num_classes == 10 and source.class_names[9] == "Ankle boot"
    batch = source.train_batch()
    assert batch.images.shape == (8, 3, 84, 84) and batch.real is not None
    (record,) = trainer.history
    assert 0 <= record["real_f1"] <= 1 and 0 <= record["top1"] <= 1
