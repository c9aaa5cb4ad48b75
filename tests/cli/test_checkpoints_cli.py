"""`mile-tui checkpoints` through CliRunner, and kill / resume of real headless processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from typer.testing import CliRunner, Result

from mile_engine.runstore.layout import MANIFEST_FILE
from mile_engine.runstore.manifest import read_records
from mile_engine.runstore.records import read_metrics
from mile_tui.cli import app, expand_resume_flag
from mile_tui.commands.checkpoints_cmd import expand_browse_args
from tests.helpers.hostile import make_fifo
from tests.helpers.runs import make_run
from tests.helpers.settings import REPO, TINY


def cli(root: Path, *args: str) -> Result:
    """Invoke `mile-tui checkpoints ARGS` with checkpoint_path = root."""
    return CliRunner().invoke(
        app, ["checkpoints", *args, "--set", f"checkpoint_path={root}"], catch_exceptions=False
    )


# ------------------------------------------------------------------ the subcommands
def test_list_marks_best_and_newest(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.5, 0.2, None])
    result = cli(tmp_path, "list", "--json")
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.output)
    assert run["run"] == str(run_dir) and run["active"] is False
    marks = [(c["best"], c["newest"]) for c in run["checkpoints"]]
    assert marks == [(True, False), (False, False), (False, True)]
    plain = cli(tmp_path, "list")
    assert "3 checkpoints" in plain.output
    # The console's notation: the first save is the best, the last the newest.
    rows = [line for line in plain.output.splitlines() if line.startswith("  step-")]
    assert [row.endswith(mark) for row, mark in zip(rows, ("★ best", "", "● newest"),
                                                     strict=True)] == [True, True, True]
    assert "●" not in rows[0] and "★" not in rows[1] + rows[2]
    # Not on a terminal, the bare command (and `checkpoints RUN`) prints the list.
    assert "3 checkpoints" in cli(tmp_path).output
    assert "3 checkpoints" in cli(tmp_path, "browse", "run-a").output
    # --set may also come before the subcommand.
    before = CliRunner().invoke(app, ["checkpoints", "--set", f"checkpoint_path={tmp_path}",
                                      "list"])
    assert "3 checkpoints" in before.output


def test_list_shows_a_checkpoint_it_cannot_read(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.5])
    (run_dir / "step-00000099-stop.pt").write_bytes(b"PK\x03\x04 cut short")
    plain = cli(tmp_path, "list")
    assert plain.exit_code == 0 and ": 1 checkpoint\n" in plain.output
    assert "step-00000099-stop.pt" in plain.output and "unreadable" in plain.output
    (run,) = json.loads(cli(tmp_path, "list", "--json").output)
    assert run["unreadable"] == [str(run_dir / "step-00000099-stop.pt")]


def test_show_prints_position_metrics_and_settings(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.5])
    (record,) = read_records(run_dir)
    for ref in (f"run-a/{record.file}", str(run_dir / record.file), "run-a"):
        result = cli(tmp_path, "show", ref)
        assert result.exit_code == 0, result.output
        assert "real_f1 = 0.5000\n" in result.output and "k_t = 3\n" in result.output
        assert "position: end of generation 1, evaluated (global step 5)" in result.output
    # One name, one meaning: `inspect` is the image inspector, not an alias of show.
    assert cli(tmp_path, "inspect", "run-a").exit_code == 2
    missing = cli(tmp_path, "show", "nope")
    assert missing.exit_code == 2 and "no such checkpoint" in missing.output  # see test_headless.py


def test_verify_fails_on_a_damaged_file(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.5, 0.6])
    ok = cli(tmp_path, "verify")
    assert ok.exit_code == 0 and ok.output.count("ok ") == 2
    newest = run_dir / read_records(run_dir)[-1].file
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    bad = cli(tmp_path, "verify", "run-a")
    assert bad.exit_code == 1
    assert "FAILED" in bad.output and "SHA-256" in bad.output


def test_prune_dry_run_then_prune_keeps_best_and_newest(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.9, 0.1, 0.2, 0.3])
    files = [r.file for r in read_records(run_dir)]
    dry = cli(tmp_path, "prune", "--keep-last", "1", "--dry-run")
    assert dry.exit_code == 0 and "would remove 2 checkpoints" in dry.output
    assert len(list(run_dir.glob("*.pt"))) == 4
    done = cli(tmp_path, "prune", "--keep", "1", "--keep-best", "0")
    assert done.exit_code == 0 and f"removed {run_dir / files[1]}" in done.output
    assert [r.file for r in read_records(run_dir)] == [files[0], files[3]]
    refused = cli(tmp_path, "delete", f"run-a/{files[0]}")
    assert refused.exit_code == 2 and "best" in refused.output  # a refusal: exit 2
    outside = make_run(tmp_path / "elsewhere", [0.1])
    away = cli(tmp_path / "root", "prune", str(outside))
    assert away.exit_code == 2 and "outside checkpoint_path" in away.output


@pytest.mark.parametrize("keep", ["0", "-1"])
def test_prune_keep_last_below_one_is_a_usage_error_that_removes_nothing(
    tmp_path: Path, keep: str
) -> None:
    run_dir = make_run(tmp_path, [0.5, None, 0.2, None])
    before = sorted(p.name for p in run_dir.glob("*.pt"))
    result = cli(tmp_path, "prune", "run-a", "--keep-last", keep)
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()  # one line, no usage block or traceback
    assert f"--keep-last must be at least 1, got {keep}" in line
    assert sorted(p.name for p in run_dir.glob("*.pt")) == before


def test_prune_keep_last_above_the_save_count_removes_nothing(tmp_path: Path) -> None:
    # Unscored saves: only "the newest N" can keep them (the issue: 3 of 4 were removed).
    run_dir = make_run(tmp_path, [None, None, None, None])
    before = [r.file for r in read_records(run_dir)]
    for keep in ("5", "4"):
        result = cli(tmp_path, "prune", "run-a", "--keep-last", keep)
        assert result.exit_code == 0, result.output
        assert "nothing to remove" in result.output
    assert [r.file for r in read_records(run_dir)] == before
    assert sorted(p.name for p in run_dir.glob("*.pt")) == sorted(before)


def test_export_writes_weights_for_torchvision(tmp_path: Path) -> None:
    make_run(tmp_path, [0.5], real_model=True)
    out = tmp_path / "weights.pt"
    result = cli(tmp_path, "export", "run-a", "--out", str(out))
    assert result.exit_code == 0, result.output
    torchvision.models.resnet18(num_classes=10).load_state_dict(
        torch.load(out, weights_only=True)
    )
    assert cli(tmp_path, "export", "run-a", str(tmp_path / "w2.pt")).exit_code == 0
    assert (tmp_path / "w2.pt").exists()


def test_argument_rewrites() -> None:
    assert expand_resume_flag(["run", "--headless", "--resume"]) == [
        "run", "--headless", "--resume", "latest"]
    assert expand_resume_flag(["run", "--resume", "--headless"]) == [
        "run", "--resume", "latest", "--headless"]
    assert expand_resume_flag(["run", "--resume", "runs/a"]) == ["run", "--resume", "runs/a"]
    assert expand_browse_args(["checkpoints", "--set", "x=1", "runs/a"]) == [
        "checkpoints", "--set", "x=1", "browse", "runs/a"]
    assert expand_browse_args(["checkpoints", "list"]) == ["checkpoints", "list"]
    assert expand_browse_args(["checkpoints"]) == ["checkpoints"]


def test_resume_errors_are_clear(tmp_path: Path) -> None:
    runner = CliRunner()
    nothing = runner.invoke(app, ["run", "--headless", "--resume", "latest", *TINY,
                                  "--set", f"checkpoint_path={tmp_path}"])
    assert nothing.exit_code == 2 and "no run with a checkpoint" in nothing.output
    make_run(tmp_path, [0.5])
    changed = runner.invoke(app, ["run", "--headless", "--resume", "run-a",
                                  "--set", "k_t=9", "--set", f"checkpoint_path={tmp_path}"])
    assert changed.exit_code == 2 and "'k_t' belongs to the resumed run" in changed.output


# ------------------------------------------------------------------ real processes
def _start(root: Path, *extra: str) -> subprocess.Popen[bytes]:
    # One thread each: the suite shares a small CPU; fewer threads are faster there.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mile_tui", "run", "--headless", *TINY,
         "--set", f"checkpoint_path={root}", *extra],
        cwd=root.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def _wait_for(
    predicate: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float = 120.0
) -> None:
    """Poll `predicate` until it holds; fail if `proc` dies or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _metrics(run_dir: Path) -> list[dict[str, object]]:
    return read_metrics(run_dir)  # a SIGKILL may cut the last line short: skipped


