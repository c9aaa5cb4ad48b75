"""The Runs screen: every run folder in one table, to open, watch, resume and compare.

The rows come from `mile_engine.runstore.catalog.list_runs`, read in a thread worker (a few
hundred folders on a shared file system must not freeze the screen) and re-read every
few seconds while the screen is shown, so a run started or ended elsewhere appears.
What a key does with a run (open, resume) is the app's: the screen calls back with the
run's summary, and never needs to know the app's class.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from mile_engine.runstore.catalog import RunSummary, is_run_folder, list_runs
from mile_engine.sweep import read_tag
from mile_tui.marks import cut_left, cut_name, file_size, plural, shared_date
from mile_tui.widgets.columns import CELL_PADDING, Column, visible_columns

# Seconds between two readings of the folders while the screen is shown.
REFRESH_INTERVAL = 3.0
# The name column takes what the others leave, but never less than this.
NAME_MIN = 16
NAME_MAX = 40
MARK = "✓"

# In display order; priority 0 is always shown, higher numbers give way first.
RUN_COLUMNS = (
    Column("mark", "", 0), Column("name", "run", 0), Column("schema", "schema", 4),
    Column("dataset", "dataset", 5), Column("model", "model", 6),
    Column("status", "status", 0), Column("holder", "held by", 3),
    Column("progress", "gen · step", 0), Column("best", "best F1", 0),
    Column("activity", "activity", 1), Column("size", "size", 2),
)
# The column `o` sorts by first, and the direction each starts in: numbers and times
# biggest first, words from A.
DESCENDING = frozenset({"progress", "best", "activity", "size"})
SORTABLE = tuple(c.key for c in RUN_COLUMNS if c.key not in ("mark",))

# Plain colours (table cells are Rich text, which knows no theme variables); each reads
# on the light and the dark themes.
STATUS_STYLE = {
    "running here": "bold green",
    "elsewhere": "bold cyan",
    "paused": "bold yellow",
    "finished": "green",
    "stopped": "yellow",
    "failed": "bold red",
    "interrupted": "red",
}


def status_text(run: RunSummary) -> str:
    """The status as the table shows it: "running here" for this console's own run,
    "elsewhere" for one another process trains (the holder column says who), "paused"
    for either while paused."""
    if run.status != "running":
        return run.status
    if run.paused:
        return "paused"
    if run.holder is not None and run.holder.is_this_process():
        return "running here"
    return "elsewhere"


def any_runs(roots: Sequence[Path]) -> bool:
    """Whether any run folder is there to list (a quick look, no summaries)."""
    for root in roots:
        try:
            if is_run_folder(root) or any(
                    is_run_folder(p) for p in root.iterdir() if p.is_dir()):
                return True
        except OSError:
            continue
    return False


def status_sentence(run: RunSummary) -> str:
    """The status in words, with who holds a live run."""
    text = status_text(run)
    if text == "elsewhere":
        return f"running elsewhere: {run.holder}" if run.holder else "running elsewhere"
    if text == "paused" and run.holder is not None:
        return f"paused: {run.holder}"
    return text


def cells(run: RunSummary) -> dict[str, str]:
    """Every column's text for one run (the mark column is filled by the screen)."""
    progress = f"{run.generation}/{run.generations or '?'} · {run.global_step}"
    best = "–" if run.best_f1 is None else f"{run.best_f1:.3f}" + (
        f" g{run.best_generation}" if run.best_generation is not None else "")
    holder = str(run.holder) if run.status == "running" and run.holder else ""
    return {
        "mark": "", "name": run.name, "schema": run.schema, "dataset": run.dataset,
        "model": run.model, "status": status_text(run), "holder": holder,
        "progress": progress, "best": best,
        "activity": time.strftime("%m-%d %H:%M", time.localtime(run.last_activity)),
        "size": file_size(run.disk_bytes),
    }


