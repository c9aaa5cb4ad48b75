"""MNIST-format IDX files: find them, check them, read them, download them.

The four files of MNIST and Fashion-MNIST (`train-images-idx3-ubyte`, ...) are read
gzipped or not, from `<mnist_path>/MNIST/raw/` (the layout torchvision and the original
implementation use), `<mnist_path>/FashionMNIST/raw/`, or straight from `<mnist_path>`.
Every way a file can be wrong (missing, wrong magic number, truncated, counts that
disagree, labels out of range) is an `IdxError` whose message names the file and what
to do, never a traceback.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mile_engine.config.schema import SettingsError
from mile_engine.data.tiles import TileBank

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""A progress report: (what is being done, units done, units in all or 0 if unknown)."""

# IDX header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
UBYTE = 0x08
IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
GZIP_MAGIC = b"\x1f\x8b"
NUM_CLASSES = 10
# Short enough that an offline machine fails fast, long enough for a slow mirror.
DOWNLOAD_TIMEOUT_S = 15
CHUNK = 1 << 16


@dataclass(frozen=True)
class IdxDataset:
    """Where one MNIST-format data set lives and how it is named."""

    name: str
    folder: str
    """Sub-folder name of torchvision's layout: `<mnist_path>/<folder>/raw/`."""
    class_names: tuple[str, ...]
    mirrors: tuple[str, ...]
    md5: dict[str, str]
    """MD5 of each downloaded `.gz` file (the checksums torchvision publishes)."""
    system_folders: tuple[str, ...] = ()
    """Folders searched when `mnist_path` is empty (distribution packages)."""
    how_to_get: str = ""


MNIST = IdxDataset(
    name="mnist",
    folder="MNIST",
    class_names=tuple(str(d) for d in range(10)),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    md5={
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    how_to_get=(
        "download the four .gz files from https://ossci-datasets.s3.amazonaws.com/mnist/ "
        "(or any MNIST mirror) into that folder"
    ),
)

FASHION_MNIST = IdxDataset(
    name="fashion-mnist",
    folder="FashionMNIST",
    class_names=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    md5={
        "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    system_folders=("/usr/share/datasets/fashion-mnist",),
    how_to_get=(
        "on Debian or Ubuntu run `apt-get install dataset-fashion-mnist` (and leave "
        "mnist_path empty), or download the four .gz files from "
        "https://github.com/zalandoresearch/fashion-mnist into that folder"
    ),
)

IDX_DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST)}
# (images, labels) of each split, by base name; a file may also end in ".gz".
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FILE_NAMES = tuple(name for pair in SPLITS.values() for name in pair)


class IdxError(SettingsError):
    """An IDX file that is missing or cannot be used; the message says what to fix."""


# The opener is a module attribute so that tests can replace it: tests never download.
_urlopen: Callable[..., Any] = urllib.request.urlopen


