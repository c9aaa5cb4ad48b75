"""One trial as an ordinary run: its tag file, pruning through the trainer's control,
what the study is told; and the worker loop that draws and trains trials."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mile_engine import events as ev
from mile_engine.config.schema import Settings, SettingsError
from mile_engine.config.validation import build_settings, check_checkpoint_path
from mile_engine.control import Control
from mile_engine.sweep.study import SweepSpec, WorkerLock, draw_trial

SWEEP_FILE = "sweep.json"  # in a trial's run folder: which sweep and trial it is
AUTO_METRIC = "auto"  # mAP where the evaluations have it, else ReaL F1
TrialOutcome = Literal["complete", "pruned", "failed", "stopped"]


@dataclass(frozen=True)
class TrialResult:
    """What one trial did."""

    number: int
    params: dict[str, Any]
    outcome: TrialOutcome
    value: float | None
    run_dir: str | None
    error: str | None = None
    metric: str | None = None  # the metric's name (`auto` resolved)
    # The sweep cannot go on (its metric is not evaluated): the worker stops.
    ends_worker: bool = False


class _Pruning:
    """A sink that reports each evaluation to the trial and stops a pruned run."""

    def __init__(self, trial: Any, metric: str, control: Control) -> None:
        self.trial, self.metric, self.control = trial, metric, control
        self.best: float | None = None
        self.pruned = False
        self.metric_used: str | None = None
        self.run_dir: str | None = None
        self.generations = 0
        self.missing: str | None = None

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.RunStarted):
            self.run_dir = event.run_dir
            self.generations = int(event.settings.get("epoch_num", 0))
        if not isinstance(event, ev.Evaluated):
            return
        name = self.metric
        if name == AUTO_METRIC:
            name = "map" if "map" in event.metrics else "real_f1"
        self.metric_used = name
        if name not in event.metrics:
            # Every trial would train to the end for nothing: stop at the first evaluation.
            self.missing = (f"no metric {name!r} in the evaluations (they have: "
                            f"{', '.join(sorted(event.metrics))}); pick one with --metric")
            self.control.stop()
            return
        value = event.metrics.get(name)
        if value is None or not math.isfinite(value):
            return
        self.best = value if self.best is None else max(self.best, value)
        self.trial.report(value, event.generation)
        # After the last generation there is nothing left to save by stopping.
        if event.generation < self.generations and self.trial.should_prune():
            self.pruned = True
            self.control.stop()


def _write_tag(run_dir: Path, data: dict[str, Any]) -> None:
    from mile_engine.runstore.files import atomic_write_text

    atomic_write_text(run_dir / SWEEP_FILE, json.dumps(data, indent=1) + "\n")


def read_tag(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's sweep tag (`sweep`, `trial`, `params`, `state`), or None."""
    try:
        data = json.loads((Path(run_dir) / SWEEP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_trial(trial: Any, spec: SweepSpec, base: Settings, sinks: Sequence[ev.Sink],
              control: Control) -> TrialResult:
    """Train one trial as an ordinary run and tell the study how it went."""
    from optuna.trial import TrialState

    from mile_engine.runstore.files import CheckpointError
    from mile_engine.session import open_run

    params = dict(trial.params)
    study = trial.study
    pruning = _Pruning(trial, spec.metric, control)
    tag = {"sweep": spec.name, "trial": trial.number, "params": params, "state": "running"}
    try:
        settings = build_settings(params, f"sweep {spec.name!r} trial {trial.number}", base)
        check_checkpoint_path(settings)
        trainer = open_run(settings, [*sinks, pruning], control)
    except (SettingsError, CheckpointError, OSError) as exc:
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=TrialState.FAIL)
        return TrialResult(trial.number, params, "failed", None, None, str(exc))
    run_dir = Path(trainer.run_dir)
    trial.set_user_attr("run_dir", run_dir.name)
    _write_tag(run_dir, tag)
    ended = trainer.train()
    del trainer
    result: TrialResult
    if pruning.metric_used is not None:
        trial.set_user_attr("metric", pruning.metric_used)
    if ended.status == "failed":
        trial.set_user_attr("error", ended.error or "failed")
        study.tell(trial, state=TrialState.FAIL)
        result = TrialResult(trial.number, params, "failed", pruning.best, str(run_dir),
                             ended.error)
    elif pruning.missing is not None:
        trial.set_user_attr("error", pruning.missing)
        study.tell(trial, state=TrialState.FAIL)
        result = TrialResult(trial.number, params, "failed", None, str(run_dir),
                             pruning.missing, ends_worker=True)
    elif pruning.pruned:
        study.tell(trial, state=TrialState.PRUNED)
        result = TrialResult(trial.number, params, "pruned", pruning.best, str(run_dir))
    elif ended.status == "stopped":
        # Stopped by its user (Ctrl-C, `mile-tui runs stop`): not a result; the trial is
        # queued again, as a lost one is, and this worker ends.
        trial.set_user_attr("lost", "stopped before it finished")
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(params, user_attrs={"retry_of": trial.number})
        result = TrialResult(trial.number, params, "stopped", pruning.best, str(run_dir))
    elif pruning.best is None:
        trial.set_user_attr("error", f"no evaluation gave {spec.metric}")
        study.tell(trial, state=TrialState.FAIL)
        result = TrialResult(trial.number, params, "failed", None, str(run_dir),
                             f"no evaluation gave {spec.metric}")
    else:
        study.tell(trial, pruning.best)
        result = TrialResult(trial.number, params, "complete", pruning.best, str(run_dir))
    result = dataclasses.replace(result, metric=pruning.metric_used)
    with contextlib.suppress(OSError):
        _write_tag(run_dir, {**tag, "state": result.outcome, "value": result.value,
                             "metric": result.metric})
    return result


def run_worker(
    root: Path,
    spec: SweepSpec,
    base: Settings,
    sinks: Sequence[ev.Sink] = (),
    new_control: Callable[[], Control] = Control,
    on_trial: Callable[[int, dict[str, Any]], None] | None = None,
    on_result: Callable[[TrialResult], None] | None = None,
    pruner: Any = None,
) -> list[TrialResult]:
    """Draw and train trials of the sweep until it has all of them (or a trial is stopped
    by its user, or the metric is not evaluated). Returns what this worker's trials did.

    Args:
        root: the runs folder, where the sweep's journal lives.
        spec: the sweep (`open_sweep` or `load_spec`).
        base: the settings each trial starts from (`base_settings`).
        sinks: receivers of each trial's events (a console renderer).
        new_control: makes the control object of each trial (a caller that turns
            signals into stops points its handler at the newest one).
        on_trial, on_result: told when a trial starts (number, parameters) and ends.
        pruner: an Optuna pruner (default: the median of the earlier trials at the same
            generation, once two trials have ended, from the second generation on).
    """
    import optuna

    pruner = pruner or optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    worker = WorkerLock(root, spec.name)
    results: list[TrialResult] = []
    try:
        while True:
            trial = draw_trial(root, spec, worker)
            if trial is None:
                break
            trial.study.pruner = pruner
            if on_trial is not None:
                on_trial(trial.number, dict(trial.params))
            result = run_trial(trial, spec, base, sinks, new_control())
            results.append(result)
            if on_result is not None:
                on_result(result)
            if result.outcome == "stopped" or result.ends_worker:
                break
    finally:
        worker.release()
    return results


def sweep_of(run_dir: Path) -> str | None:
    """The name of the sweep a run folder belongs to, or None (for the runs list)."""
    tag = read_tag(run_dir)
    name = tag.get("sweep") if tag else None
    return name if isinstance(name, str) else None
