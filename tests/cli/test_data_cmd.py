"""`mile-tui data check` on generated folders, through Typer's CliRunner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mile_tui.cli import app
from tests.helpers.images import TRAIN, VAL, make_tree, write_image

runner = CliRunner()


@pytest.fixture(autouse=True)
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """File indexes go to a temporary cache folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def check(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["data", "check", "--set", "batch_size=4", *args])
    return result.exit_code, result.output


def test_a_trainable_folder_is_reported_in_full(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "d")
    code, text = check("--set", f"data_path={tree.train}", "--set", f"val_path={tree.val}",
                       "--set", f"val_labels_path={tree.labels}")
    assert code == 0, text
    assert "3 classes, 9 training and 5 validation images" in text
    # bee: 4 files (one corrupt), 1 validation image.
    assert re.search(r"^ +bee +4 +1$", text, re.MULTILINE), text
    assert "JPEG CMYK 1" in text and "PNG RGBA 1" in text
    assert "unreadable 1" in text and "d.jpeg" in text
    # Sets by hand: v0 {ant, cow}, v1 {bee}, v2 {}, v3 {cow}; v4 has none.
    assert "4 of 5 validation images have a set, 1.00 labels on average (1 empty)" in text
    assert "trainable: yes" in text


def test_json_counts_every_class(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "d")
    code, text = check("--json", "--set", f"data_path={tree.train}",
                       "--set", f"val_path={tree.val}")
    report = json.loads(text)
    assert code == 0 and report["trainable"] is True
    assert report["classes"] == [{"name": c, "train": len(TRAIN[c]), "val": len(VAL[c])}
                                 for c in sorted(TRAIN)]
    assert sum(report["formats"].values()) == 8 + 5  # every readable file
    assert [u["path"].endswith("d.jpeg") for u in report["unreadable"]] == [True]
    assert "label_sets" not in report and any("val_labels_path is empty" in w
                                               for w in report["warnings"])


def test_an_untrainable_folder_exits_2_with_its_reasons(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "d")
    write_image(tree.val / "yak" / "y.png", "png")
    tree.labels.write_text('{"v2.jpg": ["gnu"]}')
    code, text = check("--no-decode", "--set", f"data_path={tree.train}",
                       "--set", f"val_path={tree.val}", "--set", f"val_labels_path={tree.labels}")
    assert code == 2
    assert "class folder(s) yak are not in data_path" in text
    assert "'gnu' is not a class of data_path" in text
    assert "trainable: no" in text and "Traceback" not in text and "formats" not in text


def test_too_few_readable_images_for_a_batch(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "d")
    code, text = check("--set", f"data_path={tree.train}", "--set", f"val_path={tree.val}",
                       "--set", "batch_size=9")
    assert code == 2 and "8 readable training image(s), fewer than batch_size = 9" in text


def test_paths_are_required() -> None:
    result = runner.invoke(app, ["data", "check", "--set", "val_path=somewhere"])
    assert result.exit_code == 2
    assert "data check needs data_path" in result.output


def test_a_training_label_file_is_read_as_a_run_reads_it(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "d")
    path = tmp_path / "train.json"
    # Every ant image also shows a cow; bee images are bee alone; cow images have no entry.
    path.write_text(json.dumps({f"{c}/{name}": sets for c, sets in
                                (("ant", ["ant", "cow"]), ("bee", [1])) for name in TRAIN[c]}))
    code, text = check("--no-decode", "--set", f"data_path={tree.train}",
                       "--set", f"val_path={tree.val}", "--set", f"train_labels_path={path}")
    assert code == 0, text
    # By hand: 3 ant images x 2 labels + 4 bee x 1 + 2 cow x 1 (their single label) = 12 / 9.
    assert "9 training images, 1.33 labels on average (3 with more than one)" in text
    assert "2 of 9 training images have no entry" in text


def test_a_bad_training_label_file_exits_2_naming_it(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "d")
    path = tmp_path / "train.csv"
    path.write_text("ant/a.png,giraffe\n")
    code, text = check("--no-decode", "--json", "--set", f"data_path={tree.train}",
                       "--set", f"val_path={tree.val}", "--set", f"train_labels_path={path}")
    report = json.loads(text)
    assert code == 2 and report["trainable"] is False
    assert any("train_labels_path" in p and "giraffe" in p for p in report["problems"])
    assert "train_label_sets" not in report
