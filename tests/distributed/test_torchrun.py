"""Several processes under torchrun with Gloo on the CPU."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mile_engine.trainer import Trainer
from tests.helpers.processes import TORCHRUN
from tests.helpers.settings import TINY, tiny

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not torch.distributed.is_available(), reason="torch.distributed is not available"
    ),
]


def torchrun(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*TORCHRUN, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_two_process_run_writes_once_and_resumes(tmp_path: Path) -> None:
    run = ["-m", "mile_tui", "run", "--headless", *TINY]
    done = torchrun([*run, "--set", "epoch_num=1"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "global batch 8 x 2 = 16" in done.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()  # one folder: only rank 0 wrote
    assert sorted(p.name for p in run_dir.glob("*.pt")) == ["step-00000005-generation.pt"]
    assert done.stdout.count("run finished") == 1  # only rank 0 printed
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records].count("Evaluated") == 1
    assert all(r["images_per_s"] > 0 for r in records if r["event"] == "StepLogged")

    again = torchrun([*run, "--resume", "--set", "epoch_num=2"], tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "run resumed" in again.stdout
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["event"] == "Evaluated"]
    assert [e["generation"] for e in evals] == [1, 2]
    assert evals[-1]["global_step"] == 10

    single = subprocess.run(
        [sys.executable, "-m", "mile_tui", "run", "--headless", *TINY, "--resume",
         "--set", "epoch_num=3"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert single.returncode == 2
    assert "written by a run of 2 process(es)" in single.stderr


def test_sharded_evaluation_equals_single_process_exactly(tmp_path: Path) -> None:
    # 1,300 grids: batches of 512, 512 and 276, split over two ranks.
    args = [*TINY, "--set", "val_size=1300"]
    worker = Path(__file__).with_name("eval_worker.py")
    out = tmp_path / "dist.json"
    done = torchrun([str(worker), str(out), *args], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    sharded = json.loads(out.read_text())

    trainer = Trainer(tiny(val_size=1300), tmp_path)
    torch.manual_seed(123)
    for p in trainer.student.parameters():
        p.data.normal_(0, 0.05)
    metrics = trainer.evaluate()
    assert sharded["metrics"] == json.loads(json.dumps(metrics))
    assert sharded["sweep"] == json.loads(json.dumps(trainer.history[-1]["sweep"]))
    # mAP needs every score: each rank gathers the others' and gets the same number.
    other = json.loads(out.with_name(f"{out.name}.rank1").read_text())
    assert other["metrics"]["map"] == sharded["metrics"]["map"] == metrics["map"]


def _rank_pids(parent: int, rank: str) -> list[int]:
    """Worker processes of a torchrun job whose environment says RANK=rank."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = int(next(x for x in status.splitlines() if x.startswith("PPid:")).split()[1])
        if ppid == parent and f"RANK={rank}".encode() in env:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next(x for x in status.splitlines() if x.startswith("State:"))
    return "zombie" not in state


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_a_killed_rank_ends_the_whole_job(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*TORCHRUN, "-m", "mile_tui", "run", "--headless", *TINY, "--set", "epoch_num=500"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # training is under way
        if "interactive step" in line:
            break
    victims, survivors = _rank_pids(proc.pid, "1"), _rank_pids(proc.pid, "0")
    assert victims and survivors, "ranks not found"
    os.kill(victims[0], signal.SIGKILL)
    try:
        out = proc.communicate(timeout=300)[0]  # a hang guard: the job must end by itself
    except subprocess.TimeoutExpired:
        for pid in (proc.pid, *survivors):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise AssertionError("the job did not end after one of its ranks was killed") from None
    assert proc.returncode != 0, out
    # Nothing left behind: the surviving rank ended with the job.
    assert not [pid for pid in survivors if _alive(pid)], out
