"""Full label sets of validation images from a file (`val_labels_path`): ReaL's role for
the user's own folders.

Three forms, told apart by the file's first non-blank character:

- CSV, one image a row: `file,label;label;...` (an optional header row whose first
  cell is `file`, `filename`, `path` or `image`). No label after the comma: an empty set.
- JSON object: `{"file": ["label", ...], ...}`.
- JSON list of lists (ReaL's `real.json` form): entry i is the set of the i-th validation
  image in sorted file-name order (by base name, then by path), so ReaL's own file fits
  ImageNet's validation images in class sub-folders. It must have one entry an image.

A file is named by its path relative to `val_path` (`cat/0001.jpg`), or by its base name
alone when no other validation image has that name. A label is a class name (the name of
a class folder) or a class index (the position of the name in sorted order): JSON
integers are indices; a string is a class name when one is so named, else an index.
An empty set (ReaL's "no label fits") leaves the image out of the ReaL metrics.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mile_engine.config.schema import SettingsError
from mile_engine.config.validation import shown, shown_path
from mile_engine.oserrors import FileTooLargeError, NotRegularFileError, read_regular

HEADER_CELLS = frozenset({"file", "filename", "file_name", "path", "image", "image_id"})
KEY = "val_labels_path"
# Far above any real label file (ImageNet's real.json is about 1.5 MB); it bounds what a
# wrong path (a disk image, a log) can take from memory.
MAX_LABEL_FILE_BYTES = 1 << 30
# A class index has a few digits; a longer number is a mistake, refused before Python
# would spend time converting (or refuse) it.
MAX_INDEX_DIGITS = 18


@dataclass(frozen=True)
class LabelSets:
    """The label sets a file gives the validation images.

    Attributes:
        sets: per validation image (in the order given), its classes ascending; None
            when the file has no entry for it.
        unknown_files: entries of the file that name no validation image, in file order.
        form: "csv", "json object" or "json list".
    """

    sets: list[list[int] | None]
    unknown_files: list[str]
    form: str

    @property
    def covered(self) -> int:
        """Validation images with an entry."""
        return sum(s is not None for s in self.sets)

    @property
    def mean_labels(self) -> float:
        """Mean size of the sets of the images with an entry (0 when none has one)."""
        sizes = [len(s) for s in self.sets if s is not None]
        return sum(sizes) / len(sizes) if sizes else 0.0


def sorted_by_name(files: Sequence[str]) -> list[int]:
    """Indices of `files` in the list form's order: by base name, then by path."""
    return sorted(range(len(files)), key=lambda i: (os.path.basename(files[i]), files[i]))


