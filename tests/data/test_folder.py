"""dataset = "folder" on generated folders: layout, label sets, decoding of awkward
files (CMYK, grey, RGBA, odd sizes, corrupt), the cached index, the training label
file, and each error.

Validation images are solid colours whose red level encodes their number, so a batch
row can be traced back to its file and checked against the label set written for it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mile_engine.config.schema import SettingsError
from mile_engine.data import imagenet_files
from mile_engine.data.folder import FolderSource, check_images, survey_folders
from mile_engine.model_inputs import MEAN, STD
from mile_tui.cli import app
from tests.helpers.images import CLASSES, SETS, TRAIN, VAL_ORDER, Tree, make_tree, write_image

CPU = torch.device("cpu")
SIZE = 32
@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return make_tree(tmp_path / "data")


def source(tree: Tree, labels: Path | None = None, **changes: object) -> FolderSource:
    options: dict[str, object] = {"batch_size": 4, "num_workers": 0, "device": CPU,
                                  "seed": 0, "warn": lambda text: None, "decode": "workers"}
    options.update(changes)
    options.setdefault("spec", _Spec(SIZE, SIZE, MEAN, STD))
    return FolderSource(tree.train, tree.val, labels, **options)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class _Spec:
    image_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# ---------------------------------------------------------------------- the layout


def test_survey_finds_classes_nested_files_and_labels(tree: Tree) -> None:
    survey = survey_folders(tree.train, tree.val, tree.labels)
    assert survey.errors == []
    assert survey.classes == CLASSES
    expected = sorted(f"{c}/{n}" for c, files in TRAIN.items() for n in files)
    assert survey.train_paths == expected  # hidden and .txt files left out
    assert survey.labels(survey.train_files).tolist() == [
        CLASSES.index(p.split("/")[0]) for p in expected]
    assert survey.val_paths == VAL_ORDER
    # Sets by hand: names and indices (1 = bee), an empty set, a missing entry (v4).
    assert survey.val_sets() == [[1], [0, 2], [], [2], [2]]
    assert any("1 of 5 validation images have no entry (cow/v4.png)" in w
               for w in survey.warnings)


def test_without_a_label_file_the_single_label_is_the_set(tree: Tree) -> None:
    notes: list[str] = []
    src = source(tree, warn=notes.append)
    assert src.survey.val_sets() == [[0], [0], [1], [2], [2]]
    assert any("val_labels_path is empty" in n and "single label" in n for n in notes)
    assert src.sets_from == "single labels (no val_labels_path)"
    assert source(tree, tree.labels).sets_from == f"{tree.labels} (json object)"
    _, real = src.val_targets()
    assert real.int().tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]]


def test_counted_warnings(tree: Tree) -> None:
    (tree.train / "dry").mkdir()            # an empty class
    write_image(tree.train / "loose.png", "png")   # outside every class folder
    labels = tree.labels.parent / "more.json"
    labels.write_text(json.dumps({**SETS, "lost.png": ["ant"], "gone/x.png": []}))
    survey = survey_folders(tree.train, tree.val, labels)
    assert survey.errors == [] and survey.classes == ["ant", "bee", "cow", "dry"]
    text = "\n".join(survey.warnings)
    assert "1 class folder(s) hold no images (dry)" in text
    assert "1 class(es) have no validation images (dry)" in text
    assert "data_path: 1 image(s) directly in" in text
    assert "2 entries name no image of val_path (lost.png, gone/x.png)" in text


@pytest.mark.parametrize(("damage", "message"), [
    ("val-only class", r"class folder\(s\) yak are not in data_path"),
    ("no classes", r"has no sub-folders; put each class's images"),
    ("empty train", r"the class folders hold no images"),
    ("empty val", r"holds no images in class sub-folders"),
    ("missing val", r"val_path '.*' does not exist"),
    ("unknown class in labels", r"'gnu' is not a class of data_path"),
])
def test_errors_are_settings_errors(tmp_path: Path, damage: str, message: str) -> None:
    tree = make_tree(tmp_path / "d")
    if damage == "val-only class":
        write_image(tree.val / "yak" / "y.png", "png")
    elif damage == "no classes":
        tree = dataclasses.replace(tree, train=tmp_path / "flat")
        write_image(tree.train / "a.png", "png")
    elif damage == "empty train":
        tree = dataclasses.replace(tree, train=tmp_path / "hollow")
        (tree.train / "ant").mkdir(parents=True)
    elif damage == "empty val":
        tree = dataclasses.replace(tree, val=tmp_path / "hollow")
        (tree.val / "ant").mkdir(parents=True)
    elif damage == "missing val":
        tree = dataclasses.replace(tree, val=tmp_path / "nowhere")
    else:
        tree.labels.write_text(json.dumps({"v2.jpg": ["gnu"]}))
    with pytest.raises(SettingsError, match=message) as error:
        source(tree, tree.labels)
    assert "\n" not in str(error.value)


def test_both_missing_folders_are_reported(tmp_path: Path) -> None:
    survey = survey_folders(tmp_path / "no-train", tmp_path / "no-val")
    assert len(survey.errors) == 2
    assert "data_path" in survey.errors[0] and "val_path" in survey.errors[1]


def test_fewer_images_than_a_batch(tree: Tree) -> None:
    with pytest.raises(SettingsError, match="holds 9 images, fewer than batch_size = 16"):
        source(tree, batch_size=16)


def test_every_problem_is_listed_and_the_source_names_the_first(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "d")
    write_image(tree.val / "yak" / "y.png", "png")
    tree.labels.write_text("not json, and v2.jpg,gnu\n")
    survey = survey_folders(tree.train, tree.val, tree.labels)
    assert len(survey.errors) == 2
    with pytest.raises(SettingsError, match=r"1 more problem\(s\): `mile-tui data check`"):
        source(tree, tree.labels)


# ---------------------------------------------------------------------- the index cache


def test_the_index_is_cached_and_a_nested_change_invalidates_it(
    tree: Tree, monkeypatch: pytest.MonkeyPatch, private_cache: Path
) -> None:
    first = survey_folders(tree.train, tree.val)
    assert len(list((private_cache / "mile-tui").glob("folder-index-*.json"))) == 2
    real_scan = imagenet_files._scan_tree

    def no_listing(folder: Path) -> object:
        raise AssertionError(f"listed {folder} again")

    monkeypatch.setattr(imagenet_files, "_scan_tree", no_listing)
    assert survey_folders(tree.train, tree.val).train_paths == first.train_paths
    # A file added two levels down changes only that folder's mtime.
    monkeypatch.setattr(imagenet_files, "_scan_tree", real_scan)
    folder = tree.train / "ant" / "deep" / "er"
    write_image(folder / "new.png", "png")
    stat = folder.stat()  # a coarse clock must not hide the change
    os.utime(folder, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    again = survey_folders(tree.train, tree.val)
    assert "ant/deep/er/new.png" in again.train_paths
    assert len(again.train_paths) == len(first.train_paths) + 1


# ---------------------------------------------------------------------- batches


DECODERS = pytest.mark.parametrize("decode", ["workers", "device"])


@DECODERS
def test_training_batches_decode_every_format_and_skip_the_corrupt_file(
    tree: Tree, decode: str
) -> None:
    notes: list[str] = []
    src = source(tree, batch_size=9, warn=notes.append, decode=decode)
    assert src.num_classes == 3 and src.class_names == CLASSES
    batch = src.train_batch()  # the whole epoch in one batch
    assert batch.images.shape == (9, 3, SIZE, SIZE) and batch.real is None
    # 3 ants, 4 bees (the corrupt one replaced by a neighbour, of any class), 2 cows.
    counts = batch.labels.bincount(minlength=3).tolist()
    assert sum(counts) == 9 and counts[0] >= 3 and counts[2] >= 2
    corrupt = str(tree.train / "bee" / "d.jpeg")
    assert list(src.skipped_files) == [corrupt]
    assert any(corrupt in n and "1 so far" in n for n in notes)
    assert bool(torch.isfinite(batch.images).all())


def entries_of(images: torch.Tensor, mean: float = MEAN[0], std: float = STD[0]) -> list[int]:
    """Each validation row's image number, from its red level."""
    level = (images[:, 0].mean(dim=(1, 2)) * std + mean) * 255
    return ((level - 15) / 20).round().long().tolist()


