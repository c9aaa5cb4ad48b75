"""What mile_tui/headless.py does when things go wrong: Ctrl-C inside a save, a full
disk, and one exit-code rule for every command's refusals (2: what was asked for cannot
be used; 1: it failed while being done). And what a headless run says at its end: its
best against the reference F1s, its folder and the commands that come next, in the plain
renderer (through CliRunner, a real tiny run) and the Rich one (fed events)."""

from __future__ import annotations

import errno
import io
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from mile_engine import events as ev
from mile_engine.checkpoints import RunCheckpointer
from mile_engine.runstore import files as ckf
from mile_engine.runstore import layout
from mile_engine.runstore import records as runs
from mile_engine.runstore.manifest import load_checkpoint, read_records
from mile_engine.runstore.saves import verify_run
from mile_engine.session import open_run
from mile_tui.cli import app
from mile_tui.headless import RichRenderer, judge_best
from tests.helpers.faults import DiskBudget, FullAfter, flip_tensor_byte
from tests.helpers.runs import make_run
from tests.helpers.settings import REPO, TINY, tiny

# A headless run in a child process whose stop save sends this process SIGINT from
# inside torch.save's writes (on its 2nd, 4th, ... write), `argv[1]` times: the moment
# a second Ctrl-C lands in the final save, made certain.
CHILD = r"""
import os, signal, sys
from mile_engine.runstore import files as ck

times = int(sys.argv[1])
real = ck._write_payload


class Interrupting:
    def __init__(self, fh):
        self.fh, self.writes, self.sent = fh, 0, 0

    def write(self, data):
        self.writes += 1
        if self.writes % 2 == 0 and self.sent < times:
            self.sent += 1
            os.kill(os.getpid(), signal.SIGINT)  # its handler runs here, inside torch.save
        return self.fh.write(data)

    def flush(self):
        self.fh.flush()


def payload(obj, fh):
    real(obj, Interrupting(fh) if obj["meta"]["reason"] == "stop" else fh)


ck._write_payload = payload
from mile_tui.cli import main

sys.argv = ["mile-tui", *sys.argv[2:]]
main()
"""


def _run_child(root: Path, times: int) -> tuple[int, str]:
    """Start a long run, Ctrl-C it once a generation is saved; its stop save then
    interrupts itself `times` more times. Returns (exit code, output)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(times), "run", "--headless", *TINY,
         "--set", "k_t=2", "--set", "val_size=16", "--set", "epoch_num=200",
         "--set", f"checkpoint_path={root}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # wait for a completed save: it must survive whatever follows
        lines.append(line)
        if "checkpoint saved" in line:
            break
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=300)[0]
    return proc.returncode, "".join(lines) + out


def test_second_ctrl_c_inside_the_final_save_waits_for_it(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    code, out = _run_child(root, times=1)
    assert code == 130, out
    assert "Traceback" not in out and "saving a checkpoint, please wait" in out
    assert "run stopped" in out
    (run_dir,) = root.iterdir()
    newest = read_records(run_dir)[-1]
    assert newest.reason == "stop"  # the save the second Ctrl-C landed in completed
    assert all(result.ok for _, result in verify_run(run_dir))


def test_third_ctrl_c_inside_the_final_save_quits_keeping_completed_saves(
    tmp_path: Path,
) -> None:
    root = tmp_path / "runs"
    code, out = _run_child(root, times=2)
    assert code == 130, out
    assert "Traceback" not in out and "quit while saving" in out
    (run_dir,) = root.iterdir()
    records = read_records(run_dir)
    assert records and all(r.reason == "generation" for r in records)
    assert all(result.ok for _, result in verify_run(run_dir))
    # The run resumes from its newest completed save; the abandoned temporary goes.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    resumed = subprocess.run(
        [sys.executable, "-m", "mile_tui", "run", "--headless", "--resume", str(run_dir),
         "--set", "epoch_num=1"], env=env, capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert not list(run_dir.glob(".tmp-*"))


# ------------------------------------------------------------------ a full disk
def _only_error_line(output: str) -> str:
    """The one line a refused command prints (and nothing else, no traceback)."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert "Traceback" not in output and len(lines) == 1, output
    return lines[0]


def test_a_headless_run_on_a_full_disk_exits_1_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    DiskBudget(2000, only=layout.METRICS_FILE).install(monkeypatch)
    root = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", "--headless", *TINY, "--set", "k_t=2",
                                      "--set", "val_size=16", "--set", "epoch_num=3",
                                      "--set", f"checkpoint_path={root}"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (run_dir,) = root.iterdir()
    last = result.output.strip().splitlines()[-1]
    assert "run failed" in last and last.endswith(
        f"no space left on device: {run_dir / layout.METRICS_FILE}")
    assert read_records(run_dir)[-1].reason == "stop"  # the final save was made


def test_a_full_disk_at_the_last_record_still_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = runs.LineFile._write_some

    def refuse_the_end(line_file: runs.LineFile, data: memoryview) -> int:
        if b'"RunEnded"' in bytes(data) and line_file.path.name == layout.METRICS_FILE:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(line_file, data)

    monkeypatch.setattr(runs.LineFile, "_write_some", refuse_the_end)
    root = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", "--headless", *TINY, "--set", "k_t=2",
                                      "--set", "val_size=16", "--set", "epoch_num=1",
                                      "--set", f"checkpoint_path={root}"])
    assert result.exit_code == 1, result.output
    (run_dir,) = root.iterdir()
    last = result.output.strip().splitlines()[-1]
    assert last == f"error: no space left on device: {run_dir / layout.METRICS_FILE}"


