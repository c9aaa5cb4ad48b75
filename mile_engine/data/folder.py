"""`dataset = "folder"`: the user's own images, one sub-folder per class.

- Classes: the sub-folders of `data_path`, sorted by name; a class's index is its
  position (torchvision's `ImageFolder` order). Inside a class folder images may sit in
  further sub-folders at any depth; hidden files and folders are skipped; any file with
  an image extension counts, whatever format PIL then finds in it.
- Validation: `val_path` in the same layout. Its single labels are its folders; its label
  sets come from `val_labels_path` (`label_sets`), and without one each image's single
  label is its set, which the run says in its first lines.
- Everything else (cached file index, workers, device JPEG decoding, corrupt files
  skipped and counted) is ImageNet's: `file_source.FileSource` and `imagenet_files`;
  `decode` is resolved as ImageNet's (`imagenet.resolve_decode`).

`survey_folders` reads the layout without raising, listing every problem (errors that
make training impossible, warnings that do not), for the source and for `mile-tui data
check`; `check_images` decodes every file for the latter.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mile_engine.config.schema import Crop, Decode, Settings, SettingsError
from mile_engine.config.validation import shown_path
from mile_engine.data.file_source import (
    FileSource,
    ImageNetInput,
    IndexedFiles,
    InputSpecLike,
    Warn,
)
from mile_engine.data.idx import Progress
from mile_engine.data.image_files import (
    DECODE_ERRORS,
    open_image,
    pil_rgb,
    probe_decoding,
)
from mile_engine.data.imagenet import resolve_decode
from mile_engine.data.imagenet_files import (
    entry_is_file,
    is_image_name,
    scan_class_files,
    subfolders,
)
from mile_engine.data.label_sets import LabelSets, read_label_sets
from mile_engine.data.real_labels import real_table

# Problems listed in one message before "and N more".
SHOWN = 3
# What a refused folder's message suggests next.
DATA_CHECK = "`mile-tui data check` decodes them all"


def _count(n: int, one: str, many: str | None = None) -> str:
    """`n` and the noun in the right number: 1 image, 2 images."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def _some(names: Sequence[str]) -> str:
    """The first few names, and how many more."""
    text = ", ".join(names[:SHOWN])
    return text + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


@dataclass
class FolderSurvey:
    """What the training and validation folders hold.

    Attributes:
        classes: the class names, sorted (the training folder's sub-folders).
        train_files, val_files: per class, its images relative to its class folder.
        label_sets: the sets from `val_labels_path`; None without one.
        errors: problems that make training impossible (one line each).
        warnings: problems that do not (one line each, counted).
    """

    classes: list[str] = field(default_factory=list)
    train_files: list[list[str]] = field(default_factory=list)
    val_files: list[list[str]] = field(default_factory=list)
    label_sets: LabelSets | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def train_paths(self) -> list[str]:
        """Training images relative to `data_path`, class by class."""
        return _joined(self.classes, self.train_files)

    @property
    def val_paths(self) -> list[str]:
        """Validation images relative to `val_path`, class by class (the index order)."""
        return _joined(self.classes, self.val_files)

    def labels(self, files: list[list[str]]) -> torch.Tensor:
        """int64 [N]: the class of each image of `files`, class by class."""
        counts = torch.tensor([len(f) for f in files], dtype=torch.int64)
        return torch.repeat_interleave(torch.arange(len(files)), counts)

    def val_sets(self) -> list[list[int]]:
        """Each validation image's label set: the file's, else its single label."""
        singles = self.labels(self.val_files).tolist()
        if self.label_sets is None:
            return [[label] for label in singles]
        return [s if s is not None else [label]
                for s, label in zip(self.label_sets.sets, singles, strict=True)]


def _joined(classes: list[str], files: list[list[str]]) -> list[str]:
    return [f"{c}/{name}" for c, names in zip(classes, files, strict=True) for name in names]


def _loose_images(root: Path) -> int:
    """Images directly in `root`, outside every class folder (ignored)."""
    with os.scandir(root) as entries:
        return sum(1 for e in entries if is_image_name(e.name) and entry_is_file(e))


