"""Validation label sets from a file: CSV, a JSON object and ReaL's JSON list, by class
name or index, against sets written out by hand."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mile_engine.config.schema import SettingsError
from mile_engine.data.label_sets import read_label_sets, sorted_by_name
from tests.helpers.hostile import call_unblocked, make_fifo

CLASSES = ["bird", "cat", "dog", "3"]  # sorted as the folders are; "3" is a class name
# Validation images as the folder index gives them: class by class, nested paths allowed.
FILES = ["3/z.png", "bird/a.png", "bird/deep/b.png", "cat/c.jpg", "dog/a2.png"]


def write(tmp_path: Path, text: str, name: str = "labels") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_names_indices_header_and_bare_names(tmp_path: Path) -> None:
    path = write(tmp_path, "file,labels\n"
                 "bird/a.png,bird;cat\n"
                 "b.png,2\n"                 # a unique base name; index 2 is "cat"
                 "cat/c.jpg, cat ; 3 ;1\n"    # "3" is the class named 3 (index 0), 1 is bird
                 "./dog/a2.png,\n")          # an empty set: no class fits
    sets = read_label_sets(path, FILES, sorted(CLASSES))
    # sorted(CLASSES) = ["3", "bird", "cat", "dog"]: 3 -> 0, bird -> 1, cat -> 2, dog -> 3
    assert sets.sets == [None, [1, 2], [2], [0, 1, 2], []]
    assert sets.form == "csv" and sets.unknown_files == [] and sets.covered == 4
    assert sets.mean_labels == pytest.approx((2 + 1 + 3 + 0) / 4)


def test_json_object_with_unknown_files_counted(tmp_path: Path) -> None:
    classes = sorted(CLASSES)
    document = {"3/z.png": ["dog", 1], "gone.png": ["cat"], "cat/c.jpg": []}
    sets = read_label_sets(write(tmp_path, json.dumps(document)), FILES, classes)
    assert sets.sets == [[1, 3], None, None, [], None]
    assert sets.unknown_files == ["gone.png"] and sets.form == "json object"


def test_json_list_follows_sorted_file_names(tmp_path: Path) -> None:
    # Base names sorted: a.png (bird/a.png), a2.png, b.png, c.jpg, z.png.
    assert [FILES[i] for i in sorted_by_name(FILES)] == [
        "bird/a.png", "dog/a2.png", "bird/deep/b.png", "cat/c.jpg", "3/z.png"]
    document = [[1], [3, 0], [], ["cat"], [2, 2]]
    sets = read_label_sets(write(tmp_path, json.dumps(document)), FILES, sorted(CLASSES))
    assert sets.sets == [[2], [1], [], [2], [0, 3]]
    assert sets.form == "json list"


@pytest.mark.parametrize(("text", "message"), [
    ("bird/a.png,horse\n", r"line 1: 'horse' is not a class"),
    ("bird/a.png,brid\n", r"Did you mean 'bird'"),
    ("bird/a.png,4\n", r"'4' is not a class .* index 0\.\.3"),
    ('{"bird/a.png": [7]}', r"class index 7 is outside 0\.\.3"),
    ('{"bird/a.png": "bird"}', r"expected a list of labels"),
    ('{"bird/a.png": [true]}', r"not a class name or index"),
    ("[[1], [2]]", r"a list of 2 label sets, but val_path holds 5 images"),
    ("bird/a.png,bird\nbird/a.png,cat\n", r"line 2: 'bird/a.png' already has a label set"),
    ("a.png,bird,cat\n", r"line 1: expected 'file,label;label;\.\.\.', got 3 fields"),
    ('{"bird/a.png": [1,}', r"not valid JSON \(line 1"),
])
def test_bad_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as error:
        read_label_sets(write(tmp_path, text), FILES, sorted(CLASSES))
    assert "\n" not in str(error.value) and "val_labels_path" in str(error.value)


def test_an_ambiguous_base_name_asks_for_the_path(tmp_path: Path) -> None:
    files = ["bird/x.png", "cat/x.png"]
    with pytest.raises(SettingsError, match="names 2 validation images"):
        read_label_sets(write(tmp_path, "x.png,bird\n"), files, ["bird", "cat"])
    sets = read_label_sets(write(tmp_path, "cat/x.png,bird\n"), files, ["bird", "cat"])
    assert sets.sets == [None, [0]]


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        read_label_sets(tmp_path / "nope.csv", FILES, CLASSES)
    with pytest.raises(SettingsError, match="is a folder"):
        read_label_sets(tmp_path, FILES, CLASSES)


names = st.text(alphabet="abcxyz", min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(
    layout=st.dictionaries(names, st.lists(names, min_size=1, max_size=3, unique=True),
                           min_size=1, max_size=4),
    data=st.data(),
)
def test_the_three_forms_agree(tmp_path_factory: pytest.TempPathFactory,
                               layout: dict[str, list[str]], data: st.DataObject) -> None:
    """Random sets written in each form (names in CSV, indices in JSON) read back alike."""
    classes = sorted(layout)
    files = [f"{c}/{n}.png" for c in classes for n in sorted(layout[c])]
    truth = [sorted(data.draw(st.sets(st.integers(0, len(classes) - 1), max_size=3)))
             for _ in files]
    tmp = tmp_path_factory.mktemp("forms")
    csv_text = "".join(f"{f},{';'.join(classes[c] for c in s)}\n"
                       for f, s in zip(files, truth, strict=True))
    obj = {f: s for f, s in zip(files, truth, strict=True)}
    order = sorted_by_name(files)
    listed = [truth[i] for i in order]
    for text in (csv_text, json.dumps(obj), json.dumps(listed)):
        sets = read_label_sets(write(tmp, text), files, classes)
        assert sets.sets == truth


# Hostile label files: each must be one SettingsError line naming the file, never a
# traceback from csv or json, and a JSON object agrees with CSV on an image given twice.
@pytest.mark.parametrize(("text", "message"), [
    ("bird/a.png," + "x" * (200 * 1024) + "\n", r"line 1: not readable as CSV"),
    ('"bird/a.png,' + "x" * (200 * 1024) + "\n", r"line \d+: not readable as CSV"),
    ('{"bird/a.png": [' + "9" * 5000 + "]}", r"a number of 5,000 digits"),
    ("[[" + "1" * 4301 + "], [], [], [], []]", r"a number of 4,301 digits"),
    ("bird/a.png," + "7" * 5000 + "\n", r"line 1: '7{10}.*' is not a class"),
    ('{"bird/a.png": ["bird"], "bird/a.png": ["cat"]}', r"'bird/a.png' is given twice"),
    ('{"bird/a.png": ["bird"], "a.png": ["cat"]}', r"already has a label set"),
    ('{"bird/a.png": [NaN]}', r"not a class name or index"),
    ('{"bird/a.png": [1e999]}', r"not a class name or index"),
], ids=["csv-long-field", "csv-long-quoted-field", "json-long-int", "json-list-long-int",
        "csv-long-index", "json-same-name-twice", "json-same-image-twice", "json-nan",
        "json-infinity"])
def test_hostile_label_files_are_one_line_errors(tmp_path: Path, text: str,
                                                 message: str) -> None:
    with pytest.raises(SettingsError, match=message) as error:
        read_label_sets(write(tmp_path, text), FILES, sorted(CLASSES))
    assert "\n" not in str(error.value) and "val_labels_path" in str(error.value)


def test_a_label_file_that_is_no_regular_file_is_refused_without_blocking(
        tmp_path: Path) -> None:
    fifo = make_fifo(tmp_path / "labels.csv")
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(SettingsError, match="not a regular file") as error:
            call_unblocked(functools.partial(read_label_sets, path, FILES, CLASSES), [fifo])
        assert str(path) in str(error.value)