def cache_dir() -> Path:
    """Where downloads go when `mnist_path` is empty: `$XDG_CACHE_HOME/mile-tui`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mile-tui"


# ---------------------------------------------------------------------- reading


def _read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it is gzip (decided by its bytes, not name)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise IdxError(f"{path}: cannot read the file ({exc.strerror}).") from None
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise IdxError(
            f"{path}: the gzip stream is truncated or corrupt ({exc}); "
            "download the file again."
        ) from None


def parse_idx(data: bytes, expected_magic: int, source: str) -> torch.Tensor:
    """Parse the bytes of one IDX file of unsigned bytes into a uint8 tensor.

    Args:
        data: the (decompressed) file content.
        expected_magic: `IMAGE_MAGIC` (3 dimensions) or `LABEL_MAGIC` (1 dimension).
        source: the file name used in error messages.

    Raises:
        IdxError: wrong magic number, truncated header or data, or trailing bytes.
    """
    kind = "an image file (idx3)" if expected_magic == IMAGE_MAGIC else "a label file (idx1)"
    if len(data) < 4:
        raise IdxError(f"{source}: truncated: {len(data)} bytes, not even an IDX header.")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        raise IdxError(
            f"{source}: wrong magic number 0x{magic:08x}; {kind} starts with "
            f"0x{expected_magic:08x}. Is it the right file, or not an IDX file at all?"
        )
    ndim = expected_magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{source}: truncated inside its header ({len(data)} bytes).")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    size = 1
    for d in dims:
        size *= d
    found = len(data) - header
    if found < size:
        raise IdxError(
            f"{source}: truncated: its header announces {'x'.join(map(str, dims))} values "
            f"({size:,} bytes) but only {found:,} bytes follow; download the file again."
        )
    if found > size:
        raise IdxError(
            f"{source}: {found - size:,} unexpected bytes after the "
            f"{'x'.join(map(str, dims))} values its header announces; the file is corrupt."
        )
    # A bytearray copy, because torch.frombuffer wants writable memory it can own.
    values = torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8)
    return values.view(*dims)


def read_idx(path: Path, expected_magic: int) -> torch.Tensor:
    """Read one IDX file, gzipped or not; see `parse_idx`."""
    return parse_idx(_read_bytes(path), expected_magic, str(path))


def read_split(images_path: Path, labels_path: Path, class_names: list[str]) -> TileBank:
    """Read one split (an image file and its label file) into a tile bank.

    Raises:
        IdxError: a bad file, counts that disagree, or labels out of range.
    """
    images = read_idx(images_path, IMAGE_MAGIC)
    labels = read_idx(labels_path, LABEL_MAGIC)
    if len(images) != len(labels):
        raise IdxError(
            f"{images_path} holds {len(images):,} images but {labels_path} holds "
            f"{len(labels):,} labels; the two files must come from the same split."
        )
    if len(images) == 0:
        raise IdxError(f"{images_path}: holds no images.")
    if images.shape[1] != images.shape[2]:
        raise IdxError(
            f"{images_path}: tiles of {images.shape[1]}x{images.shape[2]} pixels; "
            "the grids need square tiles."
        )
    top = int(labels.max())
    if top >= len(class_names):
        raise IdxError(
            f"{labels_path}: label {top} is out of range; this data set has "
            f"{len(class_names)} classes (0..{len(class_names) - 1})."
        )
    return TileBank(images, labels.long(), list(class_names))


# ---------------------------------------------------------------------- finding


def candidate_folders(dataset: IdxDataset, mnist_path: str) -> list[Path]:
    """The folders searched for the files, most specific first."""
    if not mnist_path:
        return [Path(p) for p in dataset.system_folders] + [cache_dir() / dataset.folder / "raw"]
    root = Path(mnist_path).expanduser()
    # torchvision's layout for this data set first, so that a folder holding both MNIST
    # and FashionMNIST sub-folders picks the right one; then the folder itself.
    return [root / dataset.folder / "raw", root]


def _find_file(folder: Path, base: str) -> Path | None:
    for name in (base + ".gz", base):
        path = folder / name
        if path.is_file():
            return path
    return None


def find_files(folder: Path) -> dict[str, Path]:
    """The IDX files present in one folder, by base name (`.gz` preferred)."""
    found = {}
    for base in FILE_NAMES:
        path = _find_file(folder, base)
        if path is not None:
            found[base] = path
    return found


def locate(dataset: IdxDataset, mnist_path: str) -> tuple[Path, dict[str, Path]]:
    """The folder holding the most of the four files, and the files found there."""
    best: tuple[Path, dict[str, Path]] | None = None
    for folder in candidate_folders(dataset, mnist_path):
        found = find_files(folder)
        if len(found) == len(FILE_NAMES):
            return folder, found
        if best is None or len(found) > len(best[1]):
            best = (folder, found)
    assert best is not None
    return best


def download_folder(dataset: IdxDataset, mnist_path: str) -> Path:
    """Where missing files are downloaded to."""
    if not mnist_path:
        return cache_dir() / dataset.folder / "raw"
    root = Path(mnist_path).expanduser()
    nested = root / dataset.folder / "raw"
    # Keep a partial torchvision layout together rather than splitting it in two folders.
    return nested if nested.is_dir() else root


# ---------------------------------------------------------------------- downloading


def _download_one(
    url: str, target: Path, md5: str, progress: Progress | None
) -> None:
    """Stream `url` into `target` via a temporary file, verifying the MD5 on the way."""
    digest = hashlib.md5()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, _urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(f"downloading {target.name}", done, total)
        if digest.hexdigest() != md5:
            raise IdxError(
                f"{url}: checksum mismatch (MD5 {digest.hexdigest()}, expected {md5}); "
                "the download is damaged, try again."
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def download(
    dataset: IdxDataset,
    folder: Path,
    missing: list[str],
    progress: Progress | None = None,
    searched: list[Path] | None = None,
) -> None:
    """Download the `missing` files (base names) of `dataset` into `folder`.

    Raises:
        IdxError: when no mirror answers (offline) or a checksum does not match.
    """
    for base in missing:
        errors = []
        for mirror in dataset.mirrors:
            url = f"{mirror}{base}.gz"
            try:
                _download_one(url, folder / f"{base}.gz", dataset.md5[base], progress)
                log.info("downloaded %s", url)
                break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
            except OSError as exc:
                raise IdxError(
                    f"{folder}: cannot write the download ({exc.strerror}); set mnist_path "
                    "to a writable folder."
                ) from None
        else:
            raise _missing_error(dataset, folder, missing, "; ".join(errors), searched)


def _missing_error(
    dataset: IdxDataset,
    folder: Path,
    missing: list[str],
    reason: str = "",
    searched: list[Path] | None = None,
) -> IdxError:
    files = ", ".join(f"{b}(.gz)" for b in missing)
    others = [str(p) for p in searched or [] if p != folder]
    also = f" (also searched {', '.join(others)})" if others else ""
    why = f" The download failed ({reason})." if reason else ""
    return IdxError(
        f"dataset '{dataset.name}': missing {files} in {folder}{also}.{why} To fix it, "
        f"{dataset.how_to_get}, or set mnist_path to a folder that holds the four files "
        f"(directly or as {dataset.folder}/raw/)."
    )


def load_idx_tiles(
    dataset: str,
    mnist_path: str = "",
    allow_download: bool = True,
    progress: Progress | None = None,
) -> tuple[TileBank, TileBank]:
    """The (train, validation) tile banks of `mnist` or `fashion-mnist`.

    Args:
        dataset: "mnist" or "fashion-mnist".
        mnist_path: the settings' folder; empty searches the system folders and the cache.
        allow_download: fetch missing files (checksums verified) when online.
        progress: called with download progress.

    Raises:
        IdxError: files missing (and not downloadable) or unusable.
    """
    spec = IDX_DATASETS[dataset]
    folder, found = locate(spec, mnist_path)
    missing = [b for b in FILE_NAMES if b not in found]
    if missing:
        # Half-present files stay where they are and the download completes them there.
        target = folder if found else download_folder(spec, mnist_path)
        searched = candidate_folders(spec, mnist_path)
        if not allow_download:
            raise _missing_error(spec, target, missing, searched=searched)
        download(spec, target, missing, progress, searched)
        folder, found = target, find_files(target)
    names = list(spec.class_names)
    banks = []
    for images, labels in SPLITS.values():
        banks.append(read_split(found[images], found[labels], names))
    return banks[0], banks[1]
