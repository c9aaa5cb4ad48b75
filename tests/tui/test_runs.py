"""The Runs screen and opening, following and resuming runs from it, on run folders the
tests write (fixed records and times) and on folders of real tiny runs.

The live run of another process, steered from the console, is in test_runs_live.py.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from textual.widgets import DataTable, Input, Static
from textual.widgets._footer import FooterKey

from mile_engine import events as ev
from mile_engine.config.schema import Settings
from mile_engine.control import Control
from mile_engine.runstore.catalog import LockHolder, RunSummary, list_runs
from mile_engine.runstore.layout import METRICS_FILE
from mile_engine.runstore.records import event_record
from mile_tui.app import MileApp, create_app
from mile_tui.marks import cut_name
from mile_tui.screens.run import RunScreen
from mile_tui.screens.runs import SORTABLE, RunsScreen, matches, sweep_words
from mile_tui.screens.settings import SettingsScreen
from mile_tui.sources import fold_history, train_in_thread
from mile_tui.widgets.checkpoints import CheckpointPanel
from mile_tui.widgets.log import LogPanel
from tests.helpers.pilot import open_runs, wait_for
from tests.helpers.runs import T0, every_status, generation_events, write_run

SMALL, LARGE = (80, 24), (120, 36)
# ---------------------------------------------------------------------------- fixtures
HOLD_LOCK = """
import sys
from pathlib import Path
from mile_engine.runstore.lock import hold_active
fh = hold_active(Path(sys.argv[1]))
print("held", flush=True)
sys.stdin.read()
"""


class LockHolderProcess:
    """Another process that holds a run folder's active lock, as a trainer does."""

    def __init__(self, run_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(run_dir.resolve())], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "held"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@pytest.fixture
def holder_factory() -> Iterator[list[LockHolderProcess]]:
    """Start lock-holding processes with `LockHolderProcess(dir)`; all released after."""
    made: list[LockHolderProcess] = []
    yield made
    for holder in made:
        holder.release()


def table_rows(screen: RunsScreen) -> list[dict[str, str]]:
    """The table as text: one dict per row, by column key (the name with the date the
    table leaves out when every run shares it)."""
    table = screen.query_one(DataTable)
    keys = [str(c.key.value) for c in table.ordered_columns]
    rows = [{k: str(cell) for k, cell in zip(keys, table.get_row_at(i), strict=True)}
            for i in range(table.row_count)]
    for row in rows:
        if "name" in row:
            row["name"] = screen.day + row["name"]
    return rows


# ---------------------------------------------------------------------------- the list
async def test_runs_screen_is_home_and_shows_every_status(
        settings_file: Path, holder_factory: list[LockHolderProcess]) -> None:
    folders = every_status(Path("runs"))
    elsewhere = write_run(Path("runs"), "20260101-160000-digits-mile", end=None, hour=4)
    holder = LockHolderProcess(elsewhere)
    holder_factory.append(holder)
    here = write_run(Path("runs"), "20260101-170000-digits-mile", end=None, hour=5)
    from mile_engine.runstore.lock import hold_active

    lock = hold_active(here)  # this process trains it: "running here"
    try:
        app = create_app(settings_file)
        async with app.run_test(size=(160, 30)) as pilot:
            screen = await open_runs(app, pilot)
            assert app.screen is screen  # runs exist: the Runs screen is home
            rows = {r["name"]: r for r in table_rows(screen)}
            for status, path in folders.items():
                assert rows[path.name]["status"] == status
                assert rows[path.name]["holder"] == ""
            assert rows[elsewhere.name]["status"] == "elsewhere"
            assert rows[elsewhere.name]["holder"] == f"{socket.gethostname()} pid {holder.pid}"
            assert rows[here.name]["status"] == "running here"
            # Progress, best and its generation, from what the folders hold.
            assert rows[folders["finished"].name]["progress"] == "2/3 · 10"
            assert rows[folders["finished"].name]["best"] == "0.500 g2"
            assert rows[folders["interrupted"].name]["best"] == "0.450 g1"
            assert rows[folders["failed"].name]["best"] == "–"
            # Newest activity first.
            assert [r["name"] for r in table_rows(screen)][:2] == [here.name, elsewhere.name]
            # The highlighted live run says who holds it, under the table.
            await pilot.press("down")
            detail = str(screen.query_one("#runs-detail", Static).render())
            assert f"running elsewhere: {socket.gethostname()} pid {holder.pid}" in detail
    finally:
        assert lock is not None
        lock.close()


