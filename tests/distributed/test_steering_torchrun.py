"""Steering a torchrun job (two Gloo processes) through rank 0's run folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from mile_engine.runstore.catalog import summarize_run
from mile_engine.runstore.manifest import read_records
from mile_engine.runstore.steering import send_request
from tests.helpers.processes import TORCHRUN, only_run, records_of, wait_for
from tests.helpers.settings import TINY

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not torch.distributed.is_available(), reason="torch.distributed is not available"
    ),
]


def _newest(records: list[dict[str, Any]], kind: str, **match: Any) -> dict[str, Any] | None:
    return next((r for r in reversed(records) if r["event"] == kind
                 and all(r.get(k) == v for k, v in match.items())), None)


def test_pause_save_resume_stop_reach_both_ranks(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = tmp_path / "runs"
    with (tmp_path / "out.txt").open("wb") as out:
        proc = subprocess.Popen(
            [*TORCHRUN, "-m", "mile_tui", "run", "--headless", *TINY,
             "--set", "epoch_num=500"],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    try:
        def stepped() -> bool:
            run = only_run(root)
            return run is not None and _newest(records_of(run), "StepLogged") is not None

        wait_for(stepped, proc, timeout=300)
        run_dir = only_run(root)
        assert run_dir is not None
        assert summarize_run(run_dir).status == "running"

        send_request(run_dir, "pause")
        wait_for(lambda: _newest(records_of(run_dir), "Paused") is not None, proc)
        paused = _newest(records_of(run_dir), "Paused")
        assert paused is not None
        at = paused["global_step"]
        # Saving gathers every rank's data stream (a collective): it completes only if
        # rank 1 waits in the same pause loop as rank 0, at the same step.
        send_request(run_dir, "save")
        wait_for(lambda: _newest(records_of(run_dir), "CheckpointSaved",
                                 reason="request") is not None, proc)
        saved = _newest(records_of(run_dir), "CheckpointSaved", reason="request")
        assert saved is not None and saved["global_step"] == at
        last = _newest(records_of(run_dir), "StepLogged")
        assert last is not None and last["global_step"] <= at

        send_request(run_dir, "resume")

        def advanced() -> bool:
            step = _newest(records_of(run_dir), "StepLogged")
            return step is not None and step["global_step"] > at

        wait_for(advanced, proc)
        send_request(run_dir, "stop")
        code = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = (tmp_path / "out.txt").read_text(errors="replace")
    records = records_of(run_dir)
    ended = records[-1]
    assert ended["event"] == "RunEnded" and ended["status"] == "stopped", output
    assert read_records(run_dir)[-1].reason == "stop"
    assert read_records(run_dir)[-1].global_step == ended["global_step"]
    steered = [r["request"] for r in records if r["event"] == "Steered"]
    assert steered == ["pause", "save", "resume", "stop"]
    # Both ranks stopped together and left cleanly: no rank failed or hung.
    assert "rank 1: run failed" not in output and "Traceback" not in output, output
    # A requested stop ends the workers with 0: torchrun would take 130 for a failure
    # (and restart the job where --max-restarts allows).
    assert code == 0, output
