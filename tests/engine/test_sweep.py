"""Sweeps: the --space grammar, pruning through the trainer's control, lost trials of a
killed worker, and the best settings as a fragment the settings loader reads."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mile_engine.config.loader import load_settings
from mile_engine.runstore.catalog import summarize_run
from mile_engine.runstore.manifest import read_records
from mile_engine.runstore.records import read_metrics
from mile_engine.sweep import (
    SweepError,
    SweepSpec,
    WorkerLock,
    base_settings,
    draw_trial,
    load_spec,
    open_sweep,
    parse_space,
    read_tag,
    reap_lost_trials,
    run_worker,
    sweep_report,
    toml_fragment,
)
from tests.helpers.processes import wait_for
from tests.helpers.settings import REPO, tiny

optuna = pytest.importorskip("optuna")


@pytest.mark.parametrize(("text", "kind", "low", "high", "log", "choices"), [
    ("rho=0.03:0.5:log", "float", 0.03, 0.5, True, ()),
    ("rho=0.03:0.5", "float", 0.03, 0.5, False, ()),
    ("k_s=25:200:int", "int", 25, 200, False, ()),
    ("k_s=25:200", "int", 25, 200, False, ()),  # an integer setting stays integer
    ("k_t=10:1000:int:log", "int", 10, 1000, True, ()),
    ("lr=0.001:0.1:log", "float", 0.001, 0.1, True, ()),
    ("gt_or=true,false", "choice", 0, 0, False, (True, False)),
    ("schema=MILe,sigmoid", "choice", 0, 0, False, ("MILe", "sigmoid")),
    ("rho=0.05,0.1,0.25", "choice", 0, 0, False, (0.05, 0.1, 0.25)),
])
def test_good_spaces(text: str, kind: str, low: float, high: float, log: bool,
                     choices: tuple[Any, ...]) -> None:
    d = parse_space(text)
    assert (d.name, d.kind, d.log, d.choices) == (text.split("=")[0], kind, log, choices)
    if kind != "choice":
        assert (d.low, d.high) == (low, high)
    assert parse_space(d.to_text()) == d  # what a joining worker reads back


@pytest.mark.parametrize(("text", "says"), [
    ("rho", "key=LOW:HIGH"),
    ("=0.1:0.5", "key=LOW:HIGH"),
    ("rho=", "key=LOW:HIGH"),
    ("rhoo=0.1:0.5", "'rhoo' is not a setting. Did you mean 'rho'?"),
    ("rho=0.5:0.1", "LOW must be below HIGH"),
    ("rho=0.1:0.1", "LOW must be below HIGH"),
    ("rho=0:0.5:log", "must be a number strictly between 0 and 1"),
    ("lr=0.0:0.1", "must be a number strictly between 0 and 10"),
    ("rho=0.1:2", "strictly between 0 and 1"),
    ("rho=a:b", "'a' is not a number"),
    ("rho=0.1:0.5:cubic", "only :log and :int may follow, not cubic"),
    ("rho=0.1:0.5:log:log", "only :log and :int may follow"),
    ("rho=nan:0.5", "not a finite number"),
    ("k_s=2.5:10", "'2.5' is not an integer"),
    ("k_s=0:10", "'k_s' must be an integer >= 1"),
    ("gt_or=0:1", "'gt_or' is not a number"),
    ("schema=MILe,bogus", "'schema' must be one of"),
    ("gt_or=true,true", "listed twice"),
    ("gt_or=true,,false", "an empty value"),
    ("schema=1:3", "'schema' is not a number"),
])
def test_bad_spaces_say_what_is_wrong_in_one_line(text: str, says: str) -> None:
    with pytest.raises(SweepError) as caught:
        parse_space(text)
    message = str(caught.value)
    assert says in message
    assert "\n" not in message


@pytest.mark.parametrize("params", [
    {"rho": 0.0734, "k_s": 120, "gt_or": True},
    {"schema": "sigmoid", "lr": 0.003, "checkpoint_path": "runs/a b", "model": "resnet18"},
])
def test_the_fragment_loads_with_the_settings_loader(params: dict[str, Any],
                                                     tmp_path: Path) -> None:
    path = tmp_path / "best.toml"
    path.write_text(toml_fragment(params, ["best of sweep x"]), encoding="utf-8")
    if params.get("model") == "resnet18":
        params = {**params}  # resnet18 on digits is a consistent pair
    loaded = load_settings(path)
    assert {k: getattr(loaded, k) for k in params} == params


def _spec(name: str, trials: int, base: dict[str, Any], *spaces: str) -> SweepSpec:
    return SweepSpec(name, tuple(parse_space(s) for s in spaces), trials, "auto", base)


def test_a_pruned_trial_stops_with_a_save_and_is_marked_pruned(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    settings = tiny(checkpoint_path=str(root), epoch_num=3, k_t=2, k_s=1, val_size=32)
    spec = open_sweep(root, _spec("p", 1, settings.to_dict(), "gt_or=true,false"))
    # A pruner that prunes at every report: the trial stops after generation 1.
    always = optuna.pruners.ThresholdPruner(upper=-1.0)
    (result,) = run_worker(root, spec, base_settings(spec, root), pruner=always)
    assert result.outcome == "pruned"
    assert result.run_dir is not None
    run_dir = Path(result.run_dir)
    # The study, read back from its journal by Optuna itself, says pruned.
    study = optuna.load_study(study_name="p", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / "sweeps" / "p.journal"))))
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]
    # The run stopped like any stop: a save at its last step, status "stopped".
    records = read_metrics(run_dir)
    assert records[-1]["event"] == "RunEnded" and records[-1]["status"] == "stopped"
    evaluated = [r for r in records if r["event"] == "Evaluated"]
    assert [r["generation"] for r in evaluated] == [1]
    assert trial.intermediate_values[1] == pytest.approx(
        evaluated[0]["metrics"].get("map", evaluated[0]["metrics"]["real_f1"]))
    assert read_records(run_dir)[-1].global_step == records[-1]["global_step"]
    assert summarize_run(run_dir).status == "stopped"
    tag = read_tag(run_dir)
    assert tag is not None and (tag["sweep"], tag["trial"], tag["state"]) == ("p", 0, "pruned")


def test_a_trial_value_is_its_best_evaluation(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    settings = tiny(checkpoint_path=str(root), epoch_num=2, k_t=2, k_s=1, val_size=32)
    spec = open_sweep(root, _spec("v", 1, settings.to_dict(), "gt_or=false"))
    (result,) = run_worker(root, spec, base_settings(spec, root))
    assert result.outcome == "complete" and result.run_dir is not None
    metric = result.metric
    values = [r["metrics"][metric] for r in read_metrics(Path(result.run_dir))
              if r["event"] == "Evaluated"]
    assert len(values) == 2
    assert result.value == max(values)


def test_a_sweep_of_one_name_with_another_space_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    base = tiny(checkpoint_path=str(root)).to_dict()
    open_sweep(root, _spec("s", 3, base, "rho=0.05:0.5:log"))
    assert open_sweep(root, _spec("s", 3, base, "rho=0.05:0.5:log")).trials == 3
    with pytest.raises(SweepError, match="exists with --space rho=0.05:0.5:log --trials 3"):
        open_sweep(root, _spec("s", 3, base, "rho=0.05:0.4:log"))


def test_a_worker_may_not_change_what_the_trials_train(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    spec = open_sweep(root, _spec("m", 3, tiny().to_dict(), "rho=0.05:0.5:log"))
    assert base_settings(spec, root, ["device=cpu", "num_workers=0"]).num_workers == 0
    with pytest.raises(SweepError, match="--set k_t: the sweep's trials all train with"):
        base_settings(spec, root, ["k_t=7"])


def test_a_killed_workers_trial_is_marked_failed_and_queued_again(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    # A trial long enough to be killed in the middle of.
    settings = tiny(checkpoint_path=str(root), epoch_num=500, k_t=2, k_s=1, val_size=32)
    open_sweep(root, _spec("k", 2, settings.to_dict(), "rho=0.05:0.5:log"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with (tmp_path / "out.txt").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mile_tui", "sweep", "--join", "k",
             "--set", f"checkpoint_path={root}"], env=env, stdout=out,
            stderr=subprocess.STDOUT)
    try:
        def training() -> bool:
            runs = [p for p in root.iterdir() if (p / "metrics.jsonl").is_file()]
            return bool(runs) and any(r["event"] == "StepLogged"
                                      for r in read_metrics(runs[0]))
        wait_for(training, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    study = optuna.load_study(study_name="k", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / "sweeps" / "k.journal"))))
    (running,) = study.trials
    assert running.state == optuna.trial.TrialState.RUNNING  # nothing told the study
    # The report says so before any worker has noticed.
    (row,) = sweep_report(root, "k").trials
    assert row.state == "running" and "worker is gone" in row.note
    # What the next worker does before it draws a trial.
    assert reap_lost_trials(root, "k") == [0]
    study = optuna.load_study(study_name="k", storage=study._storage)
    lost, retry = study.trials
    assert lost.state == optuna.trial.TrialState.FAIL
    assert "ended without finishing" in lost.user_attrs["lost"]
    assert retry.state == optuna.trial.TrialState.WAITING
    assert retry.user_attrs["retry_of"] == 0
    assert reap_lost_trials(root, "k") == []  # once only
    # The next worker draws the queued retry: the lost trial's parameters again.
    worker = WorkerLock(root, "k")
    try:
        drawn = draw_trial(root, load_spec(root, "k"), worker)
        assert drawn is not None and drawn.number == retry.number == 1
        assert math.isclose(drawn.params["rho"], lost.params["rho"])
        # The lost trial does not count: one more may still be drawn (2 in all).
        assert draw_trial(root, load_spec(root, "k"), worker) is not None
        assert draw_trial(root, load_spec(root, "k"), worker) is None
    finally:
        worker.release()


def test_a_metric_no_evaluation_has_stops_the_worker_at_the_first(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    settings = tiny(checkpoint_path=str(root), epoch_num=3, k_t=2, k_s=1, val_size=32)
    spec = open_sweep(root, SweepSpec("m", (parse_space("gt_or=true,false"),), 3,
                                      "f1_typo", settings.to_dict()))
    (result,) = run_worker(root, spec, base_settings(spec, root))
    assert result.outcome == "failed" and result.ends_worker
    assert result.error is not None and "no metric 'f1_typo'" in result.error
    assert "real_f1" in result.error
    assert result.run_dir is not None
    evaluated = [r for r in read_metrics(Path(result.run_dir)) if r["event"] == "Evaluated"]
    assert len(evaluated) == 1  # stopped after the first of three generations
