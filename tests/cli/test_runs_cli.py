"""`mile-tui runs`: the list, and steering a real headless run in another process."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mile_engine.runstore.catalog import summarize_run
from mile_engine.runstore.layout import REQUEST_FILE
from mile_engine.runstore.lock import hold_active
from mile_engine.runstore.manifest import read_records
from mile_tui.cli import app
from mile_tui.headless import EXIT_FAILED, EXIT_INTERRUPTED
from tests.helpers.processes import (
    only_run,
    output_of,
    records_of,
    start_headless,
    wait_for,
)
from tests.helpers.settings import tiny


def runs(root: Path, *args: str) -> Any:
    """`mile-tui runs ARGS` in-process with checkpoint_path = root."""
    return CliRunner().invoke(app, ["runs", *args, "--set", f"checkpoint_path={root}"])


def _newest(records: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((r for r in reversed(records) if r["event"] == kind), None)


def test_pause_save_resume_stop_a_headless_run(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    proc = start_headless(root, "--set", "epoch_num=500")
    try:
        def stepped() -> bool:
            run = only_run(root)
            return run is not None and _newest(records_of(run), "StepLogged") is not None

        wait_for(stepped, proc)
        run_dir = only_run(root)
        assert run_dir is not None

        listed = runs(root, "list", "--json")
        assert listed.exit_code == 0, listed.output
        (row,) = json.loads(listed.output)
        assert row["status"] == "running" and row["path"] == str(run_dir)
        assert row["holder"] == {"host": socket.gethostname(), "pid": proc.pid}
        plain = runs(root, "list")
        assert f"running ({socket.gethostname()} pid {proc.pid})" in plain.output

        # Pause (by the run's name under checkpoint_path): acknowledged, then it waits.
        paused = runs(root, "pause", run_dir.name)
        assert paused.exit_code == 0 and "pause taken by the run" in paused.output
        wait_for(lambda: _newest(records_of(run_dir), "Paused") is not None, proc)
        at = _newest(records_of(run_dir), "Paused")
        assert at is not None
        # Listed as paused while it waits (its lock is still held: it is live).
        assert f"paused ({socket.gethostname()} pid {proc.pid})" in runs(root, "list").output
        (row,) = json.loads(runs(root, "list", "--json").output)
        assert row["status"] == "running" and row["paused"] is True
        # A save while paused proves the paused trainer is alive and listening, and that
        # it took no step meanwhile: the save is at the step it paused at.
        assert runs(root, "save", str(run_dir)).exit_code == 0
        def saved_on_request() -> bool:
            saved = _newest(records_of(run_dir), "CheckpointSaved")
            return saved is not None and saved["reason"] == "request"

        wait_for(saved_on_request, proc)
        records = records_of(run_dir)
        saved = _newest(records, "CheckpointSaved")
        assert saved is not None and saved["global_step"] == at["global_step"]
        assert Path(saved["path"]).is_file()
        last_step = _newest(records, "StepLogged")
        assert last_step is not None and last_step["global_step"] <= at["global_step"]
        steered = [(r["request"], r["global_step"]) for r in records if r["event"] == "Steered"]
        assert steered == [("pause", at["global_step"]), ("save", at["global_step"])]

        # Resume: it advances past the pause again.
        assert runs(root, "resume", str(run_dir)).exit_code == 0

        def advanced() -> bool:
            step = _newest(records_of(run_dir), "StepLogged")
            return step is not None and step["global_step"] > at["global_step"]

        wait_for(advanced, proc)
        assert _newest(records_of(run_dir), "Resumed") is not None

        # Stop: a final save, status "stopped", exit 130 as after Ctrl-C.
        assert runs(root, "stop", str(run_dir)).exit_code == 0
        assert proc.wait(timeout=180) == EXIT_INTERRUPTED, output_of(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    records = records_of(run_dir)
    ended = records[-1]
    assert ended["event"] == "RunEnded" and ended["status"] == "stopped"
    newest = read_records(run_dir)[-1]
    assert newest.reason == "stop" and newest.global_step == ended["global_step"]
    assert "resume with: mile-tui run --headless --resume" in output_of(proc)
    assert summarize_run(run_dir).status == "stopped"
    # A run that is over cannot be steered: one line, exit 2.
    late = runs(root, "stop", run_dir.name)
    assert late.exit_code == 2 and "not running" in late.output
    assert len(late.output.strip().splitlines()) == 1


def test_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    missing = runs(root, "pause", "nope")
    assert missing.exit_code == 2 and "nope: no such run folder" in missing.output
    assert runs(root, "list").output.strip() == "no runs"
    assert json.loads(runs(root, "list", "--json").output) == []
    bad = runs(root, "wobble", "x")
    assert bad.exit_code == 2


@pytest.mark.parametrize("request_name", ["save", "stop", "pause", "resume"])
def test_a_request_nobody_takes_fails_after_the_timeout(tmp_path: Path,
                                                        request_name: str) -> None:
    # A run folder whose lock is held, as a trainer's is, by a process that never looks
    # at its request file (a frozen trainer).
    root = tmp_path / "runs"
    run_dir = root / "frozen"
    run_dir.mkdir(parents=True)
    (run_dir / "settings.toml").write_text(tiny().to_toml())
    lock = hold_active(run_dir)
    try:
        result = runs(root, request_name, "frozen", "--timeout", "0.3")
        assert result.exit_code == EXIT_FAILED, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1
        assert f"did not take the {request_name} request within 0.3 s" in lines[0]
        # The request file holds it still, for the trainer's next look.
        assert (run_dir / REQUEST_FILE).read_text() == f"{request_name}\n"
        (run_dir / REQUEST_FILE).unlink()
        (run_dir / REQUEST_FILE).mkdir()
        refused = runs(root, request_name, "frozen", "--timeout", "0.3")
        assert refused.exit_code == 2 and "is a folder" in refused.output
        assert len(refused.output.strip().splitlines()) == 1
    finally:
        assert lock is not None
        lock.close()


def test_a_run_with_non_finite_records_is_listed_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run_dir = root / "odd"
    run_dir.mkdir(parents=True)
    (run_dir / "settings.toml").write_text(tiny().to_toml())
    (run_dir / "metrics.jsonl").write_text(
        '{"event": "RunEnded", "status": "finished", "global_step": 1e999, '
        '"best": {"real_f1": 0.5, "generation": NaN}}\n')
    result = runs(root, "list")
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.output.splitlines() if line.startswith("odd")]
    assert "finished" in row and "0.5000" in row and "None" not in row
    listed = runs(root, "list", "--json")
    (data,) = json.loads(listed.output)
    assert data["best_f1"] == 0.5 and data["best_generation"] is None