async def test_first_launch_with_no_runs_opens_the_settings(settings_file: Path) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen)
        await pilot.press("f6")
        screen = await open_runs(app, pilot)
        assert isinstance(app.screen, RunsScreen)
        assert "No runs under runs yet" in str(screen.query_one("#runs-title",
                                                                  Static).render())


async def test_filter_and_sort_by_any_column(settings_file: Path) -> None:
    folders = every_status(Path("runs"))
    sizes = {write_run(Path("extra"), f"20250101-0{i}0000-digits-mile", hour=-100 + i,
                       extra=1000 * (3 - i)).name: 1000 * (3 - i) for i in range(3)}
    app = create_app(settings_file, runs=[Path("extra")])
    async with app.run_test(size=(160, 30)) as pilot:
        screen = await open_runs(app, pilot)
        names = [r["name"] for r in table_rows(screen)]
        assert len(names) == 7  # checkpoint_path's and the --runs folder's
        await pilot.press("slash", *"softmax", "enter")
        assert [r["name"] for r in table_rows(screen)] == [folders["stopped"].name]
        screen.query_one("#runs-filter").value = "digits finished"  # type: ignore[attr-defined]
        await pilot.pause()
        shown = {r["name"] for r in table_rows(screen)}
        assert shown == {folders["finished"].name, *sizes}
        screen.query_one("#runs-filter").value = ""  # type: ignore[attr-defined]
        await pilot.pause()

        # o steps through the columns; each time the rows follow that column's values.
        seen = set()
        for _ in range(len(SORTABLE)):
            await pilot.press("o")
            column = screen.sort.column
            seen.add(column)
            runs = {r.name: r for r in screen.runs}
            values = [value(runs[r["name"]], column) for r in table_rows(screen)]
            assert values == sorted(values, reverse=screen.sort.descending), column
        assert set(SORTABLE) == seen
        # Size: the padded folders are the biggest, largest first; O reverses.
        while screen.sort.column != "size":
            await pilot.press("o")
        assert [r["name"] for r in table_rows(screen)][:3] == sorted(
            sizes, key=lambda n: -sizes[n])
        await pilot.press("O")
        assert [r["name"] for r in table_rows(screen)][-3:] == sorted(
            sizes, key=lambda n: sizes[n])


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "120x36"])
async def test_columns_fit_the_width_and_use_it(settings_file: Path,
                                                size: tuple[int, int]) -> None:
    every_status(Path("runs"))
    app = create_app(settings_file)
    async with app.run_test(size=size) as pilot:
        screen = await open_runs(app, pilot)
        table = screen.query_one(DataTable)
        shown = [str(c.key.value) for c in table.ordered_columns]
        assert {"name", "status", "progress", "best"} <= set(shown)
        width = sum(c.get_render_width(table) for c in table.ordered_columns)
        assert width <= size[0]
        if size == LARGE:
            assert {"activity", "size", "schema"} <= set(shown)
            # Wide enough for whole names.
            assert all("…" not in r["name"] for r in table_rows(screen))


@given(st.one_of(st.text(min_size=0, max_size=60),
                 st.from_regex(r"\A\d{8}-\d{6}-[a-z-]{1,30}\Z")),
       st.integers(min_value=1, max_value=40))
def test_cut_name_keeps_its_start_stamp_and_end(text: str, width: int) -> None:
    cut = cut_name(text, width)
    assert len(cut) <= width
    if len(text) <= width:
        assert cut == text
    elif width > 1:
        head, _, tail = cut.partition("…")
        assert text.endswith(tail) and len(head) + len(tail) == width - 1
        # What is kept of the start is the time stamp (with or without its date).
        assert head == "" or text.startswith(head) or text[9:].startswith(head)
        if re.match(r"\d{8}-\d{6}-", text) and width >= 12:
            assert text[9:16] in cut  # the time tells one day's runs apart