def sort_key(run: RunSummary, column: str) -> tuple[object, ...]:
    """What a column sorts by: the value itself, not its text (sizes, times, F1)."""
    values: dict[str, object] = {
        "name": run.name.lower(), "schema": run.schema.lower(),
        "dataset": run.dataset.lower(), "model": run.model.lower(),
        "status": status_text(run), "holder": str(run.holder or ""),
        "progress": (run.global_step / run.total_steps if run.total_steps else 0.0,
                     run.global_step),
        "best": -1.0 if run.best_f1 is None else run.best_f1,
        "activity": run.last_activity, "size": run.disk_bytes,
    }
    # The name breaks ties, so the order never depends on the folder scan's.
    return (values[column], run.name)


def sweep_words(run: RunSummary) -> str:
    """`sweep:NAME trial:N` for a trial of a sweep (`mile-tui sweep`), else ""."""
    tag = read_tag(run.path)
    if not tag or not isinstance(tag.get("sweep"), str):
        return ""
    return f"sweep:{tag['sweep']} trial:{tag.get('trial')}"


def matches(run: RunSummary, query: str) -> bool:
    """Whether every word of `query` is in the run's name, schema, dataset, model,
    status or holder (case-insensitive); `sweep:NAME` keeps a sweep's trials."""
    haystack = " ".join((run.name, run.schema, run.dataset, run.model,
                         status_sentence(run), str(run.path))).lower()
    if "sweep:" in query.lower():  # the tag is read only when asked for
        haystack += " " + sweep_words(run).lower()
    return all(word in haystack for word in query.lower().split())


def layout(widths: dict[str, int], available: int) -> list[Column]:
    """The columns that fit in `available` cells, in display order; sets the name's
    width in `widths` (the longest name on entry).

    The essential columns come first (priority 0 and 1: what the run is, how far, how
    good, how recent), the name at least `NAME_MIN`; then the name grows to its whole
    length (up to `NAME_MAX`); then the optional columns join while they fit, and the
    name takes what room is left, up to its whole length.
    """
    longest = widths["name"]

    def need(column: Column) -> int:
        return widths[column.key] + 2 * CELL_PADDING

    widths["name"] = NAME_MIN
    essential = [c for c in RUN_COLUMNS if c.priority <= 1]
    chosen = visible_columns(essential, widths, available)
    used = sum(need(c) for c in chosen)
    widths["name"] = min(max(longest, NAME_MIN), NAME_MAX,
                         max(NAME_MIN, NAME_MIN + available - used))
    used += widths["name"] - NAME_MIN
    for column in sorted((c for c in RUN_COLUMNS if c.priority > 1),
                         key=lambda c: c.priority):
        if used + need(column) <= available:
            chosen.append(column)
            used += need(column)
    widths["name"] = max(widths["name"], min(longest, widths["name"] + available - used))
    keys = {c.key for c in chosen}
    return [c for c in RUN_COLUMNS if c.key in keys]


@dataclass
class Sort:
    """The column the table is sorted by, and in which direction."""

    column: str = "activity"
    descending: bool = True

    def describe(self) -> str:
        """"last activity ↓"."""
        label = next(c.label for c in RUN_COLUMNS if c.key == self.column)
        return f"{label} {'↓' if self.descending else '↑'}"


