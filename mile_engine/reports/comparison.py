"""Several runs side by side: per-run series and tables from their event histories.

The compare screen draws what this module computes; nothing here knows about a UI. A
run is its history (the events of its metrics.jsonl, oldest first) and its settings.

A resumed run holds several sessions, each opened by a `RunStarted` record. A session
that resumed from an earlier save (its `global_step` is behind what the file already
holds) replaces everything past that step: those records belong to training that the
resume rewound, so the series show the history of the state the run has now.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mile_engine import events as ev

MISSING = "–"
"""How a setting that a run does not have reads in the settings table."""

LOSS_POINTS = 1000
"""At most this many points per loss curve: a long run's records are averaged in
buckets, so a chart of a 100 MB metrics file stays quick to draw."""


@dataclass(frozen=True)
class RunData:
    """One run to compare: its display name, its events and its flat settings."""

    name: str
    events: Sequence[ev.Event]
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class Series:
    """One run's curve: `xs` (generation or global step) against `ys`."""

    name: str
    xs: list[float]
    ys: list[float]


@dataclass(frozen=True)
class BestMetrics:
    """A run's best evaluation by ReaL F1 (None before its first one) and its progress."""

    name: str
    best_f1: float | None
    best_generation: int | None
    top1: float | None
    real_accuracy: float | None
    precision: float | None
    recall: float | None
    evaluations: int
    global_step: int
    total_steps: int
    map: float | None = None
    """mAP at that generation (None before the first evaluation, or in runs recorded
    before mAP was computed)."""


@dataclass(frozen=True)
class Comparison:
    """Everything the compare screen shows, one entry per run in the order given."""

    names: list[str]
    f1: list[Series]
    coverage: list[Series]
    loss: list[Series]
    best: list[BestMetrics]
    differing: list[tuple[str, list[str]]]
    """Each setting whose value is not the same in every run, with each run's value."""
    pseudo: list[list[PseudoQuality]] = field(default_factory=list)
    """Per run, per generation: its training targets against the true sets (empty for
    runs whose training data has no true sets, or whose schema hands no targets)."""


@dataclass(frozen=True)
class PseudoQuality:
    """One generation's pseudo-label records, averaged: precision and recall of the
    targets against the true sets, and (LL) the share of rejected labels that were true."""

    generation: int
    precision: float | None
    recall: float | None
    rejected_true: float | None


def pseudo_quality(events: Iterable[ev.Event]) -> list[PseudoQuality]:
    """Each generation's mean precision, recall and rejected-true share (None where none of
    its records has one); generations without any of them are left out."""
    return _pseudo_quality(current_events(events))


def _pseudo_quality(history: Iterable[ev.Event]) -> list[PseudoQuality]:
    fields = ("precision", "recall", "rejected_true")
    sums: dict[int, dict[str, list[float]]] = {}
    for event in history:
        if isinstance(event, ev.PseudoLabelStats):
            for name in fields:
                value = _number(getattr(event, name, None))
                if value is not None:
                    sums.setdefault(event.generation, {}).setdefault(name, []).append(value)
    return [
        PseudoQuality(g, *(sum(v) / len(v) if (v := sums[g].get(n)) else None for n in fields))
        for g in sorted(sums)
    ]


def _step_of(event: ev.Event) -> int | None:
    step = getattr(event, "global_step", None)
    return step if isinstance(step, int) else None


def current_events(events: Iterable[ev.Event]) -> list[ev.Event]:
    """The events of the run's present history: a session that resumed at step `g`
    drops the records past `g` that earlier sessions wrote (the resume rewound them)."""
    kept: list[ev.Event] = []
    for event in events:
        if isinstance(event, ev.RunStarted) and kept:
            start = event.global_step
            kept = [e for e in kept if (s := _step_of(e)) is None or s <= start]
        kept.append(event)
    return kept


def _number(value: Any) -> float | None:
    """A finite float, else None (metrics.jsonl writes NaN as null)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def evaluations(events: Iterable[ev.Event]) -> list[ev.Evaluated]:
    """The run's evaluations, one per generation (the latest wins), by generation."""
    return _evaluations(current_events(events))


def _evaluations(history: Iterable[ev.Event]) -> list[ev.Evaluated]:
    by_generation: dict[int, ev.Evaluated] = {}
    for event in history:
        if isinstance(event, ev.Evaluated):
            by_generation[event.generation] = event
    return [by_generation[g] for g in sorted(by_generation)]


def generation_series(name: str, events: Iterable[ev.Event], metric: str) -> Series:
    """`metric` (a key of `Evaluated.metrics`) per generation; generations without a
    finite value are left out."""
    return _generation_series(name, evaluations(events), metric)


