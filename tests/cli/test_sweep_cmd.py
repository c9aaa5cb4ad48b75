"""`mile-tui sweep`: two worker processes on one journal, bad --space strings, and
`sweep show`'s fragment read back by the settings loader."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mile_engine.config.loader import load_settings
from mile_engine.runstore.catalog import list_runs
from mile_engine.runstore.manifest import read_records
from mile_engine.sweep import read_tag
from mile_tui.cli import app
from tests.helpers.processes import wait_for
from tests.helpers.settings import REPO

optuna = pytest.importorskip("optuna")

TRIALS = 4
# One generation of 2 + 1 steps, 32 validation grids: a trial takes seconds.
QUICK = ["--set", "epoch_num=1", "--set", "k_t=2", "--set", "k_s=1", "--set", "val_size=32",
         "--set", "batch_size=8", "--set", "device=cpu", "--set", "num_workers=0"]
SPACE = ["--space", "rho=0.03:0.5:log", "--space", "gt_or=true,false"]


def _worker(root: Path, out: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with out.open("wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "mile_tui", "sweep", *args, "--set",
             f"checkpoint_path={root}"], env=env, stdout=fh, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A sweep of TRIALS trials started by one worker and joined by a second one."""
    tmp = tmp_path_factory.mktemp("sweep")
    root = tmp / "runs"
    outs = [tmp / "a.txt", tmp / "b.txt"]
    first = _worker(root, outs[0], "--name", "two", "--trials", str(TRIALS), *SPACE, *QUICK)
    procs = [first]
    try:
        wait_for(lambda: (root / "sweeps" / "two.journal").exists(), first)
        procs.append(_worker(root, outs[1], "--join", "two"))
        for proc in procs:
            assert proc.wait(timeout=900) == 0, [o.read_text() for o in outs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return root, [o.read_text() for o in outs]


def _study(root: Path, name: str) -> Any:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / "sweeps" / f"{name}.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def test_two_workers_finish_the_trials_once_each(two_workers: tuple[Path, list[str]]) -> None:
    root, outputs = two_workers
    # Each worker prints "trial N: ..." when it takes trial N.
    taken = [re.findall(r"sweep two: trial (\d+): ", out) for out in outputs]
    numbers = [int(n) for worker in taken for n in worker]
    assert sorted(numbers) == list(range(TRIALS)), taken  # all of them, none twice
    # The study, read back by Optuna: exactly TRIALS trials, each finished.
    trials = _study(root, "two").trials
    assert [t.number for t in trials] == list(range(TRIALS))
    assert all(t.state.is_finished() and t.state.name != "FAIL" for t in trials)
    # Each trial is an ordinary run folder, tagged with its sweep and trial.
    runs = list_runs([root])
    assert len(runs) == TRIALS
    tags = sorted((read_tag(r.path) or {}).get("trial", -1) for r in runs)
    assert tags == list(range(TRIALS))
    by_trial = {t.number: t for t in trials}
    for run in runs:
        tag = read_tag(run.path)
        assert tag is not None and tag["sweep"] == "two"
        trial = by_trial[tag["trial"]]
        assert trial.user_attrs["run_dir"] == run.name
        # The run trained with the trial's parameters on top of the sweep's settings.
        assert run.settings["rho"] == pytest.approx(trial.params["rho"])
        assert run.settings["gt_or"] == trial.params["gt_or"]
        assert run.settings["k_t"] == 2 and run.status == "finished"


def test_the_workers_print_the_best_settings(two_workers: tuple[Path, list[str]]) -> None:
    _, outputs = two_workers
    assert any("best settings (mile.toml):" in out for out in outputs)


def test_show_prints_a_fragment_the_settings_loader_reads(
        two_workers: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, _ = two_workers
    result = CliRunner().invoke(app, ["sweep", "show", "two", "--set",
                                      f"checkpoint_path={root}"])
    assert result.exit_code == 0, result.output
    fragment = result.output.split("best settings (mile.toml):\n", 1)[1]
    path = tmp_path / "best.toml"
    path.write_text(fragment, encoding="utf-8")
    loaded = load_settings(path)
    best = _study(root, "two").best_trial
    assert loaded.rho == pytest.approx(best.params["rho"])
    assert loaded.gt_or == best.params["gt_or"]
    assert f"trial {best.number}" in fragment
    # Importances over the two parameters (or why there are none yet).
    assert "importance: " in result.output or "importances" in result.output


@pytest.mark.parametrize("space", [
    "rho", "rhoo=0.1:0.5", "rho=0.5:0.1", "rho=0:0.5:log", "rho=a:b", "rho=0.1:0.5:cubic",
    "k_s=2.5:10", "gt_or=0:1", "schema=MILe,bogus", "gt_or=true,true",
])
def test_a_bad_space_exits_2_with_one_line(space: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sweep", "--name", "x", "--space", space, "--set",
                                      f"checkpoint_path={tmp_path / 'runs'}"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --space")
    assert not (tmp_path / "runs" / "sweeps").exists()  # nothing made


@pytest.mark.parametrize(("args", "says"), [
    (["--join", "nope"], "no sweep 'nope'"),
    ([], "give --name NAME"),
    (["--name", "a/b", "--space", "rho=0.1:0.2"], "sweep name 'a/b'"),
    (["--name", "x"], "give at least one --space"),
])
def test_usage_errors_exit_2_with_one_line(args: list[str], says: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sweep", *args, "--set",
                                      f"checkpoint_path={tmp_path / 'runs'}"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert says in result.output


def test_show_of_a_missing_sweep_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sweep", "show", "nope", "--set",
                                      f"checkpoint_path={tmp_path}"])
    assert result.exit_code == 2 and "no sweep 'nope'" in result.output
    assert json.dumps(result.output).count("\\n") <= 1


def test_sigterm_stops_the_trial_with_a_save_and_queues_it_again(tmp_path: Path) -> None:
    # What Slurm's time limit does to a worker.
    root = tmp_path / "runs"
    long = [*QUICK, "--set", "epoch_num=500"]
    proc = _worker(root, tmp_path / "out.txt", "--name", "term", "--trials", "3",
                   "--space", "gt_or=true,false", *long)
    try:
        def training() -> bool:
            runs = list_runs([root])
            return bool(runs) and runs[0].global_step > 0
        wait_for(training, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=300) == 130, (tmp_path / "out.txt").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    (run,) = list_runs([root])
    assert run.status == "stopped"
    records = read_records(run.path)
    assert records and records[-1].reason == "stop"  # saved on the way out
    stopped, retry = _study(root, "term").trials
    assert stopped.state.name == "FAIL" and "stopped" in stopped.user_attrs["lost"]
    assert retry.state.name == "WAITING" and retry.user_attrs["retry_of"] == stopped.number
    assert "sweep --join term" in (tmp_path / "out.txt").read_text()
