"""TensorBoard and CSV export, and the live TensorBoard sink, read back with TensorBoard's
own EventAccumulator and the csv module, against the records a tiny real run wrote."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mile_engine import events as ev
from mile_engine.config.schema import Settings
from mile_engine.control import Control
from mile_engine.reports.export import (
    TENSORBOARD_DIR,
    export_csv,
    export_tensorboard,
    record_scalars,
    run_scalars,
)
from mile_engine.runstore.records import read_metrics
from mile_engine.session import open_run
from tests.helpers.settings import tiny

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

# tiny(): 2 generations of k_t 3 + k_s 2 steps, a record per step: 10 steps; the
# generation checkpoints are at steps 5 and 10.
TOTAL = 10


class StopAt:
    """A sink that stops the run after global step `step`."""

    def __init__(self, control: Control, step: int) -> None:
        self.control, self.step = control, step

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.StepLogged) and event.global_step == self.step:
            self.control.stop()


def _run(settings: Settings, stop_at: int | None = None, resume: Path | None = None) -> Path:
    control = Control()
    sinks = [StopAt(control, stop_at)] if stop_at is not None else []
    trainer = open_run(settings, sinks, control, resume=resume)
    trainer.train()  # its checkpointer lets the folder go at the run's end
    return Path(trainer.run_dir)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole run in one go."""
    root = tmp_path_factory.mktemp("straight")
    return _run(tiny(checkpoint_path=str(root)))


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run with the live sink on, stopped after step 7 (a save at 7), then resumed
    from the save of step 5: steps 6 and 7 are recorded twice, the second time after a
    `RunStarted` at step 5, as they are for a run killed between two saves."""
    root = tmp_path_factory.mktemp("resumed")
    settings = tiny(checkpoint_path=str(root), tensorboard=True)
    run_dir = _run(settings, stop_at=7)
    return _run(settings, resume=run_dir / "step-00000005-generation.pt")


def _accumulator(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _losses(run_dir: Path) -> dict[int, float]:
    """The loss of each step, straight from the records (a run without a resume)."""
    return {r["global_step"]: r["loss"] for r in read_metrics(run_dir)
            if r["event"] == "StepLogged"}


def test_the_resumed_run_records_steps_twice(resumed: Path) -> None:
    # The premise of the continuity tests below.
    steps = [r["global_step"] for r in read_metrics(resumed) if r["event"] == "StepLogged"]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 6, 7, 8, 9, 10]


def test_tensorboard_export_holds_every_record(straight: Path, tmp_path: Path) -> None:
    (folder,) = export_tensorboard([straight], tmp_path / "tb")
    acc = _accumulator(folder)
    records = read_metrics(straight)
    # Every loss, lr and throughput at its global step.
    for key, tag in (("loss", "train/loss"), ("lr", "train/lr"),
                     ("images_per_s", "train/images_per_s")):
        want = [(r["global_step"], r[key]) for r in records if r["event"] == "StepLogged"]
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)
    # Every evaluation metric at rho and at each swept threshold, at the generation's step.
    evaluations = [r for r in records if r["event"] == "Evaluated"]
    assert len(evaluations) == 2
    for name, value in evaluations[-1]["metrics"].items():
        if name != "rho":
            assert acc.Scalars(f"eval/{name}")[-1].value == pytest.approx(value, rel=1e-6)
    for threshold, swept in evaluations[0]["sweep"].items():
        for name, value in swept.items():
            (first, _) = acc.Scalars(f"eval_rho{threshold}/{name}")
            assert (first.step, first.value) == (evaluations[0]["global_step"],
                                                 pytest.approx(value, rel=1e-6))
    pseudo = [(r["global_step"], r["labels_per_image"]) for r in records
              if r["event"] == "PseudoLabelStats"]
    assert [(e.step, e.value) for e in acc.Scalars("pseudo/labels_per_image")] == [
        (s, pytest.approx(v, rel=1e-6)) for s, v in pseudo]
    assert [e.step for e in acc.Scalars("system/cpu_percent")] == list(range(1, TOTAL + 1))


def test_tensorboard_export_holds_the_settings_as_hparams(straight: Path,
                                                          tmp_path: Path) -> None:
    (folder,) = export_tensorboard([straight], tmp_path / "tb")
    content = _accumulator(folder).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["k_t"].number_value == 3
    assert start.hparams["schema"].string_value == "MILe"
    assert start.hparams["gt_or"].bool_value is False
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]).experiment
    assert "eval/real_f1" in [m.name.tag for m in experiment.metric_infos]


def test_a_resumed_run_exports_one_continuous_curve(straight: Path, resumed: Path,
                                                    tmp_path: Path) -> None:
    # The oracle: the run done in one go. Resume is exact, so the resumed run's curve
    # must be that one, each step once, in order.
    want = _losses(straight)
    (folder,) = export_tensorboard([resumed], tmp_path / "tb")
    got = [(e.step, e.value) for e in _accumulator(folder).Scalars("train/loss")]
    assert [s for s, _ in got] == list(range(1, TOTAL + 1))
    assert [v for _, v in got] == pytest.approx([want[s] for s in range(1, TOTAL + 1)],
                                                rel=1e-6)


def test_the_live_sink_draws_the_same_continuous_curve(straight: Path,
                                                       resumed: Path) -> None:
    acc = _accumulator(resumed / TENSORBOARD_DIR)
    want = _losses(straight)
    got = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert [s for s, _ in got] == list(range(1, TOTAL + 1))
    assert [v for _, v in got] == pytest.approx([want[s] for s in range(1, TOTAL + 1)],
                                                rel=1e-6)
    f1 = [r["metrics"]["real_f1"] for r in read_metrics(straight) if r["event"] == "Evaluated"]
    assert [e.value for e in acc.Scalars("eval/real_f1")] == pytest.approx(f1, rel=1e-6)
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")


def test_csv_is_one_tidy_row_per_run_step_and_metric(straight: Path, resumed: Path,
                                                     tmp_path: Path) -> None:
    path = export_csv([straight, resumed], tmp_path / "csv")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["run", "step", "metric", "value", "generation", "phase"]
    keys = [(r["run"], int(r["step"]), r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))
    # Both runs hold the same losses (the resumed one without its superseded steps).
    for run_dir in (straight, resumed):
        losses = {int(r["step"]): float(r["value"]) for r in rows
                  if r["run"] == run_dir.name and r["metric"] == "train/loss"}
        assert losses == pytest.approx(_losses(straight))
    f1 = [(int(r["step"]), float(r["value"]), r["generation"]) for r in rows
          if r["run"] == straight.name and r["metric"] == "eval/real_f1"]
    evaluations = [r for r in read_metrics(straight) if r["event"] == "Evaluated"]
    assert [(s, g) for s, _, g in f1] == [(r["global_step"], str(r["generation"]))
                                          for r in evaluations]
    assert [v for _, v, _ in f1] == pytest.approx([r["metrics"]["real_f1"]
                                                   for r in evaluations])


def test_two_runs_with_one_name_stay_apart(straight: Path, tmp_path: Path) -> None:
    twin = tmp_path / "elsewhere" / straight.name
    twin.mkdir(parents=True)
    (twin / "metrics.jsonl").write_text(
        (straight / "metrics.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    folders = export_tensorboard([straight, twin], tmp_path / "tb")
    assert len(set(folders)) == 2


def _record(kind: str, step: int, **fields: Any) -> dict[str, Any]:
    return {"event": kind, "global_step": step, **fields}


def test_a_later_start_supersedes_the_steps_after_it() -> None:
    # Hand-made stream: steps 1-6, a resume from step 2, then steps 3-4 again with new
    # values and a stop: steps 5 and 6 of the first attempt belong to no curve any more.
    records = [_record("RunStarted", 0)]
    records += [_record("StepLogged", s, loss=float(s), lr=0.1, images_per_s=1.0,
                        phase="interactive", generation=1) for s in range(1, 7)]
    records += [_record("RunStarted", 2)]
    records += [_record("StepLogged", s, loss=10.0 * s, lr=0.1, images_per_s=1.0,
                        phase="interactive", generation=1) for s in (3, 4)]
    loss = [(s.step, s.value) for s in run_scalars(records) if s.tag == "train/loss"]
    assert loss == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]


def test_values_json_could_not_hold_are_left_out() -> None:
    # NaN is written as null; a GPU-less run has no GPU figures.
    record = _record("SystemStats", 3, cpu_percent=None, rss_bytes=5,
                     gpu_util_percent=None, gpu_memory_bytes=None)
    assert [(s.tag, s.value) for s in record_scalars(record)] == [("system/rss_bytes", 5.0)]
    assert record_scalars({"event": "StepLogged", "loss": 1.0}) == []


def test_every_event_field_of_a_step_record_is_exported() -> None:
    # A guard against a renamed field silently dropping a curve.
    step = ev.StepLogged(generation=1, phase="imitation", step=1, steps=2, global_step=4,
                         total_steps=10, loss=0.5, lr=0.01, images_per_s=9.0, elapsed_s=1.0)
    record = json.loads(json.dumps(dataclasses.asdict(step) | {"event": "StepLogged"}))
    got = {s.tag: s.value for s in record_scalars(record)}
    assert got == {"train/loss": 0.5, "train/loss_imitation": 0.5, "train/lr": 0.01,
                   "train/images_per_s": 9.0}
    assert not any(math.isnan(v) for v in got.values())


@st.composite
def _attempts(draw: st.DrawFn) -> list[tuple[int, list[int]]]:
    """Attempts of one run: each starts from a step the run had reached (a save) and
    records some steps after it, each with a value that names the attempt."""
    attempts: list[tuple[int, list[int]]] = []
    reached = 0
    for _ in range(draw(st.integers(1, 5))):
        start = draw(st.integers(0, reached))
        length = draw(st.integers(0, 6))
        steps = list(range(start + 1, start + length + 1))
        attempts.append((start, steps))
        reached = max(reached, start + length)
    return attempts


@settings(max_examples=200, deadline=None)
@given(_attempts())
def test_every_curve_is_what_the_newest_attempt_recorded(
        attempts: list[tuple[int, list[int]]]) -> None:
    records: list[dict[str, Any]] = []
    for number, (start, steps) in enumerate(attempts):
        records.append(_record("RunStarted", start))
        records += [_record("StepLogged", s, loss=float(100 * number + s), lr=0.1,
                            images_per_s=1.0, phase="interactive", generation=1)
                    for s in steps]
    # The model: a list that each attempt cuts back to its start, then extends.
    curve: list[tuple[int, float]] = []
    for number, (start, steps) in enumerate(attempts):
        curve = [(s, v) for s, v in curve if s <= start]
        curve += [(s, float(100 * number + s)) for s in steps]
    got = [(s.step, s.value) for s in run_scalars(records) if s.tag == "train/loss"]
    assert got == curve
    assert all(a < b for (a, _), (b, _) in zip(got, got[1:], strict=False))