def survey_folders(
    data_path: Path,
    val_path: Path,
    val_labels_path: Path | None = None,
    cache: Path | None = None,
    progress: Progress | None = None,
) -> FolderSurvey:
    """Index the training and validation folders and the label file; never raises for a
    problem of the data, listing it in `errors` or `warnings` instead."""
    survey = FolderSurvey()
    listed: list[list[str]] = []
    for key, root in (("data_path", data_path), ("val_path", val_path)):
        try:
            listed.append(subfolders(root, key))
        except SettingsError as exc:  # both folders are looked at, so both are reported
            survey.errors.append(str(exc))
    if survey.errors:
        return survey
    classes, val_classes = listed
    if not classes:
        survey.errors.append(
            f"data_path '{shown_path(data_path)}' has no sub-folders; put each class's "
            "images in a sub-folder named after the class (data_path/cat/0001.jpg, ...).")
        return survey
    survey.classes = classes
    survey.train_files = scan_class_files(data_path, classes, cache, progress, nested=True,
                                          kind="folder")
    for key, root in (("data_path", data_path), ("val_path", val_path)):
        loose = _loose_images(root)
        if loose:
            survey.warnings.append(
                f"{key}: {loose} image(s) directly in '{shown_path(root)}' are ignored; "
                "images belong in their class's sub-folder.")
    empty = [c for c, f in zip(classes, survey.train_files, strict=True) if not f]
    if len(empty) == len(classes):
        survey.errors.append(f"data_path '{shown_path(data_path)}': the class folders hold "
                             "no images.")
    elif empty:
        survey.warnings.append(
            f"data_path: {len(empty)} class folder(s) hold no images ({_some(empty)}); they "
            "stay classes, with nothing to learn them from.")
    index = {c: i for i, c in enumerate(classes)}
    strangers = [c for c in val_classes if c not in index]
    if strangers:
        survey.errors.append(
            f"val_path '{shown_path(val_path)}': class folder(s) {_some(strangers)} are not "
            "in data_path; every validation class must be a training class (same folder "
            "names).")
    present = [c for c in val_classes if c in index]
    found = scan_class_files(val_path, present, cache, progress, nested=True, kind="folder")
    by_class = dict(zip(present, found, strict=True))
    survey.val_files = [by_class.get(c, []) for c in classes]
    if not any(survey.val_files):
        survey.errors.append(
            f"val_path '{shown_path(val_path)}' holds no images in class sub-folders named "
            "like data_path's.")
        return survey
    unseen = [c for c, f in zip(classes, survey.val_files, strict=True) if not f]
    if unseen:
        survey.warnings.append(
            f"val_path: {len(unseen)} class(es) have no validation images ({_some(unseen)}).")
    if val_labels_path is None:
        survey.warnings.append(
            "val_labels_path is empty: each validation image's label set is its single "
            "label (its folder), so the ReaL metrics measure single-label agreement; give "
            "a file of full label sets to score multi-label predictions.")
        return survey
    try:
        sets = read_label_sets(val_labels_path, survey.val_paths, classes)
    except SettingsError as exc:
        survey.errors.append(str(exc))
        return survey
    survey.label_sets = sets
    if sets.unknown_files:
        survey.warnings.append(
            f"val_labels_path: {_count(len(sets.unknown_files), 'entry names', 'entries name')}"
            f" no image of val_path ({_some(sets.unknown_files)}); ignored.")
    missing = len(sets.sets) - sets.covered
    if missing:
        nameless = [p for p, s in zip(survey.val_paths, sets.sets, strict=True) if s is None]
        survey.warnings.append(
            f"val_labels_path: {missing} of {_count(len(sets.sets), 'validation image')} "
            f"have no entry ({_some(nameless)}); their single label is their set.")
    return survey


@dataclass
class ImageCheck:
    """What decoding every file found.

    Attributes:
        formats: images per format PIL found ("JPEG", "PNG", ...) and colour mode.
        unreadable: (path, reason) of every file that cannot be decoded.
    """

    formats: Counter[str] = field(default_factory=Counter)
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def check_images(
    root: Path, paths: Sequence[str], progress: Progress | None = None
) -> ImageCheck:
    """Decode every file as training would (to RGB); count formats, list failures."""
    check = ImageCheck()
    for i, rel in enumerate(paths):
        path = os.path.join(root, rel)
        try:
            with open_image(path) as image:
                kind = f"{image.format} {image.mode}"
                pil_rgb(image)  # decodes every pixel, as the loader does
        except DECODE_ERRORS as exc:
            check.unreadable.append((path, f"{type(exc).__name__}: {exc}"))
        else:
            check.formats[kind] += 1
        if progress is not None and (i + 1 == len(paths) or i % 256 == 0):
            progress(f"decoding {root}", i + 1, len(paths))
    return check


