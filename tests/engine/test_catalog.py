"""The runs list over hostile run folders: records holding values JSON should not
(NaN, infinity, numbers too long for a float) and metrics files that are not files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mile_engine.runstore.catalog import list_runs
from tests.helpers.hostile import call_unblocked, make_fifo

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
