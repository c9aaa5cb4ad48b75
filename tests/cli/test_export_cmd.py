"""`mile-tui export`: run names resolved under checkpoint_path, one-line errors, exit 2."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mile_tui.cli import app


def _fake_run(root: Path, name: str) -> Path:
    """A run folder with three hand-written records (what the export reads)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    records = [
        {"event": "RunStarted", "global_step": 0},
        {"event": "StepLogged", "global_step": 1, "generation": 1, "phase": "interactive",
         "loss": 2.5, "lr": 0.01, "images_per_s": 100.0},
        {"event": "Evaluated", "global_step": 1, "generation": 1,
         "metrics": {"rho": 0.1, "real_f1": 0.5}, "images_per_s": 9.0,
         "sweep": {"0.05": {"real_f1": 0.4}}},
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "settings.toml").write_text("[mile]\nk_t = 3\n")
    return run_dir


def test_csv_by_run_name_under_checkpoint_path(tmp_path: Path) -> None:
    _fake_run(tmp_path / "runs", "a")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["export", "a", "--format", "csv", "--out", str(out),
                                      "--set", f"checkpoint_path={tmp_path / 'runs'}"])
    assert result.exit_code == 0, result.output
    with (out / "metrics.csv").open(newline="") as fh:
        rows = {(r["run"], r["step"], r["metric"]): r["value"] for r in csv.DictReader(fh)}
    assert rows == {
        ("a", "1", "train/loss"): "2.5", ("a", "1", "train/loss_interactive"): "2.5",
        ("a", "1", "train/lr"): "0.01", ("a", "1", "train/images_per_s"): "100.0",
        ("a", "1", "eval/real_f1"): "0.5", ("a", "1", "eval_rho0.05/real_f1"): "0.4",
        ("a", "1", "eval/images_per_s"): "9.0",
    }


def test_tensorboard_names_a_folder_per_run(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run_dir = _fake_run(tmp_path / "runs", "a")
    out = tmp_path / "tb"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert list((out / "a").glob("events.out.tfevents.*"))
    assert f"tensorboard --logdir {out}" in result.output


def test_a_missing_run_is_one_line_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", str(tmp_path / "nope"), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "no such run folder" in result.output


def test_a_folder_without_records_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "settings.toml").write_text("")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "empty"), "-f", "csv",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "no metrics.jsonl" in result.output


def test_without_tensorboard_it_names_the_extra(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _fake_run(tmp_path / "runs", "a")
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import fails
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "pip install 'mile-tui[tensorboard]'" in result.output


def test_a_live_sink_without_tensorboard_is_refused_before_anything_is_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import fails
    root = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", "--headless", "--set", "tensorboard=true",
                                      "--set", f"checkpoint_path={root}", "--set",
                                      "device=cpu"])
    assert result.exit_code == 2
    assert "pip install 'mile-tui[tensorboard]'" in result.output
    assert not root.exists() or not any(root.iterdir())


def test_a_sweeps_trials_by_name(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for name, sweep, trial in (("a", "s", 1), ("b", "s", 0), ("c", "other", 0), ("d", None, 0)):
        run_dir = _fake_run(root, name)
        if sweep is not None:
            (run_dir / "sweep.json").write_text(json.dumps({"sweep": sweep, "trial": trial}))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["export", "--sweep", "s", "-f", "csv", "--out",
                                      str(out), "--set", f"checkpoint_path={root}"])
    assert result.exit_code == 0, result.output
    with (out / "metrics.csv").open(newline="") as fh:
        runs = list(dict.fromkeys(r["run"] for r in csv.DictReader(fh)))
    assert runs == ["b", "a"]  # by trial number
    result = CliRunner().invoke(app, ["export", "--sweep", "nope", "--out", str(out),
                                      "--set", f"checkpoint_path={root}"])
    assert result.exit_code == 2 and "no trial of a sweep 'nope'" in result.output
    result = CliRunner().invoke(app, ["export", "--out", str(out)])
    assert result.exit_code == 2 and "name a RUN" in result.output
