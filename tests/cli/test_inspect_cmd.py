"""`mile-tui eval` and `mile-tui predict` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mile_engine.metrics import METRIC_NAMES
from mile_tui.cli import app
from tests.helpers.trained import TrainedRun, sure_checkpoint, train_tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    return train_tiny(tmp_path_factory.mktemp("runs"), lr=0.005)


def test_eval_json_reproduces_the_recorded_metrics(run: TrainedRun) -> None:
    result = runner.invoke(app, ["eval", str(run.checkpoint), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    (row,) = data["rows"]
    for name in METRIC_NAMES:
        assert row[name] == pytest.approx(run.recorded[name], abs=1e-9)
    assert data["recorded"]["real_f1"] == run.recorded["real_f1"]
    assert data["map"] == pytest.approx(run.recorded["map"], abs=1e-9)
    assert data["map_classes_left_out"] == run.recorded["map_classes_left_out"]
    text = runner.invoke(app, ["eval", str(run.checkpoint)]).output
    assert f"mAP {run.recorded['map']:.4f}" in text


def test_eval_by_run_name_sweeps_rho_one_row_each(run: TrainedRun) -> None:
    root = run.checkpoint.parent.parent
    result = runner.invoke(app, ["eval", run.checkpoint.parent.name, "--set",
                                 f"checkpoint_path={root}", "--rho", "0.05,0.1,0.25,0.5"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("│")]
    assert [line.split("│")[1].strip() for line in lines] == ["0.05", "0.1", "0.25", "0.5"]
    assert "reference F1" in result.output
    data = json.loads(runner.invoke(app, ["eval", str(run.checkpoint), "--json", "--rho",
                                          "0.05,0.1,0.25,0.5"]).output)
    coverage = [r["coverage"] for r in data["rows"]]
    assert coverage == sorted(coverage, reverse=True)


@pytest.mark.parametrize("args, message", [
    (["--rho", "0.1,abc"], "not a number"),
    (["--rho", "1.5"], "outside"),
    (["--set", "k_t=9"], "belongs to the checkpoint"),
    # Digits of other scripts: refused as `--set` and `device` refuse them.
    (["--rho", "\u0660.\u0665"], "not a number in ASCII digits"),  # Arabic-Indic 0.5
    (["--rho", "0.1,\uff10.\uff15"], "not a number in ASCII digits"),  # full-width 0.5
    (["--rho", "0.2_5"], "not a number in ASCII digits"),
])
def test_eval_bad_input_exits_2(run: TrainedRun, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["eval", str(run.checkpoint), *args])
    assert result.exit_code == 2 and message in result.output


def test_eval_takes_the_named_files_evaluation_keys_and_leaves_training_keys(
    run: TrainedRun, tmp_path: Path
) -> None:
    saved = json.loads(runner.invoke(app, ["eval", str(run.checkpoint), "--json"]).output)
    assert saved["rows"][0]["rho"] != 0.3
    config = tmp_path / "eval.toml"
    config.write_text("rho = 0.3\nk_t = 99\n", encoding="utf-8")
    result = runner.invoke(app, ["eval", str(run.checkpoint), "--json", "--config",
                                 str(config)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"][0]["rho"] == 0.3  # k_t = 99 is not refused
    result = runner.invoke(app, ["eval", str(run.checkpoint), "--config",
                                 str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and "missing.toml: no such settings file" in result.output


def test_eval_missing_or_corrupt_checkpoint_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path / "nope.pt")])
    assert result.exit_code == 2 and "no such checkpoint" in result.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["eval", str(bad)])
    assert result.exit_code == 2 and "bad.pt" in result.output


def test_predict_lists_sure_labels_and_reports_bad_files(run: TrainedRun,
                                                         tmp_path: Path) -> None:
    ck = sure_checkpoint(run.checkpoint, tmp_path / "sure" / "s.pt", {3: 5.0, 8: 2.0})
    image, _, _ = run.trainer.source.val_sample(0)  # type: ignore[attr-defined]
    good = tmp_path / "grid.png"
    Image.fromarray(image.numpy(), mode="L").save(good)
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff garbage")
    args = ["predict", str(ck), str(good), str(tmp_path / "missing.png"), str(corrupt)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    first, missing, broken = data["images"]
    assert [(lab["name"], lab["prob"] > 0.8) for lab in first["labels"]] == [
        ("3", True), ("8", True)]
    assert "no such file" in missing["error"] and "not a readable image" in broken["error"]

    result = runner.invoke(app, [*args, "--rho", "0.95"])
    assert result.exit_code == 1
    assert "3 (0.99)" in result.output and "8 (" not in result.output


def test_predict_bad_rho_exits_2(run: TrainedRun, tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", str(run.checkpoint), "x.png", "--rho", "0"])
    assert result.exit_code == 2


def test_inspect_unknown_checkpoint_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["inspect", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no such checkpoint" in result.output


def test_predict_and_eval_name_classes_as_the_checkpoint_records(
    run: TrainedRun, tmp_path: Path
) -> None:
    # A run records its class names in each checkpoint (a folder run's are its
    # sub-folders): predict and eval show those, not names derived from the dataset.
    ck = sure_checkpoint(run.checkpoint, tmp_path / "named" / "n.pt", {3: 5.0})
    state = torch.load(ck, weights_only=True)
    assert state["class_names"] == [str(d) for d in range(10)]  # the digits' own
    names = [f"kind {chr(65 + c)}" for c in range(10)]
    state["class_names"] = names
    torch.save(state, ck)
    image, _, _ = run.trainer.source.val_sample(0)  # type: ignore[attr-defined]
    good = tmp_path / "grid.png"
    Image.fromarray(image.numpy(), mode="L").save(good)
    data = json.loads(runner.invoke(app, ["predict", str(ck), str(good), "--json"]).output)
    assert [lab["name"] for lab in data["images"][0]["labels"]] == ["kind D"]
    result = runner.invoke(app, ["eval", str(ck), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["classes"] == names
    result = runner.invoke(app, ["eval", str(ck)])
    assert "10 classes: kind A, kind B" in result.output
