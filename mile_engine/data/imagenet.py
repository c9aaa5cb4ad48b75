"""ImageNet (ILSVRC2012) with ReaL labels as a data source.

- Train: `data_path` holds one sub-folder per WordNet id; the class index is the position
  of the folder name in their sorted list (the order ReaL's class ids assume). Scanning
  1.28 M files takes a while, so the file index is cached as JSON and reused while the
  class folders' modification times are unchanged.
- Validation: `val_path` holds the images flat or in class sub-folders. Each image finds
  its ReaL entry by its file name (`ILSVRC2012_val_00000001.JPEG` is entry 0), never by
  sort order. In a flat folder the original label comes from `LOC_val_solution.csv` or
  `val_labels.txt`; without either it is -1 (unknown) and top-1 is reported as NaN.
- Decoding (`decode`): either the DataLoader workers decode with PIL and crop to uint8
  (`workers`), or they only read the bytes and draw the crops while the training device
  decodes whole batches (`device`: nvjpeg on CUDA; `mile_engine.data.jpeg`). Whatever a
  file's real format, it ends as RGB. A file that cannot be decoded is skipped and
  counted (`skipped_files`) and reported through `warn`; a multi-day run does not die on
  one bad JPEG. Normalisation runs batched on the training device.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from mile_engine.config import Settings, SettingsError
from mile_engine.data.batch import Batch, ValSample
from mile_engine.data.idx import Progress, cache_dir
from mile_engine.data.image_files import (
    ImageFiles,
    JpegFiles,
    collate,
    collate_jpeg,
    train_transform,
    val_transform,
)
from mile_engine.data.jpeg import decode_batch, probe_device_decode

log = logging.getLogger(__name__)

Warn = Callable[[str], None]
"""Receives one line for the user's log (a skipped file, a note about the data)."""

