"""The Runs screen groups a sweep's trials: the filter word `sweep:NAME`."""

from __future__ import annotations

import json
from pathlib import Path

from mile_engine.runstore.catalog import list_runs
from mile_tui.screens.runs import matches, sweep_words


def _run(root: Path, name: str, sweep: str | None, trial: int = 0) -> None:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "settings.toml").write_text('[run]\nschema = "MILe"\n')
    if sweep is not None:
        (run_dir / "sweep.json").write_text(json.dumps({"sweep": sweep, "trial": trial}))


def test_the_filter_word_keeps_one_sweeps_trials(tmp_path: Path) -> None:
    _run(tmp_path, "r1", "alpha", 0)
    _run(tmp_path, "r2", "alpha", 1)
    _run(tmp_path, "r3", "beta", 0)
    _run(tmp_path, "r4", None)
    runs = list_runs([tmp_path])

    def kept(query: str) -> list[str]:
        return sorted(r.name for r in runs if matches(r, query))

    assert kept("sweep:alpha") == ["r1", "r2"]
    assert kept("sweep:beta") == ["r3"]
    assert kept("sweep:") == ["r1", "r2", "r3"]
    assert kept("sweep:alpha trial:1") == ["r2"]
    assert kept("") == ["r1", "r2", "r3", "r4"]
    assert {r.name: sweep_words(r) for r in runs}["r4"] == ""
