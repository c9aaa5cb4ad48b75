"""Progress records: the position shown is current at every pause and stop, and at least
once per `PROGRESS_INTERVAL_S`, whatever `log_every` says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mile_engine import events as ev
from mile_engine import trainer as trainer_module
from mile_engine.control import Control
from mile_engine.data import Batch
from mile_engine.trainer import Trainer
from tests.conftest import tiny


def on_batch(trainer: Trainer, n: int, action: Callable[[], None]) -> None:
    """Call `action` when the trainer draws its `n`-th training batch (from 1)."""
    draw = trainer.source.train_batch
    drawn = 0

    def counted() -> Batch:
        nonlocal drawn
        drawn += 1
        if drawn == n:
            action()
        return draw()

    trainer.source.train_batch = counted  # type: ignore[method-assign]


def steps_logged(seen: list[ev.Event]) -> list[ev.StepLogged]:
    return [e for e in seen if isinstance(e, ev.StepLogged)]


def test_a_stop_reports_the_step_it_stopped_at(tmp_path: Path) -> None:
    # log_every far above the phase length: without the stop's own record the last
    # position shown would be the run's start.
    seen: list[ev.Event] = []
    control = Control()
    trainer = Trainer(tiny(log_every=1000, k_t=6), tmp_path, sinks=[seen.append],
                      control=control)
    on_batch(trainer, 4, control.stop)  # the 4th step runs, then the stop is seen
    ended = trainer.train()
    assert ended.status == "stopped" and ended.global_step == 4
    last = steps_logged(seen)[-1]
    assert (last.generation, last.phase, last.step, last.global_step) == (1, "interactive",
                                                                          4, 4)


def test_a_pause_reports_the_step_it_paused_at(tmp_path: Path) -> None:
    seen: list[ev.Event] = []
    control = Control()
    at_pause: list[int] = []

    def sink(event: ev.Event) -> None:
        seen.append(event)
        if isinstance(event, ev.Paused):
            at_pause.append(steps_logged(seen)[-1].global_step)
            control.resume()

    trainer = Trainer(tiny(log_every=1000, k_t=6), tmp_path, sinks=[sink], control=control)
    on_batch(trainer, 3, control.pause)
    trainer.train()
    paused = [e.global_step for e in seen if isinstance(e, ev.Paused)]
    assert paused == [3] and at_pause == [3]


@pytest.mark.parametrize(("interval", "records"), [(0.0, 10), (float("inf"), 4)])
def test_records_are_due_after_the_interval_whatever_log_every_says(
    interval: float, records: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tiny(): 2 generations of 3 interactive + 2 imitation steps. A zero interval makes
    # every step due (10 records); an infinite one leaves only the phase ends (4).
    monkeypatch.setattr(trainer_module, "PROGRESS_INTERVAL_S", interval)
    seen: list[ev.Event] = []
    Trainer(tiny(log_every=1000), tmp_path, sinks=[seen.append]).train()
    logged = steps_logged(seen)
    assert len(logged) == records
    assert [e.global_step for e in logged][-1] == 10