class RunsScreen(Screen[None]):
    """Every run under `checkpoint_path` and the `--runs` folders, newest first."""

    BINDING_GROUP_TITLE = "Runs screen"
    # The table, not the filter above it, has the keys when the screen opens.
    AUTO_FOCUS = "#runs-table"
    # Short descriptions and the secondary keys hidden, so that the footer fits 80
    # columns; the help (F1) lists every key with its tooltip.
    BINDINGS = [
        # Priority keys: the footer and the help show this enter over the table's own,
        # and both act as the keys arrive (a typed "/soft⏎" must not reach the table
        # while the focus moves); in the filter, enter ends the typing (action_open).
        Binding("enter", "open", "Open", priority=True,
                tooltip="the run's whole history; a live run is followed as it trains"),
        Binding("r", "resume", "Resume",
                tooltip="continue the run from its newest save that verifies (a finished "
                "run asks how many generations to train to)"),
        Binding("space", "mark", "Mark", tooltip="mark the run for a comparison"),
        Binding("c", "compare", "Compare",
                tooltip="overlay the marked runs' metrics and settings"),
        # Out of the footer: the field above the table says "/ filter".
        Binding("slash", "filter", "Filter", priority=True, show=False,
                tooltip="narrow the list by words"),
        # Out of the footer (room for F2): the title says "o sorts".
        Binding("o", "sort", "Sort", show=False, tooltip="sort by the next column (a click "
                "on a column's title sorts by it)"),
        Binding("O", "reverse", "Reverse", show=False, tooltip="reverse the order"),
        Binding("ctrl+r", "refresh", "Refresh", show=False,
                tooltip="read the run folders again (done every few seconds anyway)"),
        Binding("f2", "app.show_settings", "New run",
                tooltip="the settings screen, to start a new run (F5 there starts it)"),
        Binding("f3", "app.show_run", "Run", show=False, tooltip="the run screen"),
    ]

    def __init__(self, roots: Callable[[], Sequence[Path]],
                 on_open: Callable[[RunSummary], None],
                 on_resume: Callable[[RunSummary], None]) -> None:
        """List the runs under `roots()` (asked at every reading: the settings may
        change `checkpoint_path`); `on_open` and `on_resume` act on the chosen run."""
        super().__init__(id="runs")
        self.roots = roots
        self.on_open = on_open
        self.on_resume = on_resume
        self.runs: list[RunSummary] = []
        """Every run read, in the catalog's order (newest activity first)."""
        self.shown: list[RunSummary] = []
        """The rows on screen: filtered and sorted."""
        self.marked: set[Path] = set()
        self.sort = Sort()
        self.loaded = False
        """True once the folders have been read at least once."""
        self.reads = 0
        self.day = ""
        """The date every listed run's name starts with, when the table leaves it out."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="runs-title", classes="pane-title")
        yield Input(placeholder="/ filter: words in the name, schema, dataset, model, status",
                    id="runs-filter", compact=True)
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="runs-detail")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.title = "mile-tui"
        self.sub_title = "runs"
        self.query_one(DataTable).focus()
        self.refresh_runs()
        self.set_interval(REFRESH_INTERVAL, self._tick)

    def on_screen_resume(self) -> None:
        self.refresh_runs()

    def on_resize(self) -> None:
        # The columns that fit depend on the width: lay them out again.
        self.call_after_refresh(self.fill)

    def _tick(self) -> None:
        if self.is_current:
            self.refresh_runs()

    # ------------------------------------------------------------------ data
    def refresh_runs(self) -> None:
        """Read the run folders again, in a thread (the table is refilled after)."""
        roots = list(self.roots())
        self.run_worker(lambda: self._read(roots), thread=True, group="runs-list",
                        exclusive=True, exit_on_error=False)

    def _read(self, roots: list[Path]) -> None:
        runs = list_runs(roots)
        self.app.call_from_thread(self.show_runs, runs)

    def show_runs(self, runs: list[RunSummary]) -> None:
        """Show `runs` (the catalog's list), keeping the filter, sort, marks and cursor."""
        self.reads += 1
        if self.loaded and runs == self.runs:
            return  # nothing changed since the last reading: the table stays as it is
        self.runs = runs
        self.loaded = True
        self.marked &= {r.path for r in runs}
        self.fill()
        # The first reading may come before the table has its width: lay out again.
        self.call_after_refresh(self.fill)

    def fill(self) -> None:
        """Fill the table: the filtered runs in the chosen order, the columns that fit."""
        if not self.is_mounted:
            return
        table = self.query_one(DataTable)
        current = self.highlighted
        query = self.query_one(Input).value
        shown = [r for r in self.runs if matches(r, query)]
        shown.sort(key=lambda r: sort_key(r, self.sort.column),
                   reverse=self.sort.descending)
        self.shown = shown
        rows = [cells(r) for r in shown]
        for run, row in zip(shown, rows, strict=True):
            row["mark"] = MARK if run.path in self.marked else ""
        labels = {c.key: c.label for c in RUN_COLUMNS}
        available = (table.scrollable_content_region.width or self.size.width) - 1
        widths, columns = self._layout(rows, labels, available)
        # Names cut short: one day's runs differ by their time, so the date they all
        # share goes to the column's title, and the rest is cut only if it must.
        day = shared_date([r.name for r in shown])
        self.day = ""
        if day and widths["name"] < max(len(row["name"]) for row in rows):
            self.day = day
            for row in rows:
                row["name"] = row["name"][len(day):]
            labels["name"] = f"run of {day[:4]}-{day[4:6]}-{day[6:8]}"
            widths, columns = self._layout(rows, labels, available)
        table.clear(columns=True)
        for column in columns:
            label = labels[column.key]
            if column.key == self.sort.column:
                label += " ↓" if self.sort.descending else " ↑"
            table.add_column(label, width=widths[column.key], key=column.key)
        for run, row in zip(shown, rows, strict=True):
            table.add_row(*(self._cell(run, row, c.key, widths) for c in columns),
                          key=str(run.path))
        if shown:
            index = next((i for i, r in enumerate(shown) if r.path == current), 0)
            table.move_cursor(row=index, animate=False)
        self._title()
        self._detail()

    def _layout(self, rows: list[dict[str, str]], labels: dict[str, str],
                available: int) -> tuple[dict[str, int], list[Column]]:
        """Every column's width (the sorted one's title has an arrow: two cells more),
        and the columns that fit in `available` cells."""
        widths = {c.key: max([len(labels[c.key]) + (2 if c.key == self.sort.column else 0)]
                             + [len(row[c.key]) for row in rows])
                  for c in RUN_COLUMNS}
        widths["mark"] = 1
        return widths, layout(widths, available)

    def _cell(self, run: RunSummary, row: dict[str, str], key: str,
              widths: dict[str, int]) -> Text:
        text = row[key]
        if key == "name":
            return Text(cut_name(text, widths["name"]), "bold" if
                        run.status == "running" else "")
        if key == "status":
            return Text(text, STATUS_STYLE.get(text, ""))
        if key in ("progress", "best", "size"):
            return Text(text, justify="right")
        return Text(text, "bold" if key == "mark" else "")

    def _title(self) -> None:
        roots = ", ".join(str(r) for r in self.roots())
        if not self.loaded:
            text = f"Runs under {roots} · reading…"
        elif not self.runs:
            text = f"No runs under {roots} yet: F2 opens the settings, F5 there starts one"
        else:
            count = (f"{len(self.shown)} of {len(self.runs)}"
                     if len(self.shown) != len(self.runs) else plural(len(self.runs), "run"))
            marked = f" · {len(self.marked)} marked" if self.marked else ""
            rest = f" · sorted by {self.sort.describe()} (o: next){marked}"
            # Where the runs come from, always: the settings file may be another folder's.
            room = self.size.width - 2 - len(count) - len(" in ") - len(rest)
            text = f"{count} in {cut_left(roots, max(room, 12))}{rest}"
        self.query_one("#runs-title", Static).update(text)

    def _detail(self) -> None:
        run = self.selected
        detail = self.query_one("#runs-detail", Static)
        if run is None:
            detail.update("")
            return
        settings = run.settings
        keys = ("model", "schema", "dataset", "epoch_num", "batch_size", "lr", "k_t", "k_s")
        shown = "  ".join(f"{k}={settings[k]}" for k in keys if k in settings)
        sweep = sweep_words(run)
        detail.update(Text.assemble((status_sentence(run), "bold"),
                                    f" · {sweep}" if sweep else "", f" · {run.path}\n",
                                    (shown, "dim")))

    # ------------------------------------------------------------------ selection
    @property
    def selected(self) -> RunSummary | None:
        """The run under the cursor."""
        if not self.shown or not self.is_mounted:
            return None
        row = self.query_one(DataTable).cursor_row
        return self.shown[row] if 0 <= row < len(self.shown) else None

    @property
    def highlighted(self) -> Path | None:
        """The folder of the run under the cursor."""
        run = self.selected
        return run.path if run is not None else None

    def select(self, path: Path) -> None:
        """Move the cursor to the run in `path`, if listed."""
        for index, run in enumerate(self.shown):
            if run.path == path:
                self.query_one(DataTable).move_cursor(row=index, animate=False)
                return

    @on(DataTable.RowHighlighted)
    def _highlighted(self, _: DataTable.RowHighlighted) -> None:
        self._detail()

    @on(DataTable.RowSelected)
    def _selected(self, _: DataTable.RowSelected) -> None:
        self.action_open()

    @on(DataTable.HeaderSelected)
    def _header(self, event: DataTable.HeaderSelected) -> None:
        column = str(event.column_key.value)
        if column not in SORTABLE:
            return
        if column == self.sort.column:
            self.sort.descending = not self.sort.descending
        else:
            self.sort = Sort(column, column in DESCENDING)
        self.fill()

    @on(Input.Changed, "#runs-filter")
    def _filter_changed(self, _: Input.Changed) -> None:
        self.fill()

    def key_escape(self) -> None:
        """Escape in the filter goes back to the table (the filter stays)."""
        if self.focused is self.query_one(Input):
            self.set_focus(self.query_one(DataTable))

    # ------------------------------------------------------------------ actions
    def action_open(self) -> None:
        """Open the run under the cursor on the run screen (in the filter: back to the
        table, the filter kept)."""
        if self.focused is self.query_one(Input):
            self.set_focus(self.query_one(DataTable))
            return
        run = self.selected
        if run is not None:
            self.on_open(run)

    def action_resume(self) -> None:
        """Continue the run under the cursor from its newest good save."""
        run = self.selected
        if run is not None:
            self.on_resume(run)

    def action_mark(self) -> None:
        """Mark or unmark the run under the cursor for a comparison."""
        run = self.selected
        if run is None:
            return
        self.marked ^= {run.path}
        row = self.query_one(DataTable).cursor_row
        self.fill()
        self.query_one(DataTable).move_cursor(row=min(row + 1, len(self.shown) - 1))

    def action_compare(self) -> None:
        """Compare the marked runs (two or more)."""
        paths = [r.path for r in self.runs if r.path in self.marked]
        if len(paths) < 2:
            self.notify("Mark two or more runs with space first, then c compares them.",
                        severity="warning")
            return
        from mile_tui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen(paths))

    def action_filter(self) -> None:
        """Type words to narrow the list."""
        field = self.query_one(Input)
        # `self.focused`, not `has_focus`: that follows only once the Focus event is in.
        if self.focused is field:
            field.insert_text_at_cursor("/")  # a slash typed in the filter is text
            return
        # At once, not after the keys already queued (`focus()` waits for them): a fast
        # typist's "/soft" must land in the filter, not on the table's keys.
        self.set_focus(field)

    def action_sort(self) -> None:
        """Sort by the next column."""
        index = (SORTABLE.index(self.sort.column) + 1) % len(SORTABLE)
        column = SORTABLE[index]
        self.sort = Sort(column, column in DESCENDING)
        self.fill()

    def action_reverse(self) -> None:
        """Reverse the order."""
        self.sort.descending = not self.sort.descending
        self.fill()

    def action_refresh(self) -> None:
        """Read the run folders again."""
        self.refresh_runs()
