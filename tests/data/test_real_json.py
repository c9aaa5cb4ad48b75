"""ReaL's real.json: validation of bad files, the multi-hot, and the real file itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mile_engine.config.schema import SettingsError
from mile_engine.data.imagenet import load_real, multi_hot, real_table, validate_real
from tests.helpers.hostile import call_unblocked, make_fifo

REAL_JSON = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real.json"


@pytest.mark.skipif(not REAL_JSON.is_file(), reason=f"{REAL_JSON} is absent")
def test_the_real_file_has_50000_entries_3163_empty() -> None:
    real = load_real(REAL_JSON)
    assert len(real) == 50_000
    assert sum(1 for entry in real if not entry) == 3_163
    assert max(len(entry) for entry in real) == 9
    # ILSVRC2012_val_00000002.JPEG is entry 1 (a snake: classes 970 and 795 in ReaL).
    assert real[0] == [] and real[1] == [970, 795]
    hot = multi_hot(real_table(real, torch.arange(50_000), "real.json"))
    assert hot.shape == (50_000, 1000)
    assert int((~hot.any(dim=1)).sum()) == 3_163
    assert int(hot.sum()) == sum(len(entry) for entry in real)


def _load(tmp_path: Path, text: str) -> str:
    path = tmp_path / "real.json"
    path.write_text(text)
    with pytest.raises(SettingsError) as info:
        load_real(path)
    return str(info.value)


@pytest.mark.parametrize(
    "document,expected",
    [
        ({"0": [1]}, "expected a JSON list of 1000-class label lists"),
        ([], "the list is empty"),
        ([[1], 2], "entry 1 (ILSVRC2012_val_00000002) is 2, expected a list of class ids"),
        ([[1], [2, "3"]], 'entry 1 (ILSVRC2012_val_00000002) holds "3", expected integer'),
        ([[True]], "entry 0 (ILSVRC2012_val_00000001) holds true, expected integer"),
        ([[1.5]], "holds 1.5, expected integer"),
        ([[], [], [1000]], "entry 2 (ILSVRC2012_val_00000003) holds class 1000, outside 0..999"),
        ([[-1]], "holds class -1, outside 0..999"),
    ],
)
def test_bad_documents_name_the_entry_and_the_problem(
    tmp_path: Path, document: object, expected: str
) -> None:
    message = _load(tmp_path, json.dumps(document))
    assert expected in message and str(tmp_path / "real.json") in message


def test_unreadable_files(tmp_path: Path) -> None:
    assert "not valid JSON (line 2, column 1" in _load(tmp_path, "[[1],\n")
    with pytest.raises(SettingsError, match="does not exist; get real.json from"):
        load_real(tmp_path / "missing.json")


def test_validate_accepts_a_good_document() -> None:
    assert validate_real([[], [0, 999]], "x") == [[], [0, 999]]


def test_table_and_multi_hot_keep_empty_sets_empty() -> None:
    real = [[3], [], [0, 1, 2], [7]]
    table = real_table(real, torch.tensor([2, 1, 3]), "x")
    assert table.tolist() == [[0, 1, 2], [-1, -1, -1], [7, -1, -1]]
    hot = multi_hot(table, num_classes=8)
    assert hot.tolist() == [
        [True, True, True, False, False, False, False, False],
        [False] * 8,
        [False] * 7 + [True],
    ]
    with pytest.raises(SettingsError, match="has 4 entries but .*00000005 needs entry 4"):
        real_table(real, torch.tensor([4]), "x")


@pytest.mark.parametrize("kind", ["fifo", "device", "long number", "not utf-8"])
def test_a_real_path_that_cannot_be_json_is_one_line_and_never_blocks(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "real.json"
    fifos = []
    if kind == "fifo":
        fifos.append(make_fifo(path))
    elif kind == "device":
        path = Path("/dev/zero")
    elif kind == "long number":
        path.write_text("[[" + "7" * 5000 + "]]")
    else:
        path.write_bytes(b"[[1], [\xff\xfe]]")
    with pytest.raises(SettingsError) as error:
        call_unblocked(lambda: load_real(path), fifos)
    message = str(error.value)
    assert message.startswith(f"real_path '{path}'") and "\n" not in message
