"""The runs list (mile_engine/runstore/catalog.py): each status from a real run folder,
progress and best from its records, and hostile run folders: records holding values JSON
should not (NaN, infinity, numbers too long for a float) and metrics files that are not
files."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mile_engine import events as ev
from mile_engine.config.schema import Settings
from mile_engine.control import Control
from mile_engine.runstore import catalog as run_catalog
from mile_engine.runstore.catalog import list_runs, newest_live_run, summarize_run
from mile_engine.runstore.files import RunBusyError
from mile_engine.runstore.lock import hold_active
from mile_engine.runstore.manifest import read_records
from mile_engine.session import open_run
from tests.helpers.hostile import call_unblocked, make_fifo
from tests.helpers.processes import only_run, records_of, start_headless, wait_for
from tests.helpers.runs import make_run
from tests.helpers.settings import REPO, tiny

SETTINGS = 'schema = "mile"\ndataset = "digits"\nmodel = "resnet18-10"\nepoch_num = 2\n'


def _run(root: Path, name: str, metrics: str | None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "settings.toml").write_text(SETTINGS)
    if metrics is not None:
        (folder / "metrics.jsonl").write_text(metrics)
    return folder


# A finished run's end record and an evaluation of a running one, each with one value
# Python's json reads as a non-finite float (or as nothing a summary can hold).
HOSTILE_VALUES = ["1e999", "-1e999", "NaN", "Infinity", "-Infinity"]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
@pytest.mark.parametrize("where", ["generation", "real_f1", "global_step"])
def test_non_finite_values_keep_the_run_listed(tmp_path: Path, value: str, where: str) -> None:
    best = {"real_f1": 0.5, "generation": 1}
    ended = {"event": "RunEnded", "status": "finished", "generation": 2, "global_step": 10,
             "best": best}
    text = json.dumps(ended).replace(f'"{where}": ', f'"{where}": {value}, "was": ')
    assert value in text
    _run(tmp_path, "hostile", text + "\n")
    _run(tmp_path, "plain", json.dumps(ended) + "\n")

    found = {r.name: r for r in list_runs([tmp_path])}

    assert set(found) == {"hostile", "plain"}
    run = found["hostile"]
    assert run.status == "finished"
    for number in (run.best_f1, run.best_generation, run.generation, run.global_step):
        assert number is None or math.isfinite(number)
    # The values untouched by the hostile one read as written (a best without an F1 is
    # no best at all).
    if where == "real_f1":
        assert run.best_f1 is None and run.best_generation is None
    else:
        assert run.best_f1 == 0.5
        assert run.best_generation == (None if where == "generation" else 1)


def test_nan_in_a_running_runs_evaluation_keeps_it_listed(tmp_path: Path) -> None:
    evaluated = ('{"event": "Evaluated", "generation": NaN, "global_step": 1e999, '
                 '"metrics": {"real_f1": NaN}, "best": true}\n')
    _run(tmp_path, "nan", evaluated)

    (run,) = list_runs([tmp_path])

    assert run.status == "interrupted"
    assert run.best_f1 is None and run.generation == 0 and run.global_step == 0


def test_a_named_pipe_for_metrics_is_listed_without_blocking(tmp_path: Path) -> None:
    folder = _run(tmp_path, "piped", None)
    fifo = make_fifo(folder / "metrics.jsonl")
    _run(tmp_path, "plain", '{"event": "RunEnded", "status": "stopped"}\n')

    found = call_unblocked(lambda: {r.name: r for r in list_runs([tmp_path])}, [fifo])

    assert set(found) == {"piped", "plain"}
    assert found["plain"].status == "stopped"
    assert found["piped"].status == "interrupted"


# ------------------------------------------------------------- the runs list from real run folders
# The runs list: each status from a real run folder, progress and best from its records.
class StopAt:
    """A sink that calls `act` once the run reaches `step`."""

    def __init__(self, step: int, act: Callable[[], None]) -> None:
        self.step, self.act = step, act

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.StepLogged) and event.global_step == self.step:
            self.act()


def _trained(settings: Settings, step: int | None = None,
             how: Callable[[Control], None] = Control.stop) -> Path:
    control = Control()
    sinks = [StopAt(step, lambda: how(control))] if step is not None else []
    trainer = open_run(settings, sinks, control)
    trainer.train()
    return trainer.run_dir


# ------------------------------------------------------------------ statuses
def test_finished_run(tmp_path: Path) -> None:
    run_dir = _trained(tiny(checkpoint_path=str(tmp_path / "runs")))
    s = summarize_run(run_dir)
    records = records_of(run_dir)
    evals = [r for r in records if r["event"] == "Evaluated"]
    assert s.status == "finished" and s.holder is None
    assert (s.generation, s.generations) == (2, 2)
    assert (s.global_step, s.total_steps) == (10, 10)
    best = max(evals, key=lambda r: r["metrics"]["real_f1"])
    assert s.best_f1 == best["metrics"]["real_f1"]
    assert s.best_generation == best["generation"]
    assert (s.schema, s.dataset, s.model) == ("MILe", "digits", "resnet18-10")
    assert s.settings["k_t"] == 3 and s.name == run_dir.name
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert s.disk_bytes == sum(p.stat().st_size for p in files)
    assert s.last_activity == max(p.stat().st_mtime for p in files)


def test_stopped_run(tmp_path: Path) -> None:
    run_dir = _trained(tiny(checkpoint_path=str(tmp_path / "runs")), step=7)
    s = summarize_run(run_dir)
    assert s.status == "stopped"
    assert (s.generation, s.global_step) == (2, 7)  # stopped in generation 2's 2nd step
    evals = [r for r in records_of(run_dir) if r["event"] == "Evaluated"]
    assert s.best_f1 == evals[0]["metrics"]["real_f1"] and s.best_generation == 1


def test_failed_run(tmp_path: Path) -> None:
    run_dir = _trained(tiny(checkpoint_path=str(tmp_path / "runs")), step=2,
                       how=lambda c: c.fail("disk said no"))
    s = summarize_run(run_dir)
    assert s.status == "failed"
    assert (s.generation, s.global_step, s.best_f1, s.best_generation) == (1, 2, None, None)


def test_running_elsewhere_then_interrupted_by_sigkill(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    proc = start_headless(root, "--set", "epoch_num=500")
    try:
        def stepped() -> bool:
            run = only_run(root)
            return run is not None and any(r["event"] == "StepLogged" for r in records_of(run))

        wait_for(stepped, proc)
        run_dir = only_run(root)
        assert run_dir is not None
        s = summarize_run(run_dir)
        assert s.status == "running"
        assert s.holder == run_catalog.LockHolder(socket.gethostname(), proc.pid)
        assert not s.holder.is_this_process() and s.holder.is_this_host()
        assert str(s.holder) == f"{socket.gethostname()} pid {proc.pid}"
        live = newest_live_run([root])
        assert live is not None and live.path == run_dir
        # A second trainer is refused with one line that says who holds the run.
        with pytest.raises(RunBusyError, match=f"training in this run folder "
                           f"\\({socket.gethostname()} pid {proc.pid}\\)"):
            hold_active(run_dir)
        assert s.generations == 500 and s.total_steps == 2500
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    s = summarize_run(run_dir)
    assert s.status == "interrupted" and s.holder is None
    steps = [r["global_step"] for r in records_of(run_dir) if "global_step" in r]
    assert s.global_step == steps[-1]
    assert newest_live_run([root]) is None


def test_a_run_folder_without_records_is_interrupted_and_an_empty_folder_no_run(
        tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    with pytest.raises(ValueError, match="not a run folder"):
        summarize_run(run_dir)
    (run_dir / "settings.toml").write_text(
        tiny(schema="sigmoid", epoch_num=4, k_t=2, k_s=3).to_toml())
    s = summarize_run(run_dir)
    assert (s.status, s.schema, s.generation, s.generations, s.total_steps) == (
        "interrupted", "sigmoid", 0, 4, 20)
    assert (s.best_f1, s.global_step) == (None, 0)


# ------------------------------------------------------------------ the best of a live run
def _evaluated(generation: int, f1: float, best: bool) -> dict[str, Any]:
    return {"event": "Evaluated", "time": 1.0, "generation": generation,
            "global_step": generation * 5, "metrics": {"real_f1": f1, "top1": 0.5},
            "best": best, "images_per_s": 10.0, "sweep": {"0.1": {"real_f1": f1}}}


def _step(global_step: int, padding: int) -> dict[str, Any]:
    return {"event": "StepLogged", "time": 1.0, "generation": 1, "phase": "interactive",
            "step": 1, "steps": 5, "global_step": global_step, "total_steps": 99,
            "loss": 0.5, "lr": 0.1, "images_per_s": 1.0, "elapsed_s": 1.0,
            "note": "x" * padding}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    f1s=st.lists(st.floats(0, 1), min_size=0, max_size=8),
    padding=st.integers(0, 300),
    chunk=st.sampled_from([16, 64, 257, 4096]),
    cut=st.integers(0, 8),
)
def test_best_of_an_unended_run_is_the_highest_f1(
        tmp_path_factory: pytest.TempPathFactory, f1s: list[float], padding: int, chunk: int,
        cut: int) -> None:
    # Tiny chunks make the backward search cross chunk boundaries inside lines; the
    # oracle is the plain maximum, not the best flags the search looks for.
    run_catalog.CHUNK_BYTES = chunk
    try:
        run_dir = tmp_path_factory.mktemp("live")
        path = run_dir / "metrics.jsonl"
        lines, top = [], None
        for g, f1 in enumerate(f1s, 1):
            lines += [json.dumps(_step(g * 5 - k, padding)) for k in (2, 1)]
            lines.append(json.dumps(_evaluated(g, f1, top is None or f1 > top)))
            top = f1 if top is None or f1 > top else top
        half = lines[:cut]
        path.write_text("".join(x + "\n" for x in half))
        summarize_run(run_dir)  # fills the cache with the first part
        path.write_text("".join(x + "\n" for x in lines) + '{"event": "Evalu')  # torn
        s = summarize_run(run_dir)
        assert s.status == "interrupted"
        assert s.best_f1 == top
        if top is not None:
            assert s.best_generation == f1s.index(top) + 1  # the first to reach it
        # Fresh, without the cache, the same answer.
        run_catalog._best_cache.clear()
        assert summarize_run(run_dir).best_f1 == top
    finally:
        run_catalog.CHUNK_BYTES = 1 << 20


# ------------------------------------------------------------------ the list
def _fake_run(root: Path, name: str, mtime: float) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "settings.toml").write_text('[run]\nschema = "MILe"\n')
    (run_dir / "metrics.jsonl").write_text(json.dumps(
        {"event": "RunEnded", "status": "finished", "global_step": 3, "elapsed_s": 1.0,
         "best": None}) + "\n")
    for p in run_dir.iterdir():
        os.utime(p, (mtime, mtime))
    return run_dir


def test_list_runs_newest_first_over_roots(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    old = _fake_run(a, "old", 1_000_000)
    new = _fake_run(a, "new", 3_000_000)
    mid = _fake_run(b, "mid", 2_000_000)
    (a / "not-a-run").mkdir()
    (a / "stray.txt").write_text("x")
    runs = list_runs([a, mid, a / "missing", new])  # a run folder as a root counts, once
    assert [r.path for r in runs] == [new, mid, old]
    assert all(r.status == "finished" for r in runs)
    assert newest_live_run([a, b]) is None
    assert list_runs([]) == []


# ------------------------------------------------------------------ paused
def _trainer_records(actions: list[str], padding: int) -> tuple[list[dict[str, Any]], bool]:
    """The records a trainer writes for `actions`, as it would (no step while paused),
    and whether it is paused at the end: the plain replay of every record."""
    records: list[dict[str, Any]] = []
    paused, step = False, 0
    for action in actions:
        if action == "step":
            if paused:
                continue  # a paused trainer takes no step
            step += 1
            records.append(_step(step, padding))
        elif action in ("Paused", "Resumed") and (action == "Paused") != paused:
            paused = action == "Paused"
            records.append({"event": action, "time": 1.0, "global_step": step})
        elif action == "RunStarted":
            paused = False
            records.append({"event": "RunStarted", "time": 1.0, "run_dir": "r",
                            "global_step": step, "total_steps": 99})
        elif action in ("save", "pause", "resume"):  # steered, saved: no change of state
            records.append({"event": "Steered", "time": 1.0, "request": action,
                            "global_step": step})
            records.append({"event": "CheckpointSaved", "time": 1.0, "path": "x.pt",
                            "generation": 1, "phase": "interactive", "global_step": step,
                            "reason": "request", "note": "y" * padding})
    return records, paused


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    actions=st.lists(st.sampled_from(["step", "step", "step", "Paused", "Resumed",
                                      "RunStarted", "save", "pause"]), max_size=40),
    padding=st.integers(0, 3000),
)
def test_a_live_run_is_paused_when_its_newest_pause_is_not_followed_by_a_resume(
        tmp_path_factory: pytest.TempPathFactory, actions: list[str], padding: int) -> None:
    # Long records push a pause out of the first tail read: the catalog must find it
    # anyway, or know it is older than a step (then a resume came since).
    run_dir = tmp_path_factory.mktemp("paused")
    records, paused = _trainer_records(actions, padding)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    lock = hold_active(run_dir)
    try:
        s = summarize_run(run_dir)
        assert s.status == "running" and s.paused == paused
    finally:
        if lock is not None:
            lock.close()
    assert not summarize_run(run_dir).paused  # a run no one trains is not paused


# ------------------------------------------------------------------ the saves of a summary
def test_a_summary_reads_its_saves_only_when_asked_and_as_the_files_confirm(
    tmp_path: Path,
) -> None:
    run_dir = make_run(tmp_path, [0.2, 0.5, None])
    recorded = read_records(run_dir)
    cut = recorded[1]  # the best save, cut to nothing by a full disk
    (run_dir / cut.file).write_bytes(b"")
    (run_dir / "foreign.pt").write_bytes(b"not a checkpoint")
    (run_dir / ".tmp-step-00000099-stop.pt.7").write_bytes(b"half")  # still being written
    summary = summarize_run(run_dir)
    assert "_saves" not in vars(summary)  # nothing read yet
    assert [r.file for r in summary.records] == [r.file for r in recorded if r != cut]
    assert summary.unreadable == sorted([cut.file, "foreign.pt"])
    assert summary.newest == recorded[2] and summary.best == recorded[0]
    assert summary.last_save_time == recorded[2].time
    assert not summary.active


def test_a_folder_of_checkpoints_alone_is_a_run_folder(tmp_path: Path) -> None:
    loose = tmp_path / "copied"
    loose.mkdir()
    (loose / "step-00000005-stop.pt").write_bytes(b"x")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a run")
    assert run_catalog.is_run_folder(loose) and not run_catalog.is_run_folder(tmp_path / "notes")
    assert [r.name for r in list_runs([tmp_path])] == ["copied"]
    (summary,) = list_runs([tmp_path])
    assert summary.records == [] and summary.unreadable == ["step-00000005-stop.pt"]


LAZY = """
import json, sys
from mile_engine.runstore.catalog import summarize_run
s = summarize_run(sys.argv[1])
before = "torch" in sys.modules
n = len(s.records)
print(json.dumps([before, "torch" in sys.modules, n]))
"""


def test_summaries_load_torch_only_for_their_saves(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [0.3])
    done = subprocess.run([sys.executable, "-c", LAZY, str(run_dir)], capture_output=True,
                          text=True, cwd=REPO, timeout=600)  # a hang guard only
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [False, True, 1]
