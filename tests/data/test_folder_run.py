"""A headless run on a generated folder of 3 classes, end to end, as a user starts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mile_tui.cli import app
from tests.helpers.images import CLASSES, make_tree

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