def test_a_failed_save_says_the_cause_in_one_line_and_keeps_the_detail_in_run_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ckf._write_payload
    # FullAfter is a RawIOBase standing in for the IO[bytes] torch.save writes to.
    monkeypatch.setattr(ckf, "_write_payload", lambda obj, fh: real(obj, FullAfter(fh, 1000)))  # type: ignore[arg-type]
    root = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", "--headless", *TINY, "--set", "k_t=2",
                                      "--set", "val_size=16", "--set", "epoch_num=1",
                                      "--set", f"checkpoint_path={root}"])
    assert result.exit_code == 1, result.output
    (run_dir,) = root.iterdir()
    assert "Traceback" not in result.output and "inline_container" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert "run failed after 4 steps" in last
    assert f": no space left on device: {run_dir}/step-00000004-generation.pt" in last
    log = (run_dir / layout.LOG_FILE).read_text()
    assert "inline_container" in log and "Traceback" in log  # the detail, for whoever digs


def test_export_to_a_full_disk_exits_1_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_run(tmp_path, [0.5])
    real = ckf._write_payload
    # FullAfter is a RawIOBase standing in for the IO[bytes] torch.save writes to.
    monkeypatch.setattr(ckf, "_write_payload", lambda obj, fh: real(obj, FullAfter(fh, 100)))  # type: ignore[arg-type]
    out = tmp_path / "weights.pt"
    result = CliRunner().invoke(app, ["checkpoints", "export", "run-a", str(out),
                                      "--set", f"checkpoint_path={tmp_path}"])
    assert result.exit_code == 1, result.output
    assert _only_error_line(result.output) == f"error: no space left on device: {out}"
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))


# ------------------------------------------------------------------ one exit-code rule
@pytest.fixture
def refusals(tmp_path: Path) -> dict[str, str]:
    """Checkpoint references that cannot be used, by kind."""
    run_dir = make_run(tmp_path, [0.3, 0.4])
    newest = run_dir / read_records(run_dir)[-1].file
    flip_tensor_byte(newest, load_checkpoint(newest)["student"]["fc.weight"])

    class Evil:
        def __reduce__(self) -> tuple[object, ...]:
            return (print, ("this ran",))

    evil = tmp_path / "evil.pt"
    torch.save({"student": Evil()}, evil)
    return {"missing": "no-such-run", "damaged": f"run-a/{newest.name}", "unsafe": str(evil)}


# The commands that take a checkpoint, as argument lists around it.
COMMANDS: dict[str, Callable[[str, Path], list[str]]] = {
    "checkpoints show": lambda ref, tmp: ["checkpoints", "show", ref],
    "checkpoints export": lambda ref, tmp: ["checkpoints", "export", ref, str(tmp / "w.pt")],
    "eval": lambda ref, tmp: ["eval", ref],
    "predict": lambda ref, tmp: ["predict", ref, str(tmp / "digit.png")],
    "inspect": lambda ref, tmp: ["inspect", ref],
    "run --resume": lambda ref, tmp: ["run", "--headless", "--resume", ref],
}
WORDS = {"missing": "no-such-run", "damaged": "damaged checkpoint",
         "unsafe": "arbitrary unpickling"}


@pytest.mark.parametrize("kind", sorted(WORDS))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_refuses_an_unusable_checkpoint_with_exit_2(
    tmp_path: Path, refusals: dict[str, str], command: str, kind: str
) -> None:
    Image.new("L", (24, 24)).save(tmp_path / "digit.png")
    args = [*COMMANDS[command](refusals[kind], tmp_path), "--set",
            f"checkpoint_path={tmp_path}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    line = _only_error_line(result.output)
    assert line.startswith("error: ") and WORDS[kind] in line
    assert "this ran" not in result.output


def test_a_busy_run_is_refused_with_exit_2(tmp_path: Path) -> None:
    trainer = open_run(tiny(checkpoint_path=str(tmp_path), epoch_num=1, k_t=2, k_s=2,
                            val_size=16))
    trainer.train()
    newest = read_records(trainer.run_dir)[-1].file
    holder = RunCheckpointer(trainer.run_dir, 3)  # another trainer lives in this folder
    root = ["--set", f"checkpoint_path={tmp_path}"]
    try:
        resumed = CliRunner().invoke(app, ["run", "--headless", "--resume",
                                           trainer.run_dir.name, *root])
        deleted = CliRunner().invoke(app, ["checkpoints", "delete",
                                           f"{trainer.run_dir.name}/{newest}", *root])
    finally:
        holder.close()
    assert resumed.exit_code == 2
    assert "another process is training" in _only_error_line(resumed.output)
    assert deleted.exit_code == 2
    assert "still training; not deleted" in _only_error_line(deleted.output)


# ------------------------------------------------------------------ the end of a run

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
    result = CliRunner().invoke(app, ["run", "--headless", *TINY, "--set", "epoch_num=1",
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
