"""Where a run is: current at every pause and stop and at least once per
`POSITION_INTERVAL_S`, whatever `log_every` says, with no extra progress records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mile_engine import events as ev
from mile_engine import trainer as trainer_module
from mile_engine.control import Control
from mile_engine.data import Batch
from mile_engine.trainer import Trainer
from tests.helpers.settings import tiny


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


def positions(seen: list[ev.Event]) -> list[tuple[int, str, int, int]]:
    return [(e.generation, e.phase, e.step, e.global_step)
            for e in seen if isinstance(e, ev.Position)]


def test_a_stop_shows_the_step_it_stopped_at(tmp_path: Path) -> None:
    # log_every far above the phase length: without its own position the last one shown
    # would be the run's start.
    seen: list[ev.Event] = []
    control = Control()
    trainer = Trainer(tiny(log_every=1000, k_t=6), tmp_path, sinks=[seen.append],
                      control=control)
    on_batch(trainer, 4, control.stop)  # the 4th step runs, then the stop is seen
    ended = trainer.train()
    assert ended.status == "stopped" and ended.global_step == 4
    assert positions(seen)[-1] == (1, "interactive", 4, 4)
    assert not any(isinstance(e, ev.StepLogged) for e in seen)  # no extra record


def test_a_pause_shows_the_step_it_paused_at(tmp_path: Path) -> None:
    seen: list[ev.Event] = []
    control = Control()
    at_pause: list[tuple[int, str, int, int]] = []

    def sink(event: ev.Event) -> None:
        seen.append(event)
        if isinstance(event, ev.Paused):
            at_pause.append(positions(seen)[-1])
            control.resume()

    trainer = Trainer(tiny(log_every=1000, k_t=6), tmp_path, sinks=[sink], control=control)
    on_batch(trainer, 3, control.pause)
    trainer.train()
    assert [e.global_step for e in seen if isinstance(e, ev.Paused)] == [3]
    assert at_pause == [(1, "interactive", 3, 3)]


@pytest.mark.parametrize(("interval", "count"), [(0.0, 6), (float("inf"), 0)])
def test_positions_are_due_after_the_interval_between_records(
    interval: float, count: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tiny(): 2 generations of 3 interactive + 2 imitation steps; the last step of each
    # phase is a progress record, so a zero interval adds a position after every other
    # step (2 + 1 per generation) and an infinite one none. The records stay exactly
    # the phase ends.
    monkeypatch.setattr(trainer_module, "POSITION_INTERVAL_S", interval)
    seen: list[ev.Event] = []
    Trainer(tiny(log_every=1000), tmp_path, sinks=[seen.append]).train()
    assert [p[3] for p in positions(seen)] == [1, 2, 4, 6, 7, 9][:count]
    assert [e.global_step for e in seen if isinstance(e, ev.StepLogged)] == [3, 5, 8, 10]