@DECODERS
def test_validation_batches_carry_each_files_set(tree: Tree, decode: str) -> None:
    src = source(tree, tree.labels, decode=decode)
    batches = list(src.val_batches(2))
    images = torch.cat([b.images for b in batches])
    assert entries_of(images) == [0, 1, 2, 3, 4]
    assert torch.cat([b.labels for b in batches]).tolist() == [0, 0, 1, 2, 2]
    real = torch.cat([b.real for b in batches if b.real is not None])
    assert real.shape == (5, 3)
    by_hand = [[1], [0, 2], [], [2], [2]]  # from SETS; v4 has no entry: its folder's
    assert [r.nonzero().flatten().tolist() for r in real] == by_hand


def test_the_input_spec_sets_size_resize_and_normalisation(tree: Tree) -> None:
    """A 40x30 image resized to a short side of 48, centre-cropped to 24, normalised
    with the spec's mean and std: a solid colour stays that colour."""
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.5, 1.0)
    src = source(tree, spec=_Spec(24, 48, mean, std))
    assert src.input_shape == (3, 24, 24)
    images = next(iter(src.val_batches(5))).images
    assert images.shape == (5, 3, 24, 24)
    assert entries_of(images, mean[0], std[0]) == [0, 1, 2, 3, 4]
    green = images[:, 1] * std[1] + mean[1]
    assert torch.allclose(green, torch.full_like(green, 128 / 255), atol=3 / 255)