def training_sets(path: Path, survey: FolderSurvey, notes: list[str]) -> torch.Tensor:
    """The training images' label sets from `train_labels_path`, as int64 [N, K] padded
    with -1; an image without an entry has its single label as its set (said in `notes`).

    Raises:
        SettingsError: the file cannot be read or parsed (`label_sets`' messages, which
            name val_labels_path, renamed to train_labels_path).
    """
    paths = survey.train_paths
    try:
        sets = read_label_sets(path, paths, survey.classes)
    except SettingsError as exc:
        raise SettingsError(str(exc).replace("val_labels_path", "train_labels_path")
                            .replace("validation image", "training image")
                            .replace("val_path", "data_path")) from None
    singles = survey.labels(survey.train_files).tolist()
    rows = [s if s is not None else [label]
            for s, label in zip(sets.sets, singles, strict=True)]
    missing = len(rows) - sets.covered
    if missing:
        notes.append(f"train_labels_path: {missing} of {_count(len(rows), 'training image')} "
                     "have no entry; their single label is their set.")
    if sets.unknown_files:
        named = _count(len(sets.unknown_files), "entry names", "entries name")
        notes.append(f"train_labels_path: {named} no image of data_path; ignored.")
    return real_table(rows, torch.arange(len(rows)), "train_labels_path")


class FolderSource(FileSource):
    """The user's class-per-sub-folder images: training from `data_path`, validation
    from `val_path` with the label sets of `val_labels_path`.

    Attributes:
        class_names: the class folders' names, sorted; num_classes is their number.
        survey: what the folders hold (`survey_folders`).
        sets_from: where the validation label sets come from, in words (for the
            evaluation panel): the label file, or "single labels" without one.
    """

    def __init__(
        self,
        data_path: Path,
        val_path: Path,
        val_labels_path: Path | None,
        batch_size: int,
        num_workers: int,
        device: torch.device,
        seed: int,
        spec: InputSpecLike | None = None,
        progress: Progress | None = None,
        warn: Warn | None = None,
        cache: Path | None = None,
        rank: int = 0,
        world_size: int = 1,
        decode: Decode = "workers",
        crop: Crop = "random-resized",
        train_labels_path: Path | None = None,
    ) -> None:
        survey = survey_folders(data_path, val_path, val_labels_path, cache, progress)
        if survey.errors:
            more = len(survey.errors) - 1
            raise SettingsError(survey.errors[0] + (
                f" ({more} more problem(s): `mile-tui data check` lists them all.)"
                if more else ""))
        train_paths = survey.train_paths
        if len(train_paths) // world_size < batch_size:
            raise SettingsError(
                f"data_path '{shown_path(data_path)}' holds {len(train_paths)} images, fewer "
                f"than batch_size = {batch_size}" + (
                    f" x {world_size} processes." if world_size > 1 else "."))
        train_notes: list[str] = []
        train_sets = (None if train_labels_path is None else
                      training_sets(train_labels_path, survey, train_notes))
        probe_decoding("data_path", data_path, train_paths, DATA_CHECK)
        probe_decoding("val_path", val_path, survey.val_paths, DATA_CHECK)
        notes = list(survey.warnings) + train_notes
        resolved, fallback_note = resolve_decode(decode, device)
        if fallback_note:
            notes.append(fallback_note)
        self.survey = survey
        self.sets_from = (
            f"{shown_path(val_labels_path)} ({survey.label_sets.form})"
            if val_labels_path is not None and survey.label_sets is not None
            else "single labels (no val_labels_path)")
        sets = survey.val_sets()
        val_root = str(val_path)
        super().__init__(
            IndexedFiles(str(data_path), train_paths, survey.labels(survey.train_files),
                         train_sets),
            IndexedFiles(val_root, survey.val_paths, survey.labels(survey.val_files),
                         real_table(sets, torch.arange(len(sets)), "val_labels_path")),
            num_classes=len(survey.classes),
            class_names=list(survey.classes),
            batch_size=batch_size,
            spec=spec or ImageNetInput(),
            num_workers=num_workers,
            device=device,
            seed=seed,
            warn=warn,
            rank=rank,
            world_size=world_size,
            decode=resolved,
            notes=notes,
            crop=crop,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        device: torch.device,
        progress: Progress | None = None,
        warn: Warn | None = None,
        rank: int = 0,
        world_size: int = 1,
        spec: InputSpecLike | None = None,
    ) -> FolderSource:
        """Build the source from `data_path`, `val_path`, `val_labels_path` and friends.

        `spec` is the model's input (`mile_engine.models.input_spec`); None gives
        ImageNet's usual one at `image_size` (224 when 0).
        """
        labels = settings.val_labels_path
        train_labels = settings.train_labels_path
        return cls(
            Path(settings.data_path).expanduser(),
            Path(settings.val_path).expanduser(),
            Path(labels).expanduser() if labels else None,
            batch_size=settings.batch_size,
            num_workers=settings.num_workers,
            device=device,
            seed=settings.seed,
            spec=spec or ImageNetInput.of_size(settings.image_size),
            progress=progress,
            warn=warn,
            rank=rank,
            world_size=world_size,
            decode=settings.decode,
            crop=settings.crop,
            train_labels_path=Path(train_labels).expanduser() if train_labels else None,
        )
