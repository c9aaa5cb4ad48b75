"""SVG snapshots of the settings and run screens at a fixed size with fixed content.

Update after an intended change with: pytest tests/tui/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot

from mile_engine import events as ev
from mile_tui.app import MileApp, create_app
from mile_tui.widgets.log import LogPanel

SIZE = (100, 32)
SMALL = (80, 24)


def fixed_run() -> list[ev.Event]:
    """A short MILe run as events: two generations, the second one in imitation."""
    events: list[ev.Event] = [
        ev.RunStarted("runs/demo", {"schema": "MILe", "dataset": "digits",
                                    "model": "resnet18-10", "epoch_num": 3},
                      "cpu", "fp32", 11_181_642, 30, 0,
                      {"ref_f1_all": 0.426, "ref_f1_label": 0.58}),
    ]
    step = 0
    for gen in (1, 2):
        for phase, steps in (("interactive", 6), ("imitation", 4)):
            if gen == 2 and phase == "imitation":
                steps = 2  # the run is in the middle of this phase
            events.append(ev.PhaseStarted(gen, 3, phase, 6 if phase == "interactive" else 4))
            for i in range(1, steps + 1):
                step += 1
                loss = 0.9 / (1 + 0.15 * step) + (0.08 if phase == "imitation" else 0.0)
                total = 6 if phase == "interactive" else 4
                events.append(ev.StepLogged(gen, phase, i, total, step, 30, loss, 0.05,
                                            410.0 + step, 2.0 * step))
                if phase == "imitation":
                    events.append(ev.PseudoLabelStats(gen, i, step, 1.4 + 0.1 * step / 10,
                                                      0.7 + 0.01 * step))
            if phase == "imitation" and gen == 1:
                events.append(ev.Evaluated(1, step, {"top1": 0.61, "real_accuracy": 0.83,
                                                     "real_f1": 0.55, "coverage": 1.9}, True,
                                           900.0))
                events.append(ev.CheckpointSaved("runs/demo/step-00000010-generation.pt", 1,
                                                 "interactive", 10, "generation"))
    events.append(ev.Message("warning", "loss is rising; lr may be too high"))
    return events


def second_generation_eval() -> list[ev.Event]:
    """A later, better evaluation and its checkpoint, to show the best moving."""
    return [
        ev.Evaluated(2, 20, {"top1": 0.66, "real_accuracy": 0.86, "real_f1": 0.61,
                             "coverage": 2.1}, True, 900.0),
        ev.CheckpointSaved("runs/demo/step-00000020-generation.pt", 2, "interactive", 20,
                           "generation"),
        ev.Evaluated(3, 30, {"top1": 0.64, "real_accuracy": 0.85, "real_f1": 0.58,
                             "coverage": 2.4}, False, 900.0),
    ]


def run_app_with(settings_file: Path, events: list[ev.Event]) -> MileApp:
    """An app whose run screen shows `events` (no training: snapshots must not vary)."""
    app = create_app(settings_file)

    async def feed(pilot: Pilot[None]) -> None:
        await pilot.press("f3")
        await pilot.pause()
        app.run_screen.query_one(LogPanel).timestamps = False
        app.run_screen.apply_events(events)
        await pilot.pause()

    app.snapshot_feed = feed  # type: ignore[attr-defined]
    return app


def test_settings_screen(snap_compare, settings_file: Path) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(create_app(settings_file), terminal_size=SIZE)


def test_settings_screen_with_errors_small(snap_compare, settings_file: Path) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings_file, ["model=resnet50"])

    async def edit(pilot: Pilot[None]) -> None:
        app.settings_screen.query_one("#field-model").focus()
        await pilot.pause()

    assert snap_compare(app, terminal_size=SMALL, run_before=edit)


@pytest.mark.parametrize("size", [SIZE, SMALL], ids=["100x32", "80x24"])
def test_run_screen(snap_compare, settings_file: Path, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    app = run_app_with(settings_file, fixed_run() + second_generation_eval())
    assert snap_compare(app, terminal_size=size, run_before=app.snapshot_feed)  # type: ignore[attr-defined]
