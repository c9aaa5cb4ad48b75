"""`mile-tui compare` through Typer's CliRunner: a study continued with the same command,
and another study refused in the same folder."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mile_tui.cli import app
from tests.helpers.settings import TINY

runner = CliRunner()


def compare(out: Path, *args: str) -> tuple[int, str, str]:
    """Run `mile-tui compare` on one generation of tiny runs; (exit code, stdout, stderr)."""
    result = runner.invoke(app, ["compare", *TINY, "--set", "epoch_num=1", "--schemas",
                                 "sigmoid", "--out", str(out), *args])
    return result.exit_code, result.stdout, result.stderr


def test_the_same_command_reads_finished_runs_back_and_another_study_is_refused(
    tmp_path: Path,
) -> None:
    code, out, err = compare(tmp_path, "--seeds", "0")
    assert code == 0, out + err
    assert "(trained)" in out and "mAP" in out
    assert "monitor=map" not in err  # one schema: no schedule to compare
    table = (tmp_path / "study.md").read_text()
    assert "| schema | rho | mAP | top-1 |" in table

    code, again, err = compare(tmp_path, "--seeds", "0")
    assert code == 0, again + err
    assert "read back from its metrics.jsonl" in again
    assert (tmp_path / "study.md").read_text().split("\n", 1)[1] == table.split("\n", 1)[1]

    code, out, err = compare(tmp_path, "--seeds", "0,1")
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "holds a study with other seeds" in line and "--out" in line
    plan = json.loads((tmp_path / "study-plan.json").read_text())
    assert plan["seeds"] == [0] and len(plan["runs"]) == 1


def test_schemas_compared_on_a_plateau_of_thresholded_f1_are_warned(tmp_path: Path) -> None:
    code, out, err = compare(tmp_path, "--seeds", "0", "--schemas", "sigmoid,MILe")
    assert code == 0, out + err
    assert "plateau follows ReaL F1" in err and "--set monitor=map" in err
    assert "without a better ReaL F1" in (tmp_path / "study.md").read_text()