def _generation_series(name: str, scored: Iterable[ev.Evaluated], metric: str) -> Series:
    xs: list[float] = []
    ys: list[float] = []
    for evaluation in scored:
        value = _number(evaluation.metrics.get(metric))
        if value is not None:
            xs.append(float(evaluation.generation))
            ys.append(value)
    return Series(name, xs, ys)


def thin(xs: Sequence[float], ys: Sequence[float],
         limit: int) -> tuple[list[float], list[float]]:
    """At most `limit` points: consecutive points averaged in buckets of equal size
    (the last one may be smaller), so the curve's shape survives."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if len(xs) <= limit:
        return list(xs), list(ys)
    size = math.ceil(len(xs) / limit)
    out_x, out_y = [], []
    for start in range(0, len(xs), size):
        bucket_x, bucket_y = xs[start:start + size], ys[start:start + size]
        out_x.append(sum(bucket_x) / len(bucket_x))
        out_y.append(sum(bucket_y) / len(bucket_y))
    return out_x, out_y


def loss_series(name: str, events: Iterable[ev.Event], limit: int = LOSS_POINTS) -> Series:
    """Training loss against the global step (every progress record, both phases)."""
    return _loss_series(name, current_events(events), limit)


def _loss_series(name: str, history: Iterable[ev.Event], limit: int) -> Series:
    xs: list[float] = []
    ys: list[float] = []
    for event in history:
        if isinstance(event, ev.StepLogged) and (loss := _number(event.loss)) is not None:
            xs.append(float(event.global_step))
            ys.append(loss)
    return Series(name, *thin(xs, ys, limit))


def best_metrics(name: str, events: Iterable[ev.Event]) -> BestMetrics:
    """The run's best generation by ReaL F1 (the earliest on a tie), its other metrics
    there, and how far the run has come."""
    history = current_events(events)
    return _best_metrics(name, history, _evaluations(history))


def _best_metrics(name: str, history: Sequence[ev.Event],
                  scored: Sequence[ev.Evaluated]) -> BestMetrics:
    best: ev.Evaluated | None = None
    best_f1 = -math.inf
    for evaluation in scored:
        f1 = _number(evaluation.metrics.get("real_f1"))
        if f1 is not None and f1 > best_f1:
            best, best_f1 = evaluation, f1
    steps = [s for e in history if (s := _step_of(e)) is not None]
    totals = [e.total_steps for e in history if isinstance(e, ev.RunStarted | ev.StepLogged)]
    metric = (lambda key: _number(best.metrics.get(key))) if best else (lambda key: None)
    return BestMetrics(
        name=name,
        best_f1=best_f1 if best else None,
        best_generation=best.generation if best else None,
        top1=metric("top1"),
        real_accuracy=metric("real_accuracy"),
        precision=metric("real_precision"),
        recall=metric("real_recall"),
        evaluations=len(scored),
        global_step=max(steps, default=0),
        total_steps=totals[-1] if totals else 0,
        map=metric("map"),
    )


def format_setting(value: Any) -> str:
    """A setting's value as the settings file writes it: true/false, numbers, text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return MISSING
    return str(value)


def differing_settings(settings: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """The settings whose value is not the same in every run, in the order the runs
    list them (first run first), each with every run's value ("–" where a run lacks it)."""
    keys: dict[str, None] = {}
    for run in settings:
        keys.update(dict.fromkeys(run))
    rows = []
    for key in keys:
        values = [format_setting(run[key]) if key in run else MISSING for run in settings]
        if len(set(values)) > 1:
            rows.append((key, values))
    return rows


def unique_names(names: Sequence[str]) -> list[str]:
    """The names with a " (2)", " (3)", ... after repeats, so each run's curve has its
    own legend entry (two roots may hold folders of the same name)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def compare(runs: Sequence[RunData], loss_points: int = LOSS_POINTS) -> Comparison:
    """Every series and table of the compare screen for `runs`."""
    names = unique_names([run.name for run in runs])
    result = Comparison(names, [], [], [], [], differing_settings([r.settings for r in runs]))
    for name, run in zip(names, runs, strict=True):
        # One rewind and one pass over the evaluations a run: histories can be long.
        history = current_events(run.events)
        scored = _evaluations(history)
        result.f1.append(_generation_series(name, scored, "real_f1"))
        result.coverage.append(_generation_series(name, scored, "coverage"))
        result.loss.append(_loss_series(name, history, loss_points))
        result.best.append(_best_metrics(name, history, scored))
        result.pseudo.append(_pseudo_quality(history))
    return result
