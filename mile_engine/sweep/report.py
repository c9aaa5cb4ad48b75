"""What a sweep has found: its trials best first, parameter importances, and the best
settings as a `mile.toml` fragment."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mile_engine.config.schema import FIELDS, GROUPS
from mile_engine.sweep.study import SweepSpec, journal_path, load_spec, study_of, worker_alive


@dataclass(frozen=True)
class TrialRow:
    """One trial as `sweep show` lists it."""

    number: int
    state: str  # complete, pruned, running, failed, waiting
    value: float | None
    params: dict[str, Any]
    run_dir: str | None
    note: str = ""


@dataclass(frozen=True)
class SweepReport:
    """A sweep's state: its trials best first, the parameters' importances, and the
    best trial's settings as a `mile.toml` fragment."""

    spec: SweepSpec
    trials: list[TrialRow]
    importances: dict[str, float] | None
    importance_note: str
    best: TrialRow | None
    fragment: str


def _row(trial: Any, workers: Path) -> TrialRow:
    state = trial.state.name.lower()
    note = str(trial.user_attrs.get("lost") or trial.user_attrs.get("error") or "")
    worker = trial.user_attrs.get("worker")
    if state == "running" and isinstance(worker, str) and not worker_alive(workers, worker):
        note = "its worker is gone: failed and queued again when a worker next draws"
    value = trial.value if trial.value is not None else (
        max(trial.intermediate_values.values()) if trial.intermediate_values else None)
    return TrialRow(trial.number, state, value, dict(trial.params),
                    trial.user_attrs.get("run_dir"), note)


def toml_fragment(params: dict[str, Any], header: Sequence[str] = ()) -> str:
    """Settings as a `mile.toml` fragment: each key in its table, tables in file order."""
    import tomlkit

    lines = [f"# {h}" for h in header]
    for group in GROUPS:
        keys = [k for k in FIELDS if k in params and FIELDS[k].metadata["group"] == group]
        if keys:
            lines.append(f"[{group}]")
            lines += [f"{k} = {tomlkit.item(params[k]).as_string()}" for k in keys]
    return "\n".join(lines) + "\n"


def sweep_report(root: Path, name: str, top: int = 10) -> SweepReport:
    """What sweep `name` in `root` has found so far.

    Raises:
        SweepError: no such sweep.
    """
    import optuna

    spec = load_spec(root, name)
    study = study_of(root, name)
    trials = study.get_trials(deepcopy=False)
    workers = journal_path(root, name).with_suffix(".workers")
    rows = sorted((_row(t, workers) for t in trials if t.state.name != "WAITING"),
                  key=lambda r: (r.state != "complete", -(r.value if r.value is not None
                                                          else -math.inf), r.number))
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    importances: dict[str, float] | None = None
    note = ""
    if len(complete) < 2:
        note = f"importances need 2 or more completed trials ({len(complete)} so far)"
    else:
        try:
            importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError) as exc:
            note = f"importances cannot be computed yet: {exc}"
    best = rows[0] if rows and rows[0].state == "complete" else None
    fragment = ""
    if best is not None:
        metric = next((t.user_attrs.get("metric") for t in complete
                       if t.number == best.number), None) or spec.metric
        fragment = toml_fragment(best.params, [
            f"best of sweep {name}: trial {best.number}, {metric} {best.value:.4f}"
            + (f", run {best.run_dir}" if best.run_dir else "")])
    return SweepReport(spec, rows[:top], importances, note, best, fragment)