def value(run: RunSummary, column: str) -> Any:
    """What a column means, read from the summary (the order the table must follow)."""
    return {
        "name": run.name.lower(), "schema": run.schema.lower(),
        "dataset": run.dataset.lower(), "model": run.model.lower(),
        "status": run.status if run.status != "running" else "elsewhere",
        "holder": str(run.holder or ""),
        "progress": run.global_step / run.total_steps if run.total_steps else 0.0,
        "best": -1.0 if run.best_f1 is None else run.best_f1,
        "activity": run.last_activity, "size": run.disk_bytes,
    }[column]


def summary(name: str, **kw: object) -> RunSummary:
    base: dict[str, object] = dict(
        path=Path("runs") / name, name=name, schema="MILe", dataset="digits",
        model="resnet18-10", status="finished", holder=None, generation=1, generations=2,
        global_step=5, total_steps=10, best_f1=0.5, best_generation=1, last_activity=T0,
        disk_bytes=10, settings={})
    base.update(kw)
    return RunSummary(**base)  # type: ignore[arg-type]


def test_filter_words_all_match_anywhere() -> None:
    run = summary("20260101-digits-mile", status="running",
                  holder=LockHolder("gpu-node-7", 4242))
    assert matches(run, "")
    assert matches(run, "GPU-node-7 digits")  # the holder and the name, any case
    assert matches(run, "elsewhere")
    assert not matches(run, "digits softmax")
    assert not matches(summary("x", status="stopped"), "running")


# ---------------------------------------------------------------------------- history
def test_history_fold_holds_every_record(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "r", f1s=(0.4, 0.6, 0.5), end="finished")
    records = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    view = fold_history(run_dir)
    evaluated = [r for r in records if r["event"] == "Evaluated"]
    assert [row.generation for row in view.evals] == [r["generation"] for r in evaluated]
    assert [row.generation for row in view.evals if row.best] == [2]  # the starred best
    assert [p.loss for p in view.losses] == [r["loss"] for r in records
                                            if r["event"] == "StepLogged"]
    assert len(view.pseudo) == sum(r["event"] == "PseudoLabelStats" for r in records)
    assert (view.generation, view.generations, view.status) == (3, 3, "finished")
    assert view.schema == "MILe"  # from settings.toml: metrics.jsonl leaves it out


def test_a_long_history_keeps_the_newest_records_the_charts_show(tmp_path: Path) -> None:
    from mile_tui.widgets.run_view import HISTORY

    run_dir = write_run(tmp_path, "r", gens=100, f1s=tuple(0.1 + i / 1000 for i in range(90)),
                        end=None)
    records = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    steps = [r for r in records if r["event"] == "StepLogged"]
    assert len(steps) > HISTORY  # the case this test is about
    view = fold_history(run_dir)
    assert [(p.global_step, p.loss) for p in view.losses] == [
        (r["global_step"], r["loss"]) for r in steps[-HISTORY:]]
    assert [r.generation for r in view.evals] == list(range(1, 91))
    assert (view.generation, view.phase, view.step) == (90, "imitation", 2)
    assert view.global_step == steps[-1]["global_step"]


def test_a_run_resumed_from_an_earlier_save_replaces_what_came_after_it(
        tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "r", f1s=(0.4, 0.6, 0.5), end="finished")
    view = fold_history(run_dir)
    assert [r.generation for r in view.evals] == [1, 2, 3]
    # Resumed from generation 1's save (step 5): generations 2 and 3 are done again.
    view.apply(ev.RunStarted(str(run_dir), {"schema": "MILe", "dataset": "digits",
                                            "model": "resnet18-10", "epoch_num": 3},
                             "cpu", "fp32", 1, 15, 5, {"ref_f1_all": 0.4, "ref_f1_label": 0.5},
                             resumed_from=f"{run_dir}/step-00000005-generation.pt"))
    assert [r.generation for r in view.evals] == [1]
    assert [r.best for r in view.evals] == [True]  # the best left, starred again
    assert max(p.global_step for p in view.losses) == 5
    assert all(p.global_step <= 5 for p in view.pseudo)
    view.apply_all(generation_events(2, 3, 0.45, True, str(run_dir)))
    assert [(r.generation, r.best) for r in view.evals] == [(1, False), (2, True)]