NUM_CLASSES = 1000
DEFAULT_SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = frozenset(
    {".jpeg", ".jpg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})(?:\.[A-Za-z]+)?$")
INDEX_VERSION = 1
SCAN_THREADS = 16


def is_image_name(name: str) -> bool:
    """Whether a file name looks like an image by its extension (hidden files excluded)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


# ---------------------------------------------------------------------- file indexes


@dataclass(frozen=True)
class TrainIndex:
    """The training files: paths relative to the train folder and their class indices."""

    classes: list[str]
    paths: list[str]
    labels: torch.Tensor


@dataclass(frozen=True)
class ValIndex:
    """The validation files in ReaL order, their ReaL entries and original labels.

    Attributes:
        paths: absolute file paths.
        real_index: int64 [N], the ReaL entry of each file (from its name).
        labels: int64 [N], the original single label, -1 where unknown.
        label_source: where the labels came from, in words.
    """

    paths: list[str]
    real_index: torch.Tensor
    labels: torch.Tensor
    label_source: str


def _subfolders(root: Path, key: str) -> list[str]:
    """Sorted names of the visible sub-folders of `root` (a SettingsError if unusable)."""
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise SettingsError(f"{key} '{root}' {what}.")
    try:
        with os.scandir(root) as entries:
            return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
    except OSError as exc:
        raise SettingsError(f"{key} '{root}': cannot list the folder ({exc.strerror}).") from None


def _scan_folder(folder: Path) -> list[str]:
    """Image file names of one folder, sorted; os.scandir avoids a stat per file."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if is_image_name(e.name) and e.is_file())


def _scan_many(
    folders: Sequence[Path], what: str, progress: Progress | None
) -> list[list[str]]:
    """Scan folders in threads (listing is I/O-bound, slow on network filesystems)."""
    results: list[list[str]] = []
    with ThreadPoolExecutor(SCAN_THREADS) as pool:
        for i, names in enumerate(pool.map(_scan_folder, folders)):
            results.append(names)
            if progress is not None:
                progress(what, i + 1, len(folders))
    return results


def _index_cache_file(root: Path, cache: Path) -> Path:
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return cache / f"imagenet-index-{key}.json"


def _signature(root: Path, classes: list[str]) -> list[int]:
    # A folder's mtime changes whenever a file is added, removed or renamed in it.
    return [(root / c).stat().st_mtime_ns for c in classes]


def _read_cache(path: Path, root: Path, classes: list[str], sig: list[int]) -> list[list[str]]:
    """The cached file names per class, or [] when the cache is absent or stale."""
    try:
        with path.open(encoding="utf-8") as f:
            cached = json.load(f)
    except (OSError, ValueError):
        return []
    if (
        not isinstance(cached, dict)
        or cached.get("version") != INDEX_VERSION
        or cached.get("root") != str(root.resolve())
        or cached.get("classes") != classes
        or cached.get("mtimes") != sig
    ):
        return []
    files = cached.get("files")
    return files if isinstance(files, list) and len(files) == len(classes) else []


def _write_cache(path: Path, document: dict[str, Any]) -> None:
    """Write atomically; a cache that cannot be written only costs the next start time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".part", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write the file index cache %s: %s", path, exc)


def scan_train(
    root: Path, cache: Path | None = None, progress: Progress | None = None
) -> TrainIndex:
    """Index the train folder (one sub-folder per class), using the cached index if fresh.

    Raises:
        SettingsError: the folder is missing, has no class folders, more than 1000, or
            no images.
    """
    classes = _subfolders(root, "data_path")
    if not classes:
        raise SettingsError(
            f"data_path '{root}' has no sub-folders; it must be the ILSVRC2012 train folder "
            "with one sub-folder per class (n01440764/, n01443537/, ...)."
        )
    if len(classes) > NUM_CLASSES:
        raise SettingsError(
            f"data_path '{root}' has {len(classes)} sub-folders; ImageNet has {NUM_CLASSES} "
            "classes, one sub-folder each."
        )
    sig = _signature(root, classes)
    cache_file = _index_cache_file(root, cache or cache_dir())
    files = _read_cache(cache_file, root, classes, sig)
    if not files:
        log.info("scanning %d class folders of %s (cached afterwards)", len(classes), root)
        files = _scan_many([root / c for c in classes], f"scanning {root}", progress)
        _write_cache(
            cache_file,
            {"version": INDEX_VERSION, "root": str(root.resolve()), "classes": classes,
             "mtimes": sig, "files": files},
        )
    elif progress is not None:
        progress(f"file index of {root} (cached)", len(classes), len(classes))
    paths = [f"{c}/{name}" for c, names in zip(classes, files, strict=True) for name in names]
    if not paths:
        raise SettingsError(f"data_path '{root}': the class folders hold no images.")
    counts = torch.tensor([len(names) for names in files])
    labels = torch.repeat_interleave(torch.arange(len(classes)), counts)
    return TrainIndex(classes, paths, labels)


def _real_index_of(name: str) -> int:
    match = VAL_NAME.match(name)
    return int(match.group(1)) - 1 if match else -1


def _label_of(token: str, classes: dict[str, int], where: str) -> int:
    """A class given by its WordNet id or its index."""
    if token in classes:
        return classes[token]
    if token.isdigit() and int(token) < NUM_CLASSES:
        return int(token)
    raise SettingsError(
        f"{where}: '{token}' is neither a class folder of data_path nor a class index 0..999."
    )


def read_loc_solution(path: Path, classes: dict[str, int]) -> dict[int, int]:
    """Labels from Kaggle's `LOC_val_solution.csv`: ReaL entry -> class index."""
    labels = {}
    with path.open(newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if line == 1 and row and row[0] == "ImageId":
                continue
            index = _real_index_of(row[0]) if row else -1
            if len(row) < 2 or index < 0 or not row[1].split():
                raise SettingsError(
                    f"{path} line {line}: expected 'ILSVRC2012_val_XXXXXXXX,<wnid> ...', "
                    f"got {','.join(row)!r}."
                )
            labels[index] = _label_of(row[1].split()[0], classes, f"{path} line {line}")
    return labels


def read_val_labels(path: Path, classes: dict[str, int]) -> dict[int, int]:
    """Labels from `val_labels.txt`: ReaL entry -> class index.

    Each line is `<file name> <label>` or a bare `<label>` (line i for entry i); a label
    is a WordNet id or a class index 0..999 in sorted-wnid order.
    """
    labels = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for line, text in enumerate((t for t in lines if t.strip()), start=0):
        tokens = text.split()
        where = f"{path} line {line + 1}"
        if len(tokens) == 1:
            labels[line] = _label_of(tokens[0], classes, where)
        elif len(tokens) == 2 and _real_index_of(tokens[0]) >= 0:
            labels[_real_index_of(tokens[0])] = _label_of(tokens[1], classes, where)
        else:
            raise SettingsError(
                f"{where}: expected '<label>' or 'ILSVRC2012_val_XXXXXXXX.JPEG <label>', "
                f"got {text!r}."
            )
    return labels


LABEL_FILES = (("LOC_val_solution.csv", read_loc_solution), ("val_labels.txt", read_val_labels))


def find_label_file(val_root: Path) -> Path | None:
    """The label file of a flat validation folder, or None.

    `val_labels.txt` is looked for in `val_path` and its parent; `LOC_val_solution.csv`
    also up to four folders above, where Kaggle's download keeps it (next to `ILSVRC/`,
    above `ILSVRC/Data/CLS-LOC/val`). A generic name is not searched further up, so that
    an unrelated file high in the tree is never taken for the labels.
    """
    for level, folder in enumerate([val_root, *list(val_root.resolve().parents)[:4]]):
        names = ["LOC_val_solution.csv", "val_labels.txt"] if level < 2 else [
            "LOC_val_solution.csv"]
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def scan_val(
    root: Path, classes: list[str], progress: Progress | None = None
) -> ValIndex:
    """Index the validation images, flat or in class sub-folders, in ReaL-entry order.

    Raises:
        SettingsError: a missing folder, mixed layouts, a sub-folder that is not a class,
            names that do not carry the ReaL entry, duplicates, or a bad label file.
    """
    class_of = {c: i for i, c in enumerate(classes)}
    subfolders = _subfolders(root, "val_path")
    flat = _scan_folder(root)
    if subfolders and flat:
        raise SettingsError(
            f"val_path '{root}' holds both sub-folders and {len(flat)} images directly; "
            "use one layout: all images flat, or all in class sub-folders."
        )
    if subfolders:
        unknown = [s for s in subfolders if s not in class_of]
        if unknown:
            raise SettingsError(
                f"val_path '{root}': sub-folder(s) {', '.join(unknown[:3])} are not class "
                "folders of data_path; class sub-folders must use the train folder's names."
            )
        names = _scan_many([root / s for s in subfolders], f"scanning {root}", progress)
        files = [
            (root / s / n, class_of[s])
            for s, ns in zip(subfolders, names, strict=True)
            for n in ns
        ]
        source = "class sub-folders"
    else:
        files = [(root / n, -1) for n in flat]
        source = "none"
    if not files:
        raise SettingsError(f"val_path '{root}' holds no images.")
    index = [_real_index_of(p.name) for p, _ in files]
    bad = [p.name for (p, _), i in zip(files, index, strict=True) if i < 0]
    if bad:
        raise SettingsError(
            f"val_path '{root}': {len(bad)} file name(s) do not carry a ReaL entry, e.g. "
            f"{', '.join(bad[:3])}; validation images must keep their ILSVRC names "
            "(ILSVRC2012_val_00000001.JPEG is ReaL entry 0)."
        )
    repeated = [i for i, n in Counter(index).items() if n > 1]
    if repeated:
        raise SettingsError(
            f"val_path '{root}': ILSVRC2012_val_{repeated[0] + 1:08d} appears more than once."
        )
    labels = [label for _, label in files]
    if not subfolders:
        label_file = find_label_file(root)
        if label_file is not None:
            reader = dict(LABEL_FILES)[label_file.name]
            table = reader(label_file, class_of)
            missing = [i for i in index if i not in table]
            if missing:
                raise SettingsError(
                    f"{label_file} has no label for ILSVRC2012_val_{missing[0] + 1:08d} "
                    f"({len(missing)} validation image(s) without a label)."
                )
            labels = [table[i] for i in index]
            source = str(label_file)
    order = sorted(range(len(files)), key=index.__getitem__)
    return ValIndex(
        paths=[str(files[i][0]) for i in order],
        real_index=torch.tensor([index[i] for i in order], dtype=torch.int64),
        labels=torch.tensor([labels[i] for i in order], dtype=torch.int64),
        label_source=source,
    )


# ---------------------------------------------------------------------- ReaL labels


def validate_real(document: Any, source: str) -> list[list[int]]:
    """Check a parsed `real.json`: a list of lists of class ids in 0..999.

    Raises:
        SettingsError: naming the first bad entry, its file name and what is wrong.
    """
    if not isinstance(document, list):
        raise SettingsError(
            f"{source}: expected a JSON list of {NUM_CLASSES}-class label lists (one per "
            f"validation image), got a {type(document).__name__}."
        )
    if not document:
        raise SettingsError(f"{source}: the list is empty.")
    for i, entry in enumerate(document):
        where = f"{source}: entry {i} (ILSVRC2012_val_{i + 1:08d})"
        if not isinstance(entry, list):
            raise SettingsError(f"{where} is {json.dumps(entry)}, expected a list of class ids.")
        for value in entry:
            if not isinstance(value, int) or isinstance(value, bool):
                raise SettingsError(
                    f"{where} holds {json.dumps(value)}, expected integer class ids 0..999."
                )
            if not 0 <= value < NUM_CLASSES:
                raise SettingsError(f"{where} holds class {value}, outside 0..999.")
    return document


def load_real(path: Path) -> list[list[int]]:
    """Load and validate ReaL's `real.json`; entry i belongs to ILSVRC2012_val_{i+1}."""
    try:
        with path.open(encoding="utf-8") as f:
            document = json.load(f)
    except FileNotFoundError:
        raise SettingsError(
            f"real_path '{path}' does not exist; get real.json from "
            "https://github.com/google-research/reassessed-imagenet."
        ) from None
    except OSError as exc:
        raise SettingsError(f"real_path '{path}': cannot read it ({exc.strerror}).") from None
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f"real_path '{path}': not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg})."
        ) from None
    return validate_real(document, f"real_path '{path}'")


def real_table(real: list[list[int]], entries: torch.Tensor, source: str) -> torch.Tensor:
    """The ReaL sets of `entries` as int64 [N, K], padded with -1.

    Raises:
        SettingsError: when real.json is too short for a validation file.
    """
    last = int(entries.max())
    if last >= len(real):
        raise SettingsError(
            f"{source} has {len(real):,} entries but the validation image "
            f"ILSVRC2012_val_{last + 1:08d} needs entry {last}; is it the right real.json "
            "for this validation set?"
        )
    rows = [real[i] for i in entries.tolist()]
    width = max(1, max(len(r) for r in rows))
    table = torch.full((len(rows), width), -1, dtype=torch.int64)
    for i, row in enumerate(rows):  # once at start-up, not in the training loop
        table[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
    return table


def multi_hot(table: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Padded class lists int64 [B, K] (-1 = none) -> bool [B, C]; empty lists give False rows."""
    # Padding goes to an extra column that is cut off, so no Python loop is needed.
    hot = torch.zeros(len(table), num_classes + 1, dtype=torch.bool, device=table.device)
    hot.scatter_(1, table.masked_fill(table < 0, num_classes), True)
    return hot[:, :num_classes]


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


def resolve_decode(decode: str, device: torch.device) -> tuple[str, str | None]:
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
        decode: str = "workers",
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
