"""The run screen (screens/run.py) at 80x24: the run's name in the header, the loss
chart keeping its rows once the system panel appears, and log lines broken between words
or after a `/`, never inside a name. Snapshots with fixed events; the log's line
breaking against a model.

Update after an intended change with:
pytest tests/tui/test_run_screen.py --snapshot-update
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from textual.pilot import Pilot
from textual.widgets import RichLog

from mile_engine import events as ev
from mile_tui.app import MileApp, create_app
from mile_tui.screens.run import header_text
from mile_tui.widgets.log import BREAK_AFTER, LogPanel, break_offsets

SMALL = (80, 24)
RUN = "/srv/shared/experiments/runs/20261203-203104-fashion-mnist-mile"


def run_events(system: bool) -> list[ev.Event]:
    """One generation of a run in a deep folder, its save, a warning naming a path, and
    (`system`) a load record."""
    events: list[ev.Event] = [
        ev.RunStarted(RUN, {"schema": "MILe", "dataset": "fashion-mnist",
                            "model": "resnet18-10", "epoch_num": 3}, "cpu", "fp32",
                      11_181_642, 30, 0, {"ref_f1_all": 0.426, "ref_f1_label": 0.58}),
        ev.PhaseStarted(1, 3, "interactive", 6),
    ]
    for step in range(1, 7):
        events.append(ev.StepLogged(1, "interactive", step, 6, step, 30,
                                    0.9 / (1 + 0.15 * step), 0.05, 410.0, 2.0 * step))
    events += [
        ev.Evaluated(1, 6, {"top1": 0.61, "real_accuracy": 0.83, "real_f1": 0.55,
                            "coverage": 1.9}, True, 900.0),
        ev.CheckpointSaved(f"{RUN}/step-00000006-generation.pt", 1, "evaluated", 6,
                           "generation"),
        ev.Message("warning", "cannot read /srv/shared/datasets/fashion-mnist/"
                   "t10k-images-idx3-ubyte.gz: permission denied"),
    ]
    if system:
        events.append(ev.SystemStats(6, 54.0, 938 * 2**20, None, None, None))
    return events


async def show(app: MileApp, pilot: Pilot[None], events: list[ev.Event]) -> None:
    await pilot.press("f3")
    await pilot.pause()
    app.run_screen.query_one(LogPanel).timestamps = False
    app.run_screen.apply_events(events)
    await pilot.pause()


def log_text(app: MileApp) -> list[str]:
    log = app.run_screen.query_one(RichLog)
    return [strip.text.rstrip() for strip in log.lines]


async def test_the_loss_chart_keeps_its_rows_when_the_system_panel_appears(
        settings_file: Path) -> None:
    heights = {}
    for system in (False, True):
        app = create_app(settings_file)
        async with app.run_test(size=SMALL) as pilot:
            await show(app, pilot, run_events(system))
            heights[system] = app.run_screen.query_one("#loss").size.height
            assert app.run_screen.query_one("#system").display is system
    assert heights[True] == heights[False] >= 9  # a legend and eight rows of chart


async def test_the_header_names_the_run_and_the_log_breaks_no_name(
        settings_file: Path) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SMALL) as pilot:
        await show(app, pilot, run_events(True))
        assert str(app.run_screen.sub_title).startswith(f"run {Path(RUN).name}")
        lines = log_text(app)
        # The save inside the run's folder is named by its file alone, unbroken.
        assert "step-00000006-generation.pt" in lines
        # The long path outside breaks after a "/", never inside a folder's name.
        for name in ("datasets/", "fashion-mnist/", "t10k-images-idx3-ubyte.gz"):
            assert any(name in line for line in lines), lines


@given(st.lists(st.one_of(
    st.text(alphabet="abcdefghij", min_size=1, max_size=12),
    st.lists(st.text(alphabet="abcdef", min_size=1, max_size=10), min_size=1, max_size=8)
    .map("/".join),
), min_size=1, max_size=12), st.integers(min_value=8, max_value=50))
def test_break_offsets_make_lines_that_fit_and_break_only_at_allowed_places(
        words: list[str], width: int) -> None:
    text = " ".join(words)
    offsets = break_offsets(text, width)
    assert offsets == sorted(set(offsets)) and all(0 < o < len(text) for o in offsets)
    bounds = [0, *offsets, len(text)]
    lines = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert "".join(lines) == text
    assert all(len(line.rstrip()) <= width for line in lines)
    for offset in offsets:
        before = text[offset - 1]
        if before in " " + BREAK_AFTER:
            continue
        # A cut inside a word only when the line before holds no place to break late
        # enough (after a third of the line).
        line = text[max(bounds[i] for i in range(len(bounds)) if bounds[i] < offset):offset]
        assert len(line) == width
        assert all(line.rfind(c) + 1 < width // 3 for c in BREAK_AFTER)
    # A word that fits on a line is never broken.
    for word in text.split():
        if len(word) <= width and "/" not in word:
            start = 0
            while (start := text.find(word, start)) != -1:
                assert not any(start < o < start + len(word) for o in offsets) or \
                    text[start - 1:start] not in ("", " ") or \
                    text[start + len(word):start + len(word) + 1] not in ("", " ")
                start += 1


def test_run_screen_with_system_panel_small(snap_compare: Any, settings_file: Path) -> None:
    app = create_app(settings_file)

    async def feed(pilot: Pilot[None]) -> None:
        await show(app, pilot, run_events(True))

    assert snap_compare(app, terminal_size=SMALL, run_before=feed)


@given(
    stamp=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
    tail=st.sampled_from(["digits-mile", "fashion-mnist-LL-Ct", "folder-sigmoid-2"]),
    status=st.sampled_from(["running", "paused", "finished", ""]),
    source=st.sampled_from(["", "watching", "watching gpu-node-17 pid 123456"]),
    width=st.integers(min_value=40, max_value=200),
)
def test_header_keeps_status_and_source_whole_and_the_name_s_end(
    stamp: datetime, tail: str, status: str, source: str, width: int
) -> None:
    name = f"{stamp:%Y%m%d-%H%M%S}-{tail}"
    text = header_text(name, [status, source], width)
    states = " · ".join(s for s in (status, source) if s)
    # Whatever the width, the status and where the events come from are whole, after
    # the name; the name keeps its end (dataset and schema).
    assert text.endswith(states)
    shown = text.removeprefix("run ").removesuffix(states).removesuffix(" · ")
    assert shown.endswith(tail[-4:])
    # It fits whenever a 12-cell name can; the whole name whenever it fits.
    if width >= len("run ") + 12 + (len(states) + 3 if states else 0):
        assert len(text) <= width
    if len("run ") + len(name) + (len(states) + 3 if states else 0) <= width:
        assert shown == name