class _Labels:
    """Class names or indices to class indices, with messages that name the place."""

    def __init__(self, classes: Sequence[str], where: str) -> None:
        self.index = {name: i for i, name in enumerate(classes)}
        self.classes = list(classes)
        self.where = where

    def of(self, token: Any, place: str) -> int:
        count = len(self.classes)
        if isinstance(token, int) and not isinstance(token, bool):
            if 0 <= token < count:
                return token
            raise SettingsError(
                f"{self.where}: {place}: class index {token} is outside 0..{count - 1} "
                f"({count} classes)."
            )
        if not isinstance(token, str):
            raise SettingsError(
                f"{self.where}: {place}: {shown(token)} is not a class name or index."
            )
        text = token.strip()
        if text in self.index:
            return self.index[text]
        if (text.isascii() and text.isdigit() and len(text) <= MAX_INDEX_DIGITS
                and int(text) < count):
            return int(text)
        close = difflib.get_close_matches(text, self.classes, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise SettingsError(
            f"{self.where}: {place}: {shown(text)} is not a class of data_path (its class "
            f"folders) nor a class index 0..{count - 1}.{hint}"
        )


class _Files:
    """File names of the label file to validation images."""

    def __init__(self, files: Sequence[str], where: str) -> None:
        self.where = where
        self.by_path = {f: i for i, f in enumerate(files)}
        by_name: dict[str, list[int]] = {}
        for i, f in enumerate(files):
            by_name.setdefault(os.path.basename(f), []).append(i)
        self.by_name = by_name

    def of(self, name: str, place: str) -> int | None:
        """The image a name means; None when no validation image has it."""
        key = name.strip().replace("\\", "/")
        while key.startswith("./"):
            key = key[2:]
        if key in self.by_path:
            return self.by_path[key]
        found = self.by_name.get(key, [])
        if len(found) > 1:
            raise SettingsError(
                f"{self.where}: {place}: {shown(key)} names {len(found)} validation images "
                "(in different folders); give its path relative to val_path."
            )
        return found[0] if found else None


def read_label_sets(
    path: Path, files: Sequence[str], classes: Sequence[str]
) -> LabelSets:
    """Read the label sets of the validation images `files` from the file at `path`.

    Args:
        path: the CSV or JSON label file.
        files: the validation images, as paths relative to `val_path` ("/"-separated).
        classes: the class names, sorted (their positions are the class indices).

    Raises:
        SettingsError: an unreadable or malformed file, an unknown class name or index,
            an image given twice, or a list whose length is not the number of images.
    """
    where = f"{KEY} {shown_path(path)}"
    try:
        # A named pipe must not block the run, nor a device fill the memory.
        text = read_regular(path, MAX_LABEL_FILE_BYTES).decode("utf-8-sig")
    except FileNotFoundError:
        raise SettingsError(f"{where} does not exist.") from None
    except IsADirectoryError:
        raise SettingsError(f"{where} is a folder; give a CSV or JSON file.") from None
    except (NotRegularFileError, FileTooLargeError) as exc:
        raise SettingsError(f"{where}: {exc.strerror}; give a CSV or JSON file.") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{where}: not UTF-8 text; save it as UTF-8.") from None
    except OSError as exc:
        raise SettingsError(f"{where}: cannot read it ({exc.strerror}).") from None
    labels = _Labels(classes, where)
    names = _Files(files, where)
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            document = json.loads(text, object_pairs_hook=_no_repeats(where),
                                  parse_int=_index(where), parse_float=_finite(where),
                                  parse_constant=_finite(where))
        except json.JSONDecodeError as exc:
            raise SettingsError(
                f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
            ) from None
        except RecursionError:
            raise SettingsError(f"{where}: the JSON nests too deeply.") from None
        if isinstance(document, list):
            return _from_list(document, files, labels, where)
        return _from_entries(
            ((str(k), v, f"entry {shown(k)}") for k, v in document.items()),
            files, labels, names, where, "json object")
    return _from_entries(_csv_rows(text, where), files, labels, names, where, "csv")


def _no_repeats(where: str) -> Any:
    """A JSON object hook that refuses a name given twice, as the CSV form does (json
    would keep the last entry and drop the first without a word)."""

    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise SettingsError(
                    f"{where}: entry {shown(key)} is given twice; give each image once."
                )
            seen[key] = value
        return seen

    return build


def _index(where: str) -> Any:
    """A JSON integer hook: class indices are short; a number of thousands of digits
    is refused by name (Python's own limit would raise a bare ValueError)."""

    def build(text: str) -> int:
        if len(text.lstrip("-")) > MAX_INDEX_DIGITS:
            raise SettingsError(
                f"{where}: a number of {len(text.lstrip('-')):,} digits; labels are class "
                "names or class indices."
            )
        return int(text)

    return build


def _finite(where: str) -> Any:
    """A JSON hook for non-integer numbers: never a class index, refused by name."""

    def build(text: str) -> float:
        raise SettingsError(
            f"{where}: the number {shown(text[:40])} is not a class name or index."
        )

    return build


def _csv_lines(text: str, where: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each CSV row; csv's own refusals (a field over its 128 KiB
    limit, a NUL byte) become a SettingsError naming the line."""
    reader = csv.reader(io.StringIO(text))
    number = 0
    while True:
        number += 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise SettingsError(
                f"{where}: line {reader.line_num}: not readable as CSV ({exc})."
            ) from None
        yield number, row


def _csv_rows(text: str, where: str) -> list[tuple[str, Any, str]]:
    rows: list[tuple[str, Any, str]] = []
    for number, row in _csv_lines(text, where):
        if not row or not any(cell.strip() for cell in row):
            continue
        if not rows and number == 1 and row[0].strip().lower() in HEADER_CELLS:
            continue
        if len(row) > 2:
            raise SettingsError(
                f"{where}: line {number}: expected 'file,label;label;...', got "
                f"{len(row)} fields; separate labels with ';' (quote a file name holding a "
                "comma)."
            )
        tokens = [t.strip() for t in row[1].split(";")] if len(row) == 2 else []
        rows.append((row[0], [t for t in tokens if t], f"line {number}"))
    return rows


def _from_entries(
    entries: Any, files: Sequence[str], labels: _Labels, names: _Files, where: str,
    form: str,
) -> LabelSets:
    sets: list[list[int] | None] = [None] * len(files)
    unknown: list[str] = []
    for name, value, place in entries:
        if not isinstance(value, list):
            raise SettingsError(
                f"{where}: {place}: expected a list of labels, got {shown(value)}."
            )
        image = names.of(name, place)
        if image is None:
            unknown.append(name)
            continue
        if sets[image] is not None:
            raise SettingsError(
                f"{where}: {place}: {shown(files[image])} already has a label set; give each "
                "image once."
            )
        sets[image] = sorted({labels.of(token, place) for token in value})
    return LabelSets(sets, unknown, form)


def _from_list(
    document: list[Any], files: Sequence[str], labels: _Labels, where: str
) -> LabelSets:
    if len(document) != len(files):
        raise SettingsError(
            f"{where}: a list of {len(document)} label sets, but val_path holds "
            f"{len(files)} images; the list form needs one entry per image, in sorted "
            "file-name order (or use the {\"file\": [labels]} form)."
        )
    sets: list[list[int] | None] = [None] * len(files)
    for entry, image in enumerate(sorted_by_name(files)):
        value = document[entry]
        place = f"entry {entry} ({files[image]})"
        if not isinstance(value, list):
            raise SettingsError(f"{where}: {place}: expected a list of labels, got "
                                f"{shown(value)}.")
        sets[image] = sorted({labels.of(token, place) for token in value})
    return LabelSets(sets, [], "json list")