def test_sigkill_mid_training_then_resume_finishes(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    proc = _start(root, "--set", "epoch_num=2")
    _wait_for(lambda: root.exists() and any(root.glob(f"*/{MANIFEST_FILE}")), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    (run_dir,) = root.iterdir()
    saved = read_records(run_dir)[-1].global_step
    assert saved < 10  # killed mid-training

    resumed = _start(root, "--resume")
    output = resumed.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, output
    assert "run resumed" in output
    records = _metrics(run_dir)
    started = [r for r in records if r["event"] == "RunStarted"]
    assert len(started) == 2 and started[1]["global_step"] == saved
    after = [r["global_step"] for r in records[records.index(started[1]):]
             if r["event"] == "StepLogged"]
    assert after == list(range(saved + 1, 11))
    assert records[-1]["event"] == "RunEnded" and records[-1]["status"] == "finished"
    assert records[-1]["global_step"] == 10
    assert not list(run_dir.glob(".tmp-*"))


def test_sigterm_saves_a_final_checkpoint_and_exits_143(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    proc = _start(root, "--set", "epoch_num=2")

    def stepped() -> bool:
        files = list(root.glob("*/metrics.jsonl")) if root.exists() else []
        return bool(files) and '"StepLogged"' in files[0].read_text()

    _wait_for(stepped, proc)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 143, output
    (run_dir,) = root.iterdir()
    newest = read_records(run_dir)[-1]
    assert newest.reason == "stop"
    assert _metrics(run_dir)[-1]["status"] == "stopped"


def test_bare_checkpoints_command_runs_as_a_script(tmp_path: Path) -> None:
    make_run(tmp_path, [0.5])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "mile_tui", "checkpoints", "run-a",
         "--set", f"checkpoint_path={tmp_path}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert ": 1 checkpoint\n" in out.stdout


# ------------------------------------------------------------------ hostile export targets
@pytest.mark.parametrize("target", [
    "the save itself", "another save", "the manifest", "the settings", "a symlink to the save",
    "a hard link to the save", "a named pipe",
])
def test_export_refuses_a_target_it_would_destroy(tmp_path: Path, target: str) -> None:
    run_dir = make_run(tmp_path / "runs", [0.5, None])
    first, newest = (run_dir / r.file for r in read_records(run_dir))
    out = {
        "the save itself": newest, "another save": first,
        "the manifest": run_dir / MANIFEST_FILE, "the settings": run_dir / "settings.toml",
        "a symlink to the save": tmp_path / "link.pt", "a hard link to the save":
        tmp_path / "hard.pt", "a named pipe": tmp_path / "pipe.pt",
    }[target]
    if target == "a symlink to the save":
        out.symlink_to(newest)
    elif target == "a hard link to the save":
        os.link(newest, out)
    elif target == "a named pipe":
        make_fifo(out)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}

    result = cli(tmp_path / "runs", "export", "run-a", "--out", str(out))

    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --out ") and str(out) in lines[0]
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    assert out.is_symlink() or out.exists()
    assert cli(tmp_path / "runs", "verify", "run-a").exit_code == 0


def test_export_to_a_new_file_beside_the_run_still_works(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "runs", [0.5], real_model=True)
    out = run_dir / "weights-export.pt"
    result = cli(tmp_path / "runs", "export", "run-a", "--out", str(out))
    assert result.exit_code == 0, result.output
    newest = run_dir / read_records(run_dir)[-1].file
    student = torch.load(newest, weights_only=True)["student"]
    exported = torch.load(out, weights_only=True)
    assert exported.keys() == student.keys()
    assert all(torch.equal(exported[k], student[k]) for k in student)


@pytest.mark.parametrize("damage", ["empty", "cut short", "a folder"])
def test_list_shows_a_damaged_newest_save_as_unreadable(tmp_path: Path, damage: str) -> None:
    run_dir = make_run(tmp_path, [0.5, None])
    first, newest = (r.file for r in read_records(run_dir))
    path = run_dir / newest
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "cut short":
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.unlink()
        path.mkdir()

    (run,) = json.loads(cli(tmp_path, "list", "--json").output)

    assert [c["path"] for c in run["checkpoints"]] == [str(run_dir / first)]
    assert run["checkpoints"][0]["newest"] is True
    assert run["unreadable"] == [str(path)]
    plain = cli(tmp_path, "list").output
    row = next(line for line in plain.splitlines() if newest in line)
    assert "unreadable" in row and "●" not in row
