"""The `run --headless` command through Typer's CliRunner and as a real process."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from mile_tui.cli import app
from tests.helpers.hostile import call_unblocked, make_fifo

TINY = ["--set", "batch_size=8", "--set", "val_size=64", "--set", "k_t=3", "--set", "k_s=2",
        "--set", "epoch_num=2", "--set", "log_every=1", "--set", "device=cpu"]


def invoke(args: list[str], tmp_path: Path) -> Result:
    """Run `mile-tui run --headless ARGS` with its runs under `tmp_path`."""
    runner = CliRunner()
    return runner.invoke(
        app, ["run", "--headless", *args, "--set", f"checkpoint_path={tmp_path / 'runs'}"]
    )


def test_headless_run_writes_run_folder_and_plain_lines(tmp_path: Path) -> None:
    result = invoke(TINY, tmp_path)
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output
    assert re.search(r"eval gen 2: mAP \d\.\d{4} top-1", result.output)
    assert "imitation phase" in result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "settings.toml").read_text().count("k_t = 3") == 1
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    kinds = [r["event"] for r in records]
    assert kinds.count("Evaluated") == 2 and kinds.count("StepLogged") == 10
    assert kinds[0] == "RunStarted" and kinds[-1] == "RunEnded"
    assert records[-1]["status"] == "finished"
    assert "run finished" in (run_dir / "run.log").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "k_tt=3"], "Did you mean 'k_t'"),
        (["--set", "rho=1.5"], "'rho' must be a number strictly between 0 and 1"),
        (["--set", "model=resnet5"], 'Did you mean "resnet50"'),
        (["--set", "model=alexnet"], "alexnet needs inputs of at least 63x63 pixels"),
        (["--set", "nonsense"], "key=value"),
        (["--config", "missing.toml"], "no such settings file"),
    ],
)
def test_bad_settings_exit_2_without_traceback(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = invoke(args, tmp_path)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()  # nothing trained, no run folder


def test_bad_toml_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[mile]\nk_t = 3\nk_s =\n")
    result = invoke(["--config", str(path)], tmp_path)
    assert result.exit_code == 2
    assert str(path) in result.output and "line 3" in result.output


def test_cuda_on_a_cpu_machine_is_a_settings_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = invoke([*TINY, "--set", "device=cuda"], tmp_path)
    assert result.exit_code == 2 and "CUDA is not available" in result.output


def test_sigint_stops_cleanly_with_exit_130(tmp_path: Path) -> None:
    import signal

    args = [sys.executable, "-m", "mile_tui", "run", "--headless", *TINY,
            "--set", "epoch_num=200", "--set", f"checkpoint_path={tmp_path / 'runs'}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until training is under way
        if "StepLogged" in line or " step " in line:
            break
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=600)[0]  # a hang guard, not a speed requirement
    assert proc.returncode == 130, out
    assert "run stopped" in out
    # Stopped between two steps, long before its 1,000, with a final save of that state.
    (run_dir,) = (tmp_path / "runs").iterdir()
    ended = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert ended["event"] == "RunEnded" and ended["status"] == "stopped"
    assert 0 < ended["global_step"] < 1000
    saves = json.loads((run_dir / "checkpoints.json").read_text())["checkpoints"]
    assert saves[-1]["reason"] == "stop"
    assert saves[-1]["global_step"] == ended["global_step"]
    # It says where that save is and the exact command that continues the run.
    assert f"newest save: {run_dir / saves[-1]['file']}" in out
    assert f"resume with: mile-tui run --headless --resume {run_dir}" in out


def test_second_sigint_aborts_without_traceback(tmp_path: Path) -> None:
    import signal

    args = [sys.executable, "-m", "mile_tui", "run", "--headless", *TINY,
            "--set", "epoch_num=200", "--set", f"checkpoint_path={tmp_path / 'runs'}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if " step " in line:
            break
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=600)[0]  # a hang guard
    assert proc.returncode == 130, out
    assert "Traceback" not in out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-generation run to resume (copied per test before it is spoilt)."""
    root = tmp_path_factory.mktemp("finished")
    result = invoke([*TINY, "--set", "epoch_num=1", "--set", "num_workers=0"], root)
    assert result.exit_code == 0, result.output
    (run_dir,) = (root / "runs").iterdir()
    return run_dir


@pytest.mark.parametrize(("name", "kind", "cause"), [
    ("metrics.jsonl", "fifo", "not a regular file (a named pipe)"),
    ("metrics.jsonl", "link to /dev/null", "not a regular file (a device)"),
    ("run.log", "fifo", "not a regular file (a named pipe)"),
    ("run.log", "link to /dev/null", "not a regular file (a device)"),
])
def test_resume_names_a_run_file_that_is_not_a_regular_file(
    tmp_path: Path, finished_run: Path, name: str, kind: str, cause: str
) -> None:
    run_dir = tmp_path / "runs" / finished_run.name
    shutil.copytree(finished_run, run_dir)
    path = run_dir / name
    path.unlink()
    fifos = []
    if kind == "fifo":
        fifos.append(make_fifo(path))
    else:
        path.symlink_to("/dev/null")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()
              and p.name != name}

    result = call_unblocked(
        lambda: invoke(["--resume", str(run_dir), "--set", "epoch_num=2"], tmp_path), fifos)

    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"error: {cause}: {path}"
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()
             and p.name != name}
    assert after == before  # nothing trained, nothing saved
