"""What a headless run says at its end: its best against the reference F1s, its folder
and the commands that come next, in the plain renderer (through CliRunner, a real tiny
run) and the Rich one (fed events)."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mile_engine import events as ev
from mile_tui.cli import app
from mile_tui.headless import RichRenderer, judge_best

TINY = ["--set", "batch_size=8", "--set", "val_size=64", "--set", "k_t=3", "--set", "k_s=2",
        "--set", "epoch_num=1", "--set", "log_every=1", "--set", "device=cpu"]
REFS = {"ref_f1_all": 0.40, "ref_f1_label": 0.55}


@pytest.mark.parametrize(("best", "below", "words"), [
    (0.10, True, "below both"),
    (0.399, True, "below both"),
    (0.40, False, "beats the every class reference but not the single label"),
    (0.50, False, "beats the every class reference but not the single label"),
    (0.55, False, "above both"),
    (0.90, False, "above both"),
])
def test_the_best_is_judged_against_both_references(best: float, below: bool,
                                                    words: str) -> None:
    is_below, text = judge_best(best, REFS)
    assert is_below is below
    assert words in text and f"{best:.4f}" in text


def test_single_label_above_every_class_reference() -> None:
    _, text = judge_best(0.5, {"ref_f1_all": 0.6, "ref_f1_label": 0.45})
    assert "beats the single label reference but not the every class one" in text


def test_a_tiny_headless_run_ends_with_its_folder_the_next_commands_and_the_verdict(
        tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", "--headless", *TINY,
                                      "--set", f"checkpoint_path={runs}"])
    assert result.exit_code == 0, result.output
    (run_dir,) = runs.iterdir()
    records = [json.loads(line) for line in
               (run_dir / "metrics.jsonl").read_text().splitlines()]
    reference = next(r for r in records if r["event"] == "RunStarted")["reference"]
    best = next(r for r in records if r["event"] == "RunEnded")["best"]["real_f1"]
    # The verdict, re-derived from the run's own records.
    below_both = best < reference["ref_f1_all"] and best < reference["ref_f1_label"]
    tail = result.output[result.output.index("run finished"):]
    assert ("below both reference F1s" in tail) is below_both
    assert below_both, "a 3+2-step run should not beat the references; the test needs it"
    assert "warning: best ReaL F1" in tail
    assert f"run folder: {run_dir}" in tail
    quoted = shlex.quote(str(run_dir))
    for command in (f"mile-tui eval {quoted}", f"mile-tui inspect {quoted}"):
        assert command in tail
    # compare repeats the settings of the run, so that it compares like with like
    compare = next(line for line in tail.splitlines() if "mile-tui compare" in line)
    assert "--set batch_size=8" in compare and f"--set checkpoint_path={runs}" in compare


def _events(run_dir: str, best_f1: float) -> list[ev.Event]:
    return [
        ev.RunStarted(run_dir, {"schema": "MILe", "dataset": "digits", "model": "resnet18-10"},
                      "cpu", "fp32", 10, 4, 0, dict(REFS)),
        ev.CheckpointSaved(f"{run_dir}/step-00000004-generation.pt", 1, "evaluated", 4,
                           "generation"),
        ev.RunEnded("finished", 4, 1.0, {"real_f1": best_f1, "generation": 1}),
    ]


def test_the_rich_renderer_ends_the_same_way_in_80_columns() -> None:
    out = io.StringIO()
    renderer = RichRenderer(Console(file=out, width=80, color_system=None))
    run_dir = "/data/runs/20261203-220143-fashion-mnist-mile"
    for event in _events(run_dir, 0.2):
        renderer(event)
    text = out.getvalue()
    assert "below both reference F1s" in text
    assert f"run folder: {run_dir}" in text
    # A command is never broken over two lines, whatever the width: it is copied whole.
    lines = text.splitlines()
    assert any(line.strip().startswith(f"mile-tui eval {run_dir} --rho") for line in lines)
    assert any(line.strip() == f"mile-tui inspect {run_dir}" for line in lines)
    assert any(line.strip().startswith("mile-tui compare") for line in lines)


def test_a_good_run_is_not_warned_and_a_failed_one_gets_no_closing_lines() -> None:
    out = io.StringIO()
    renderer = RichRenderer(Console(file=out, width=80, color_system=None))
    for event in _events("runs/a", 0.7):
        renderer(event)
    assert "above both reference F1s" in out.getvalue()
    assert "warning" not in out.getvalue()
    failed = io.StringIO()
    renderer = RichRenderer(Console(file=failed, width=80, color_system=None))
    for event in [*_events("runs/b", 0.7)[:2], ev.RunEnded("failed", 2, 1.0, None, "boom")]:
        renderer(event)
    assert "run folder" not in failed.getvalue() and "next:" not in failed.getvalue()
