"""SVG snapshots of every screen (settings, run, help, checkpoint browser, inspector) at
80×24 and 120×36, with fixed content: no clock times, no temporary paths in the picture.

Update after an intended change with: pytest tests/tui/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Static

from mile_engine import events as ev
from mile_engine.runstore.layout import MANIFEST_FILE
from mile_tui.app import MileApp, create_app
from mile_tui.checkpoint_browser import CheckpointsApp
from mile_tui.inspector import InspectorApp
from mile_tui.widgets.log import LogPanel
from tests.helpers.pilot import wait_for
from tests.helpers.runs import make_run

SMALL = (80, 24)
LARGE = (120, 36)
SIZES = pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "120x36"])


def fixed_run(finished: bool = False) -> list[ev.Event]:
    """A short MILe run as events: two generations, the second one in imitation, or
    (`finished`) the whole three generations and the end of the run."""
    events: list[ev.Event] = [
        ev.RunStarted("runs/demo", {"schema": "MILe", "dataset": "digits",
                                    "model": "resnet18-10", "epoch_num": 3},
                      "cpu", "fp32", 11_181_642, 30, 0,
                      {"ref_f1_all": 0.426, "ref_f1_label": 0.58}),
    ]
    step = 0
    for gen in (1, 2, 3) if finished else (1, 2):
        for phase, steps in (("interactive", 6), ("imitation", 4)):
            if gen == 2 and phase == "imitation" and not finished:
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


def later_evaluations() -> list[ev.Event]:
    """Two later evaluations and a checkpoint, to show the best moving."""
    return [
        ev.Evaluated(2, 20, {"top1": 0.66, "real_accuracy": 0.86, "real_f1": 0.61,
                             "coverage": 2.1}, True, 900.0),
        ev.CheckpointSaved("runs/demo/step-00000020-generation.pt", 2, "interactive", 20,
                           "generation"),
        ev.Evaluated(3, 30, {"top1": 0.64, "real_accuracy": 0.85, "real_f1": 0.58,
                             "coverage": 2.4}, False, 900.0),
    ]


def finished_run() -> list[ev.Event]:
    """A whole tiny run, from its start to "run finished"."""
    return fixed_run(finished=True) + later_evaluations() + [
        ev.CheckpointSaved("runs/demo/step-00000030-generation.pt", 3, "interactive", 30,
                           "generation"),
        ev.RunEnded("finished", 30, 61.0, {"real_f1": 0.61, "generation": 2}),
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


def fixed_runs(root: Path) -> Path:
    """Two run folders with saves at fixed times (2026-01-0x 12:00 UTC)."""
    make_run(root, [0.3], name="20260101-120000-digits-mile")
    newest = make_run(root, [0.42, 0.61, 0.58, None], name="20260102-093000-digits-mile")
    for day, run_dir in ((1, root / "20260101-120000-digits-mile"), (2, newest)):
        manifest = run_dir / MANIFEST_FILE
        data = json.loads(manifest.read_text())
        for i, record in enumerate(data["checkpoints"]):
            record["time"] = 1767268800.0 + (day - 1) * 86400 + 600 * i  # 2026-01-01 12:00
            record["time_iso"] = time.strftime("%Y-%m-%dT%H:%M:%S",
                                               time.gmtime(record["time"]))
        manifest.write_text(json.dumps(data))
    return newest


# ---------------------------------------------------------------------------- settings
@SIZES
def test_settings_screen(snap_compare: Any, settings_file: Path, size: tuple[int, int]) -> None:
    app = create_app(settings_file)

    async def focus_rho(pilot: Pilot[None]) -> None:
        # rho has the longest explanation: the help box must show all of it.
        await pilot.pause()  # after the screen's own first focus
        app.settings_screen.focus_setting("rho")
        doc = app.settings_screen.query_one("#setting-doc", Static)
        await wait_for(pilot, lambda: str(doc.render()).startswith("rho"))
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=focus_rho)


def test_settings_screen_with_errors_small(snap_compare: Any, settings_file: Path) -> None:
    app = create_app(settings_file, ["dataset=imagenet"])

    async def edit(pilot: Pilot[None]) -> None:
        app.settings_screen.query_one("#field-model").focus()
        # Focus scrolls the form; a snapshot taken mid-scroll catches the scrollbar
        # anywhere along its way (it differed with the machine's load).
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()

    assert snap_compare(app, terminal_size=SMALL, run_before=edit)


# ---------------------------------------------------------------------------- run
@SIZES
def test_run_screen(snap_compare: Any, settings_file: Path, size: tuple[int, int]) -> None:
    app = run_app_with(settings_file, fixed_run() + later_evaluations())
    assert snap_compare(app, terminal_size=size, run_before=app.snapshot_feed)  # type: ignore[attr-defined]


@SIZES
def test_run_screen_finished(snap_compare: Any, settings_file: Path,
                             size: tuple[int, int]) -> None:
    app = run_app_with(settings_file, finished_run())
    assert snap_compare(app, terminal_size=size, run_before=app.snapshot_feed)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- help
@SIZES
def test_help_screen(snap_compare: Any, settings_file: Path, size: tuple[int, int]) -> None:
    app = run_app_with(settings_file, finished_run())

    async def open_help(pilot: Pilot[None]) -> None:
        await app.snapshot_feed(pilot)  # type: ignore[attr-defined]
        await pilot.press("f1")
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=open_help)


# ---------------------------------------------------------------------------- browser
@SIZES
def test_checkpoint_browser(snap_compare: Any, settings_file: Path, utc: None,
                            size: tuple[int, int]) -> None:
    fixed_runs(Path("runs"))  # relative: the working folder is a fresh temporary one

    async def settle(pilot: Pilot[None]) -> None:
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(CheckpointsApp(Path("runs")), terminal_size=size, run_before=settle)


# ---------------------------------------------------------------------------- inspector
@SIZES
def test_inspector(snap_compare: Any, settings_file: Path, size: tuple[int, int]) -> None:
    from tests.helpers.trained import fixed_checkpoint

    checkpoint = fixed_checkpoint(Path("run"))  # relative: no temporary path on screen

    async def settle(pilot: Pilot[None]) -> None:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("n")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(InspectorApp(checkpoint), terminal_size=size, run_before=settle)
