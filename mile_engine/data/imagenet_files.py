"""ImageNet's files: the train folder's index (cached), the validation files in ReaL order
and their original labels from `LOC_val_solution.csv` or `val_labels.txt`.

- Train: `data_path` holds one sub-folder per WordNet id; the class index is the position
  of the folder name in their sorted list (the order ReaL's class ids assume). Scanning
  1.28 M files takes a while, so the file index is cached as JSON and reused while the
  class folders' modification times are unchanged (`scan_class_files`, which the user's
  folders share, with nested sub-folders and each one's modification time).
- Validation: `val_path` holds the images flat or in class sub-folders. Each image finds
  its ReaL entry by its file name (`ILSVRC2012_val_00000001.JPEG` is entry 0), never by
  sort order. In a flat folder the original label comes from `LOC_val_solution.csv` or
  `val_labels.txt`; without either it is -1 (unknown).
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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mile_engine.config.schema import SettingsError
from mile_engine.data.idx import Progress, cache_dir
from mile_engine.data.real_labels import NUM_CLASSES

log = logging.getLogger(__name__)

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


def subfolders(root: Path, key: str) -> list[str]:
    """Sorted names of the visible sub-folders of `root` (a SettingsError if unusable)."""
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise SettingsError(f"{key} '{root}' {what}.")
    try:
        with os.scandir(root) as entries:
            return sorted(e.name for e in entries if not e.name.startswith(".") and entry_is_dir(e))
    except OSError as exc:
        raise SettingsError(f"{key} '{root}': cannot list the folder ({exc.strerror}).") from None


def _scan_folder(folder: Path) -> list[str]:
    """Image file names of one folder, sorted; os.scandir avoids a stat per file."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if is_image_name(e.name) and entry_is_file(e))


def entry_is_dir(entry: os.DirEntry[str]) -> bool:
    """Whether `entry` is a folder or a link to one; a link that loops (ELOOP) or leads
    nowhere is neither, as `os.path.isdir` says."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def entry_is_file(entry: os.DirEntry[str]) -> bool:
    """Whether `entry` is a file or a link to one; False for a link that loops."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _scan_tree(folder: Path) -> tuple[list[str], dict[str, int]]:
    """Image files at any depth under `folder`, as sorted paths relative to it, and the
    mtime of each folder met ("" is `folder` itself), taken before it was listed.

    Symbolic links to folders are followed (as torchvision's ImageFolder does), each real
    folder once, so a link back up the tree cannot loop. Hidden entries are skipped.
    """
    names: list[str] = []
    stamps: dict[str, int] = {}
    seen: set[str] = set()
    pending = [""]
    while pending:
        rel = pending.pop()
        here = folder / rel if rel else folder
        real = os.path.realpath(here)
        if real in seen:
            continue
        seen.add(real)
        stamps[rel] = here.stat().st_mtime_ns
        with os.scandir(here) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = f"{rel}/{entry.name}" if rel else entry.name
                if entry_is_dir(entry):
                    pending.append(path)
                elif is_image_name(entry.name) and entry_is_file(entry):
                    names.append(path)
    return sorted(names), stamps


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


def _scan_many_nested(
    folders: Sequence[Path], what: str, progress: Progress | None
) -> tuple[list[list[str]], list[dict[str, int]]]:
    """`_scan_many` at any depth: the files of each folder and its folders' mtimes."""
    files: list[list[str]] = []
    stamps: list[dict[str, int]] = []
    with ThreadPoolExecutor(SCAN_THREADS) as pool:
        for i, (names, times) in enumerate(pool.map(_scan_tree, folders)):
            files.append(names)
            stamps.append(times)
            if progress is not None:
                progress(what, i + 1, len(folders))
    return files, stamps


def _index_cache_file(root: Path, cache: Path, kind: str = "imagenet") -> Path:
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return cache / f"{kind}-index-{key}.json"


def _signature(root: Path, classes: list[str], dirs: Sequence[str] = ()) -> list[int]:
    # A folder's mtime changes whenever a file is added, removed or renamed in it. With
    # nested folders (`dirs`, relative to root, as the last scan found them) each folder
    # of the tree counts: a file added two levels down changes only its own folder's
    # mtime, and a new folder changes its parent's.
    return [(root / c).stat().st_mtime_ns for c in [*classes, *dirs]]


def _read_cache(path: Path, root: Path, classes: list[str]) -> list[list[str]]:
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
    ):
        return []
    dirs = cached.get("dirs", [])
    try:
        if not isinstance(dirs, list) or cached.get("mtimes") != _signature(root, classes, dirs):
            return []
    except OSError:  # a cached sub-folder is gone
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


def scan_class_files(
    root: Path, classes: list[str], cache: Path | None = None,
    progress: Progress | None = None, nested: bool = False, kind: str = "imagenet",
) -> list[list[str]]:
    """The image files of each class folder of `root`, from the cached index when fresh.

    Args:
        root: the folder holding one sub-folder per class.
        classes: the class folder names, sorted.
        cache: where the index is cached (the user's cache folder when None).
        progress: called as (task, done, total) while folders are scanned.
        nested: look into sub-folders of the class folders too (paths like `a/b.png`).
        kind: the index's family, part of its cache file name.

    Returns:
        Per class, its files' paths relative to the class folder, sorted.
    """
    cache_file = _index_cache_file(root, cache or cache_dir(), kind)
    files = _read_cache(cache_file, root, classes)
    if files:
        if progress is not None:
            progress(f"file index of {root} (cached)", len(classes), len(classes))
        return files
    log.info("scanning %d class folders of %s (cached afterwards)", len(classes), root)
    # The signature is taken before each folder is listed: a file added meanwhile makes
    # the cache stale rather than missing from it.
    what = f"scanning {root}"
    dirs: list[str] = []
    if nested:
        files, stamps = _scan_many_nested([root / c for c in classes], what, progress)
        dirs = [f"{c}/{d}" for c, times in zip(classes, stamps, strict=True) for d in times if d]
        sig = [t[""] for t in stamps] + [
            t for times in stamps for d, t in times.items() if d]
    else:
        sig = _signature(root, classes)
        files = _scan_many([root / c for c in classes], what, progress)
    _write_cache(
        cache_file,
        {"version": INDEX_VERSION, "root": str(root.resolve()), "classes": classes,
         "dirs": dirs, "mtimes": sig, "files": files},
    )
    return files


def scan_train(
    root: Path, cache: Path | None = None, progress: Progress | None = None
) -> TrainIndex:
    """Index the train folder (one sub-folder per class), using the cached index if fresh.

    Raises:
        SettingsError: the folder is missing, has no class folders, more than 1000, or
            no images.
    """
    classes = subfolders(root, "data_path")
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
    files = scan_class_files(root, classes, cache, progress)
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
    class_dirs = subfolders(root, "val_path")
    flat = _scan_folder(root)
    if class_dirs and flat:
        raise SettingsError(
            f"val_path '{root}' holds both sub-folders and {len(flat)} images directly; "
            "use one layout: all images flat, or all in class sub-folders."
        )
    if class_dirs:
        unknown = [s for s in class_dirs if s not in class_of]
        if unknown:
            raise SettingsError(
                f"val_path '{root}': sub-folder(s) {', '.join(unknown[:3])} are not class "
                "folders of data_path; class sub-folders must use the train folder's names."
            )
        names = _scan_many([root / s for s in class_dirs], f"scanning {root}", progress)
        files = [
            (root / s / n, class_of[s])
            for s, ns in zip(class_dirs, names, strict=True)
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
    if not class_dirs:
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