async def test_open_a_finished_run_shows_its_whole_history(settings_file: Path) -> None:
    folders = every_status(Path("runs"))
    app = create_app(settings_file)
    async with app.run_test(size=LARGE) as pilot:
        screen = await open_runs(app, pilot)
        screen.select(folders["finished"])
        await pilot.press("enter")
        view = app.run_screen.view
        await wait_for(pilot, lambda: view.evals != [] and app.screen is app.run_screen)
        assert [r.generation for r in view.evals] == [1, 2]
        head = str(app.run_screen.query_one("#phase-head", Static).render())
        assert "gen 2/3" in head
        assert view.status == "finished" and app.followed is None
        # The log holds the history's lines, with no clock time: the replay's would lie.
        await pilot.pause()
        log = [s.text for s in app.run_screen.query_one(LogPanel).lines]
        ended = [line for line in log if line.startswith("run finished")]
        assert ended, log
        assert not any(re.match(r"\d\d:\d\d:\d\d ", line) for line in log), log
        # An interrupted run says so (it has no end record and no live lock).
        await pilot.press("f6")
        screen.select(folders["interrupted"])
        await pilot.press("enter")
        await wait_for(pilot, lambda: view.run_dir == str(folders["interrupted"])
                       and view.evals != [])
        assert view.status == "interrupted"
        assert [r.generation for r in view.evals] == [1, 2]


async def test_a_followed_run_killed_without_an_end_is_noticed(
        settings_file: Path, holder_factory: list[LockHolderProcess]) -> None:
    run_dir = write_run(Path("runs"), "20260101-120000-digits-mile", end=None, f1s=(0.4,))
    holder = LockHolderProcess(run_dir)
    holder_factory.append(holder)
    app = create_app(settings_file, watch=run_dir)
    async with app.run_test(size=SMALL) as pilot:
        view = app.run_screen.view
        await wait_for(pilot, lambda: app.followed is not None)
        assert app.screen is app.run_screen
        assert f"watching {socket.gethostname()} pid {holder.pid}" in str(
            app.run_screen.sub_title)
        # Records appended by "the trainer" reach the screen.
        more = generation_events(2, 3, 0.55, True, str(run_dir))
        with (run_dir / METRICS_FILE).open("a") as fh:
            for event in more:
                fh.write(json.dumps(event_record(event)) + "\n")
        await wait_for(pilot, lambda: [r.generation for r in view.evals] == [1, 2])
        holder.kill()
        await wait_for(pilot, lambda: view.status == "interrupted")
        assert app.followed is None
        # The Runs screen says so too, from the folder alone.
        await pilot.press("f6")
        screen = app.runs_screen
        await wait_for(pilot, lambda: bool(table_rows(screen))
                       and table_rows(screen)[0]["status"] == "interrupted")


# ---------------------------------------------------------------------------- resume
async def test_resume_of_a_busy_run_is_one_line_naming_the_holder(
        settings_file: Path, holder_factory: list[LockHolderProcess]) -> None:
    run_dir = write_run(Path("runs"), "20260101-120000-digits-mile", end=None)
    holder = LockHolderProcess(run_dir)
    holder_factory.append(holder)
    app = create_app(settings_file)
    notes: list[str] = []
    notify = app.notify

    def remember(message: str, **kw: Any) -> None:
        notes.append(message)
        notify(message, **kw)

    app.notify = remember  # type: ignore[method-assign]
    async with app.run_test(size=SMALL) as pilot:
        await open_runs(app, pilot)
        await pilot.press("r")
        await pilot.pause()
        assert app.worker is None
        who = f"{socket.gethostname()} pid {holder.pid}"
        assert any(who in n and "\n" not in n for n in notes), notes
        notes.clear()
        app.action_resume_latest()  # the palette's "Resume latest run"
        await pilot.pause()
        assert app.worker is None and any(who in n for n in notes), notes


def test_a_busy_run_met_by_the_trainer_is_one_line_without_traceback(
        settings_file: Path, holder_factory: list[LockHolderProcess]) -> None:
    # The race the screen's check cannot close: the lock is taken between the check
    # and the trainer's start. The trainer thread reports it in one line.
    from tests.helpers.trained import tiny_checkpoint_run

    run_dir = tiny_checkpoint_run(Path("runs"))
    holder = LockHolderProcess(run_dir)
    holder_factory.append(holder)
    events: list[ev.Event] = []
    train_in_thread(Settings(checkpoint_path="runs"), Control(), events.append,
                    resume=str(run_dir))
    errors = [e for e in events if isinstance(e, ev.Message) and e.level == "error"]
    assert errors == []  # no traceback in the log panel
    (ended,) = [e for e in events if isinstance(e, ev.RunEnded)]
    assert ended.status == "failed" and ended.error is not None
    assert f"pid {holder.pid}" in ended.error and "\n" not in ended.error