def test_validation_samples_name_their_sets(tree: Tree) -> None:
    src = source(tree, tree.labels)
    sample = src.validation_sample(1)
    assert sample is not None and sample.label == 0 and sample.real == [0, 2]
    assert sample.image.shape == (SIZE, SIZE, 3) and sample.image.dtype == torch.uint8


# ---------------------------------------------------------------------- data check


def test_check_images_counts_formats_and_lists_the_corrupt_file(tree: Tree) -> None:
    survey = survey_folders(tree.train, tree.val)
    check = check_images(tree.train, survey.train_paths)
    assert check.formats == {"PNG RGB": 4, "JPEG RGB": 1, "JPEG CMYK": 1, "JPEG L": 1,
                             "PNG RGBA": 1}
    assert [p for p, _ in check.unreadable] == [str(tree.train / "bee" / "d.jpeg")]


@DECODERS
def test_the_validation_crop_follows_the_specs_resize_side(tmp_path: Path, decode: str) -> None:
    """A 40x30 JPEG, a 20x20 block in its centre: resized to a short side of 48 and
    centre-cropped to 24, the crop covers the middle 15x15 source pixels, inside the
    block. The usual 256/224 resize (27 for 24) would take 27x27 and reach the border."""
    tree = make_tree(tmp_path / "d")
    picture = Image.new("RGB", (40, 30), (0, 0, 0))
    picture.paste((250, 250, 250), (10, 5, 30, 25))
    for path in tree.val.rglob("*.*"):
        path.unlink()
    picture.save(tree.val / "ant" / "block.jpg", format="JPEG", quality=95)
    spec = _Spec(24, 48, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    images = next(iter(source(tree, spec=spec, decode=decode).val_batches(1))).images
    assert images.shape == (1, 3, 24, 24)
    assert float(images.min()) * 255 > 200  # no black border in the crop
    usual = _Spec(24, 27, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    images = next(iter(source(tree, spec=usual, decode=decode).val_batches(1))).images
    assert float(images.min()) * 255 < 50  # the border is in


# ---------------------------------------------------------------------- symbolic link loops
@pytest.mark.parametrize(("where", "link", "target"), [
    ("train/ant", "loop", "loop"),                 # a folder-named link to itself
    ("train/bee", "self.png", "self.png"),         # an image-named link to itself
    ("train/ant", "a", "b"),                       # two links pointing at each other
    ("val/ant", "deep", "deep"),                   # in the validation folder
    ("train", "zz-loop", "zz-loop"),               # at the class level
])
def test_symbolic_link_loops_are_skipped_like_broken_links(
    tree: Tree, where: str, link: str, target: str
) -> None:
    clean = survey_folders(tree.train, tree.val, tree.labels)
    folder = tree.train.parent / where
    (folder / link).symlink_to(target)
    if link == "a":
        (folder / "b").symlink_to("a")

    survey = survey_folders(tree.train, tree.val, tree.labels)

    # The same images, classes and problems as without the loop: a loop is no image.
    assert survey.errors == clean.errors
    assert (survey.classes, survey.train_paths, survey.val_paths) == (
        clean.classes, clean.train_paths, clean.val_paths)


# ---------------------------------------------------------------------- a headless run on a folder
# A headless run on a generated folder of 3 classes, end to end, as a user starts it.
ROOT = Path(__file__).resolve().parents[2]


def test_a_headless_folder_run_finishes_and_saves(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "data")
    runs = tmp_path / "runs"
    settings = {
        "dataset": "folder", "data_path": tree.train, "val_path": tree.val,
        "model": "resnet18", "image_size": 32, "batch_size": 4, "k_t": 2, "k_s": 1,
        "epoch_num": 1, "device": "cpu", "num_workers": 0, "checkpoint_path": runs,
    }
    args = [f"--set={key}={value}" for key, value in settings.items()]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "mile_tui", "run", "--headless", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # Without a label file the run says, before it starts, what its ReaL metrics mean.
    note = output.find("val_labels_path is empty")
    assert 0 <= note < output.find("run started"), output
    assert "skipped an undecodable image" in output and "d.jpeg" in output
    (run_dir,) = runs.iterdir()
    (saved,) = run_dir.glob("step-*.pt")
    state = torch.load(saved, map_location="cpu", weights_only=False)
    assert state["class_names"] == CLASSES


@pytest.mark.parametrize("broken", ["train", "val", "both"])
def test_a_folder_of_undecodable_images_is_refused_before_a_run_folder(
    tmp_path: Path, broken: str
) -> None:
    tree = make_tree(tmp_path / "data")
    spoilt = {"train": [tree.train], "val": [tree.val], "both": [tree.train, tree.val]}
    for root in spoilt[broken]:
        for path in root.rglob("*"):
            if path.is_file():
                path.write_bytes(b"not an image at all")
    runs = tmp_path / "runs"
    settings = {
        "dataset": "folder", "data_path": tree.train, "val_path": tree.val,
        "model": "resnet18", "image_size": 32, "batch_size": 4, "k_t": 2, "k_s": 1,
        "epoch_num": 1, "device": "cpu", "num_workers": 0, "checkpoint_path": runs,
    }
    args = [f"--set={key}={value}" for key, value in settings.items()]
    result = CliRunner().invoke(app, ["run", "--headless", *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    key = "val_path" if broken == "val" else "data_path"
    assert len(errors) == 1 and errors[0].startswith(f"error: {key} ")
    assert "can be decoded" in errors[0] and "Traceback" not in result.output
    assert not runs.exists() or not any(runs.iterdir())
    # `data check` refuses the same folders, with the same exit code.
    check = CliRunner().invoke(app, ["data", "check", *args])
    assert check.exit_code == 2, check.output


# ---------------------------------------------------------------------- training label sets
# The optional `train_labels_path`: each training batch carries its images' true sets (so
# that pseudo-label quality can be measured); an image without an entry keeps its single
# label as its set; a bad file is a settings error that names train_labels_path.

# By class: every ant image also shows a cow; bee images are listed as bee alone; cow
# images have no entry (their single label becomes their set).
BY_CLASS = {"ant": ["ant", "cow"], "bee": [1]}
EXPECTED = {0: [True, False, True], 1: [False, True, False], 2: [False, False, True]}


def test_training_batches_carry_the_files_sets(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "data")
    path = tmp_path / "train.json"
    path.write_text(json.dumps({f"{c}/{name}": BY_CLASS[c] for c, files in TRAIN.items()
                                if c in BY_CLASS for name in files}))
    notes: list[str] = []
    src = source(tree, tree.labels, warn=notes.append, train_labels_path=path)
    cows = len(TRAIN["cow"])
    assert any(f"train_labels_path: {cows} of" in n and "single label" in n for n in notes)
    seen = set()
    for _ in range(6):
        batch = src.train_batch()
        assert batch.real is not None and batch.real.shape == (4, len(CLASSES))
        for label, row in zip(batch.labels.tolist(), batch.real.tolist(), strict=True):
            assert row == EXPECTED[label]
            seen.add(label)
    assert seen == {0, 1, 2}


def test_without_the_file_training_batches_have_no_sets(tmp_path: Path) -> None:
    src = source(make_tree(tmp_path / "data"))
    assert src.train_batch().real is None


def test_a_bad_file_names_train_labels_path(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "data")
    path = tmp_path / "train.csv"
    path.write_text("ant/a.png,giraffe\n")
    with pytest.raises(SettingsError) as error:
        source(tree, tree.labels, train_labels_path=path)
    assert "train_labels_path" in str(error.value) and "val_labels_path" not in str(error.value)
