"""mile_engine.reports.comparison against hand-written histories and hand-computed expectations."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mile_engine import events as ev
from mile_engine.reports.comparison import (
    RunData,
    best_metrics,
    compare,
    current_events,
    differing_settings,
    loss_series,
    pseudo_quality,
    thin,
    unique_names,
)


def started(global_step: int = 0, total: int = 20) -> ev.RunStarted:
    return ev.RunStarted("runs/x", {}, "cpu", "fp32", 1000, total, global_step, {},
                         resumed_from=None if global_step == 0 else "runs/x/save.pt")


def step(global_step: int, loss: float, total: int = 20) -> ev.StepLogged:
    return ev.StepLogged(1, "interactive", global_step, total, global_step, total, loss, 0.1,
                         100.0, float(global_step))


def evaluated(generation: int, global_step: int, f1: float | None, coverage: float = 1.0,
              top1: float = 0.5) -> ev.Evaluated:
    metrics: dict[str, float] = {"top1": top1, "real_accuracy": top1 + 0.1,
                                 "real_precision": top1 + 0.2, "real_recall": top1 + 0.3,
                                 "coverage": coverage, "map": top1 - 0.2}
    if f1 is not None:
        metrics["real_f1"] = f1
    return ev.Evaluated(generation, global_step, metrics, False, 100.0)


RUN_A: list[ev.Event] = [started(), step(5, 2.0), step(10, 1.5), evaluated(1, 10, 0.5, 1.5, 0.6),
         step(15, 1.2), step(20, 1.0), evaluated(2, 20, 0.62, 2.0, 0.65),
         ev.RunEnded("finished", 20, 9.0, None)]

# Killed at step 25, resumed from the save at step 20: the records at 25 written before
# the kill are replaced by the resumed session's.
RUN_RESUMED: list[ev.Event] = [started(total=30), step(5, 3.0, 30), step(10, 2.5, 30),
               evaluated(1, 10, 0.3, 1.2), step(15, 2.2, 30), step(20, 2.0, 30),
               evaluated(2, 20, 0.5, 1.8), step(25, 9.9, 30),
               started(20, 30), step(25, 1.9, 30), step(30, 1.7, 30),
               evaluated(3, 30, 0.45, 2.2), ev.RunEnded("finished", 30, 20.0, None)]

NOT_EVALUATED: list[ev.Event] = [started(), step(1, 2.4), step(2, 2.3)]


def test_finished_run_series_and_best() -> None:
    result = compare([RunData("a", RUN_A, {})])
    assert (result.f1[0].xs, result.f1[0].ys) == ([1.0, 2.0], [0.5, 0.62])
    assert (result.coverage[0].xs, result.coverage[0].ys) == ([1.0, 2.0], [1.5, 2.0])
    assert (result.loss[0].xs, result.loss[0].ys) == ([5.0, 10.0, 15.0, 20.0],
                                                      [2.0, 1.5, 1.2, 1.0])
    best = result.best[0]
    assert (best.best_f1, best.best_generation) == (0.62, 2)
    assert best.top1 == 0.65
    assert best.real_accuracy == pytest.approx(0.75)
    assert best.precision == pytest.approx(0.85)
    assert best.recall == pytest.approx(0.95)
    assert best.map == pytest.approx(0.45)  # the best generation's (by F1), not the last
    assert (best.evaluations, best.global_step, best.total_steps) == (2, 20, 20)


def test_run_without_evaluation() -> None:
    result = compare([RunData("a", RUN_A, {}), RunData("new", NOT_EVALUATED, {})])
    assert result.f1[1].xs == [] and result.coverage[1].ys == []
    assert result.loss[1].ys == [2.4, 2.3]
    best = result.best[1]
    assert best.best_f1 is None and best.best_generation is None
    assert best.top1 is None and best.recall is None
    assert (best.evaluations, best.global_step, best.total_steps) == (0, 2, 20)


def test_resumed_run_replaces_the_rewound_records() -> None:
    result = compare([RunData("r", RUN_RESUMED, {})])
    # 25 appears once, with the resumed session's loss (1.9, not 9.9).
    assert result.loss[0].xs == [5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
    assert result.loss[0].ys == [3.0, 2.5, 2.2, 2.0, 1.9, 1.7]
    assert result.f1[0].xs == [1.0, 2.0, 3.0]
    assert result.f1[0].ys == [0.3, 0.5, 0.45]
    best = result.best[0]
    assert (best.best_f1, best.best_generation, best.global_step, best.total_steps) == (
        0.5, 2, 30, 30)
    assert sum(isinstance(e, ev.RunStarted) for e in current_events(RUN_RESUMED)) == 2


def test_resume_from_an_older_save_drops_its_later_evaluation() -> None:
    # Generation 2 scored 0.9, but the run went back to the save at step 10 and its
    # generation 2 now scores 0.4: the 0.9 is no longer this run's.
    events: list[ev.Event] = [started(), step(10, 2.0), evaluated(1, 10, 0.3), step(20, 1.0),
              evaluated(2, 20, 0.9), started(10), step(20, 1.4), evaluated(2, 20, 0.4)]
    best = best_metrics("r", events)
    assert (best.best_f1, best.best_generation, best.evaluations) == (0.4, 2, 2)
    series = loss_series("r", events)
    assert (series.xs, series.ys) == ([10.0, 20.0], [2.0, 1.4])


def test_tie_takes_the_earliest_and_missing_f1_is_skipped() -> None:
    events: list[ev.Event] = [started(), evaluated(1, 10, 0.4, 1.0), evaluated(2, 20, 0.4, 1.5),
              evaluated(3, 30, None, 2.5)]
    result = compare([RunData("t", events, {})])
    assert result.best[0].best_generation == 1
    assert result.f1[0].xs == [1.0, 2.0]  # generation 3 has no F1 (NaN on disk)
    assert result.coverage[0].xs == [1.0, 2.0, 3.0]


def test_nan_loss_is_left_out() -> None:
    events: list[ev.Event] = [started(), step(1, 2.0), step(2, math.nan), step(3, 1.0)]
    assert loss_series("n", events).xs == [1.0, 3.0]


def test_differing_settings_only_and_missing_keys() -> None:
    a = {"schema": "MILe", "rho": 0.25, "k_t": 3, "amp": True}
    b = {"schema": "softmax", "rho": 0.25, "k_t": 3, "amp": False}
    c = {"schema": "MILe", "rho": 0.25, "k_t": 5, "seed": 1}
    assert differing_settings([a, b, c]) == [
        ("schema", ["MILe", "softmax", "MILe"]),
        ("k_t", ["3", "3", "5"]),
        ("amp", ["true", "false", "–"]),
        ("seed", ["–", "–", "1"]),
    ]
    assert differing_settings([a, dict(a)]) == []


def test_unequal_runs_keep_their_order_and_names() -> None:
    runs = [RunData("x", RUN_RESUMED, {"k_t": 3}), RunData("x", NOT_EVALUATED, {"k_t": 4}),
            RunData("a", RUN_A, {"k_t": 3})]
    result = compare(runs)
    assert result.names == ["x", "x (2)", "a"]
    assert [s.name for s in result.loss] == result.names
    assert [len(s.xs) for s in result.f1] == [3, 0, 2]
    assert result.differing == [("k_t", ["3", "4", "3"])]
    assert unique_names(["a", "a", "a"]) == ["a", "a (2)", "a (3)"]


def test_long_loss_curves_are_averaged_in_buckets() -> None:
    xs = [float(x) for x in range(1, 11)]
    assert thin(xs, xs, 5) == ([1.5, 3.5, 5.5, 7.5, 9.5], [1.5, 3.5, 5.5, 7.5, 9.5])
    # ceil(10 / 4) = 3 a bucket: [1,2,3] [4,5,6] [7,8,9] [10]
    assert thin(xs, xs, 4)[1] == [2.0, 5.0, 8.0, 10.0]
    assert thin(xs, xs, 10) == (xs, xs)
    series = loss_series("l", [step(i, float(i)) for i in range(1, 11)], limit=2)
    assert (series.xs, series.ys) == ([3.0, 8.0], [3.0, 8.0])


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=300), st.integers(1, 50))
def test_thin_bounds(ys: list[float], limit: int) -> None:
    xs = [float(i) for i in range(len(ys))]
    out_x, out_y = thin(xs, ys, limit)
    assert 1 <= len(out_y) <= limit
    assert len(out_x) == len(out_y)
    size = math.ceil(len(ys) / limit) if len(ys) > limit else 1
    # Each output point is the mean of its bucket (a plain re-derivation, bucket by bucket).
    for i, y in enumerate(out_y):
        bucket = ys[i * size:(i + 1) * size]
        assert y == pytest.approx(sum(bucket) / len(bucket), abs=1e-6)
        assert min(bucket) - 1e-6 <= y <= max(bucket) + 1e-6
    assert out_x == sorted(out_x)


def pseudo(generation: int, global_step: int, precision: float | None,
           recall: float | None, rejected_true: float | None = None) -> ev.PseudoLabelStats:
    return ev.PseudoLabelStats(generation, 1, global_step, 1.0, 1.0, precision, recall,
                               None if rejected_true is None else 0.5, rejected_true)


@given(st.lists(st.tuples(st.integers(1, 4),
                          st.none() | st.floats(0, 1), st.none() | st.floats(0, 1),
                          st.none() | st.floats(0, 1)), max_size=12))
def test_pseudo_quality_is_each_generations_mean(
        records: list[tuple[int, float | None, float | None, float | None]]) -> None:
    events: list[ev.Event] = [started()]
    events += [pseudo(g, i + 1, p, r, t) for i, (g, p, r, t) in enumerate(records)]
    expected = []
    for g in sorted({g for g, *_ in records}):
        columns = list(zip(*[values for h, *values in records if h == g], strict=True))
        means = [sum(v for v in c if v is not None) / n if (n := sum(v is not None for v in c))
                 else None for c in columns]
        if any(m is not None for m in means):
            expected.append((g, *means))
    got = [(q.generation, q.precision, q.recall, q.rejected_true)
           for q in pseudo_quality(events)]
    assert [row[0] for row in got] == [row[0] for row in expected]
    for row_got, row_expected in zip(got, expected, strict=True):
        for a, b in zip(row_got[1:], row_expected[1:], strict=True):
            assert (a is None and b is None) or (
                a is not None and b is not None and math.isclose(a, b, abs_tol=1e-12))
    assert compare([RunData("a", events, {})]).pseudo == [pseudo_quality(events)]