@pytest.mark.slow
async def test_starting_clears_the_previous_run_at_once(
        settings_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    monkeypatch.setattr("mile_tui.sources.train_in_thread",
                        lambda *a, **kw: gate.wait(30))
    app = create_app(settings_file)
    async with app.run_test(size=LARGE) as pilot:
        await pilot.press("f3")
        app.run_screen.apply_events(write_events(Path("runs/old")))
        assert app.run_screen.view.evals
        await pilot.press("f2", "f5")
        await pilot.pause()
        view = app.run_screen.view
        assert view.status == "starting" and view.evals == [] and not view.losses
        head = str(app.run_screen.query_one("#phase-head", Static).render())
        assert "Starting the run" in head
        panel = app.run_screen.query_one(CheckpointPanel)
        assert panel.rows == [] and panel.option_count == 1  # "no saves yet"
        assert app.run_screen.query_one("#eval", DataTable).row_count == 0
        assert len(app.run_screen.query_one(LogPanel).lines) <= 1  # the old lines are gone
        gate.set()
        await wait_for(pilot, lambda: not app.running)


def write_events(run_dir: Path) -> list[ev.Event]:
    """A finished two-generation run's events (for a screen that shows something)."""
    settings = {"schema": "MILe", "dataset": "digits", "model": "resnet18-10", "epoch_num": 2}
    return ([ev.RunStarted(str(run_dir), settings, "cpu", "fp32", 1, 10, 0,
                           {"ref_f1_all": 0.4, "ref_f1_label": 0.55})]
            + generation_events(1, 2, 0.4, True, str(run_dir))
            + [ev.RunEnded("finished", 10, 1.0, None)])


def record_run_starts(app: MileApp) -> list[ev.RunStarted]:
    """The RunStarted events the app's trainer thread hands to the screen, as they come."""
    started: list[ev.RunStarted] = []
    put = app.buffer.put

    def record(event: ev.Event) -> None:
        if isinstance(event, ev.RunStarted):
            started.append(event)
        put(event)

    app.buffer.put = record  # type: ignore[method-assign]
    return started


@pytest.mark.slow
async def test_run_screen_key_r_resumes_an_earlier_run_after_a_restart(
        settings_file: Path) -> None:
    from tests.helpers.trained import tiny_checkpoint_run

    run_dir = tiny_checkpoint_run(Path("runs"), epochs=2, extra=["epoch_num=2"])
    app = create_app(settings_file, ["epoch_num=3"])
    started = record_run_starts(app)
    async with app.run_test(size=LARGE) as pilot:
        await open_runs(app, pilot)
        await pilot.press("enter")
        view = app.run_screen.view
        await wait_for(pilot, lambda: len(view.evals) == 2 and view.checkpoints != [])
        assert isinstance(app.screen, RunScreen)
        first = app.run_screen.query_one(CheckpointPanel)
        first.highlighted = 0  # the first generation's save, not the newest
        chosen = app.run_screen.selected_checkpoint
        assert chosen is not None and chosen.endswith("generation.pt")
        await pilot.press("r")
        await wait_for(pilot, lambda: bool(started))
        assert started[0].resumed_from is not None
        assert Path(started[0].resumed_from).resolve() == Path(chosen).resolve()
        await wait_for(pilot, lambda: not app.running)
        assert view.run_dir == str(run_dir) or Path(view.run_dir) == run_dir
        # The history stayed up to the save; generation 2 was done again, shown once.
        assert [r.generation for r in view.evals] == [1, 2]


@pytest.mark.slow
async def test_checkpoint_browser_resumes_the_highlighted_save(settings_file: Path) -> None:
    from mile_tui.checkpoint_browser import CheckpointBrowser
    from tests.helpers.trained import tiny_checkpoint_run

    run_dir = tiny_checkpoint_run(Path("runs"), epochs=2, extra=["epoch_num=2"])
    app = create_app(settings_file)
    started = record_run_starts(app)
    async with app.run_test(size=LARGE) as pilot:
        await open_runs(app, pilot)
        await pilot.press("f4")
        await pilot.pause()
        browser = app.screen
        assert isinstance(browser, CheckpointBrowser)
        keys = {k.key_display for k in browser.query(FooterKey)}
        assert "r" in keys  # a visible key
        # Into the saves list, then to the older save (saves are listed newest first).
        await pilot.press("tab", "down")
        record_ = browser.selected()
        assert record_ is not None and record_.generation == 1  # work is left: no question
        await pilot.press("r")
        await wait_for(pilot, lambda: bool(started))
        assert app.screen is app.run_screen
        assert Path(started[0].resumed_from or "").resolve() == (
            run_dir / record_.file).resolve()
        await wait_for(pilot, lambda: not app.running)
        assert app.run_screen.view.status == "finished"


# ---------------------------------------------------------------------------- panels
async def test_system_panel_appears_with_the_first_load_record(settings_file: Path) -> None:
    from mile_tui.widgets.system import SystemPanel

    app = create_app(settings_file)
    async with app.run_test(size=LARGE) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        panel = app.run_screen.query_one(SystemPanel)
        app.run_screen.apply_events(write_events(Path("runs/old")))
        await pilot.pause()
        assert not panel.display  # a run without load records: no empty panel
        app.run_screen.apply_events([
            ev.SystemStats(7, 153.0, 3 * 2**30, None, None, None),
            ev.Steered("pause", 7),
        ])
        await pilot.pause()
        assert panel.display and panel.region.height > 0
        assert "CPU 153%" in str(panel.render()) and "3.0 GB" in str(panel.render())
        log = "\n".join(s.text for s in app.run_screen.query_one(LogPanel).lines)
        assert "pause at step 7" in log  # the trainer's acknowledgement
        # A new run starts without the old run's load figures.
        app.run_screen.view.reset(status="starting")
        app.run_screen.redraw({"system"})
        await pilot.pause()
        assert not panel.display


def test_the_console_opens_without_loading_torch() -> None:
    # Importing torch takes seconds; the console needs it only once a run is built.
    code = "import sys, mile_tui.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "False"


async def test_keys_typed_in_one_burst_land_in_the_filter(settings_file: Path) -> None:
    # A terminal delivers "/soft⏎" typed fast (or pasted) as keys queued together: the
    # letters must reach the filter, not the table, and nothing may start a run.
    from textual import events

    every_status(Path("runs"))
    app = create_app(settings_file)
    async with app.run_test(size=SMALL) as pilot:
        screen = await open_runs(app, pilot)
        for key, char in [("slash", "/"), ("s", "s"), ("o", "o"), ("f", "f"), ("t", "t"),
                          ("enter", "\r")]:
            app.post_message(events.Key(key, char))  # queued, none handled yet
        await pilot.pause()
        await pilot.pause()
        assert app.screen is screen and app.worker is None
        assert screen.query_one("#runs-filter", Input).value == "soft"
        assert [r.name for r in screen.shown] == ["20260101-130000-digits-softmax"]
        assert screen.query_one(DataTable).has_focus  # enter ended the typing


# ---------------------------------------------------------------------------- sweeps
# The filter word `sweep:NAME` keeps one sweep's trials.


def _sweep_trial(root: Path, name: str, sweep: str | None, trial: int = 0) -> None:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "settings.toml").write_text('[run]\nschema = "MILe"\n')
    if sweep is not None:
        (run_dir / "sweep.json").write_text(json.dumps({"sweep": sweep, "trial": trial}))


def test_the_filter_word_keeps_one_sweeps_trials(tmp_path: Path) -> None:
    _sweep_trial(tmp_path, "r1", "alpha", 0)
    _sweep_trial(tmp_path, "r2", "alpha", 1)
    _sweep_trial(tmp_path, "r3", "beta", 0)
    _sweep_trial(tmp_path, "r4", None)
    runs = list_runs([tmp_path])

    def kept(query: str) -> list[str]:
        return sorted(r.name for r in runs if matches(r, query))

    assert kept("sweep:alpha") == ["r1", "r2"]
    assert kept("sweep:beta") == ["r3"]
    assert kept("sweep:") == ["r1", "r2", "r3"]
    assert kept("sweep:alpha trial:1") == ["r2"]
    assert kept("") == ["r1", "r2", "r3", "r4"]
    assert {r.name: sweep_words(r) for r in runs}["r4"] == ""
