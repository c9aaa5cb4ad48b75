"""A folder's optional training label file (`train_labels_path`): each training batch
carries its images' true sets, so that pseudo-label quality can be measured; an image
without an entry keeps its single label as its set; a bad file is a settings error that
names train_labels_path."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from mile_engine.config.schema import SettingsError
from mile_engine.data.folder import FolderSource
from mile_engine.model_inputs import MEAN, STD
from tests.helpers.images import CLASSES, TRAIN, Tree, make_tree

CPU = torch.device("cpu")
# By class: every ant image also shows a cow; bee images are listed as bee alone; cow
# images have no entry (their single label becomes their set).
BY_CLASS = {"ant": ["ant", "cow"], "bee": [1]}
EXPECTED = {0: [True, False, True], 1: [False, True, False], 2: [False, False, True]}


@dataclasses.dataclass(frozen=True)
class _Spec:
    image_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def source(tree: Tree, train_labels: Path | None,
           warn: list[str] | None = None) -> FolderSource:
    notes = warn if warn is not None else []
    return FolderSource(tree.train, tree.val, tree.labels, batch_size=4, num_workers=0,
                        device=CPU, seed=0, warn=notes.append, decode="workers",
                        spec=_Spec(32, 32, MEAN, STD),
                        train_labels_path=train_labels)


def test_training_batches_carry_the_files_sets(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "data")
    path = tmp_path / "train.json"
    path.write_text(json.dumps({f"{c}/{name}": BY_CLASS[c] for c, files in TRAIN.items()
                                if c in BY_CLASS for name in files}))
    notes: list[str] = []
    src = source(tree, path, notes)
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
    src = source(make_tree(tmp_path / "data"), None)
    assert src.train_batch().real is None


def test_a_bad_file_names_train_labels_path(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "data")
    path = tmp_path / "train.csv"
    path.write_text("ant/a.png,giraffe\n")
    with pytest.raises(SettingsError) as error:
        source(tree, path)
    assert "train_labels_path" in str(error.value) and "val_labels_path" not in str(error.value)
