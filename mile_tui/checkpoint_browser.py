"""The checkpoint browser: runs, their saves, and keys to verify, prune, export, delete.

`CheckpointBrowser` is a screen the training console can push; `CheckpointsApp` wraps it
for `mile-tui checkpoints`. Slow work (verification reads every byte) runs in a thread
worker and reaches the screen only through `call_from_thread`.

The screen's table, its key actions and their confirmations share the screen's state,
so they live together; the file operations themselves are the engine's
(`mile_engine.runstore`: `catalog` lists the runs, `manifest` prunes and deletes,
`saves` verifies and exports).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, Static
from textual.worker import get_current_worker

from mile_engine.runstore.catalog import RunSummary, is_run_folder, list_runs, summarize_run
from mile_engine.runstore.files import CheckpointError
from mile_engine.runstore.manifest import (
    Record,
    delete_checkpoint,
    load_checkpoint,
    protected,
    prune_run,
    retained,
)
from mile_engine.runstore.saves import VerifyResult, export_weights, verify_run
from mile_tui.marks import BEST, BEST_MARK, NEWEST, NEWEST_MARK, cut_name, file_size
from mile_tui.preferences import remember_theme
from mile_tui.screens.dialogs import ConfirmScreen
from mile_tui.screens.help import HELP_BINDING, open_help
from mile_tui.widgets.columns import CELL_PADDING, Column, visible_columns

# In display order. The metrics, the size and the marks identify a good save at a
# glance; the file name, the time and the phase are in the details pane anyway.
SAVE_COLUMNS = (
    Column("mark", "", 0), Column("file", "file", 5), Column("gen", "gen", 0),
    Column("phase", "phase", 3), Column("step", "step", 2), Column("real_f1", "ReaL F1", 0),
    Column("top1", "top-1", 0), Column("size", "size", 0), Column("time", "time", 4),
    Column("check", "check", 1),
)
# The runs pane takes at most this share of the screen's width; longer names wrap.
RUNS_SHARE = 0.35
RUNS_MIN_NAME = 12
# Settings worth a line in the details pane (the full set is in `checkpoints show`).
# What prune keeps, as `prune_run` decides: the `keep_last` newest (max_checkpoint_num)
# and the best; the newest and the best stay whatever the numbers.
PRUNE_HELP = ("remove the saves of the run but the max_checkpoint_num newest (3 by default) "
              "and the best one (asks first, listing them)")
DETAIL_SETTINGS = ("model", "schema", "dataset", "lr", "batch_size", "epoch_num", "k_t", "k_s",
                   "rho", "seed")


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def wrap_name(name: str, width: int) -> str:
    """A run name in lines of at most `width` cells, broken after a "-" where possible
    (run names have no spaces), so that a narrow pane shows all of it."""
    lines: list[str] = []
    line = ""
    for part in re.findall(r"[^-]*-?", name):
        if len(line) + len(part) > width and line:
            lines.append(line)
            line = ""
        line += part
        while len(line) > width:  # one part longer than the pane: cut it
            lines.append(line[:width])
            line = line[width:]
    return "\n".join([*lines, line] if line else lines)


def describe_position(record: Record) -> str:
    """Where in the run a save was made, in words: a save after a generation's evaluation
    has no step within a phase to name."""
    if record.phase == "evaluated":
        return (f"generation {record.generation}, after its evaluation, global step "
                f"{record.global_step}")
    return (f"generation {record.generation}, {record.phase} step {record.step}, "
            f"global step {record.global_step}")


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


class ExportScreen(ModalScreen["str | None"]):
    """Ask where to write the exported weights."""

    DEFAULT_CSS = """
    ExportScreen { align: center middle; }
    ExportScreen > Vertical { width: 80; height: auto; border: thick $accent; padding: 1 2;
                              background: $surface; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default: str) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Export the model weights (a plain state_dict) to:")
            yield Input(self.default, id="export-path")

    def action_cancel(self) -> None:
        """Close without exporting."""
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)


class CheckpointBrowser(Screen[None]):
    """Runs under `checkpoint_path`, the saves of the selected run, and their details."""

    DEFAULT_CSS = """
    CheckpointBrowser #runs-pane { width: 30; height: 1fr;
                                   border-right: vkey $primary 60%; }
    CheckpointBrowser #saves-pane { width: 1fr; height: 1fr; }
    CheckpointBrowser .pane-title { height: 1; padding: 0 1; background: $panel;
                                    color: $text-accent; text-style: bold; }
    CheckpointBrowser #runs, CheckpointBrowser #saves { height: 1fr; }
    CheckpointBrowser #details { height: auto; max-height: 50%; border-top: solid $primary;
                                 padding: 0 1; }
    CheckpointBrowser #status { height: auto; max-height: 3; padding: 0 1;
                                color: $text-muted; }
    """
    BINDING_GROUP_TITLE = "Checkpoint browser"
    BINDINGS = [
        Binding("v", "verify", "Verify",
                tooltip="check every save of the run: SHA-256 and a safe load"),
        Binding("p", "prune", "Prune", tooltip=PRUNE_HELP),
        Binding("e", "export", "Export", tooltip="write the selected save's model weights"),
        Binding("i", "inspect", "Inspect",
                tooltip="validation images with the selected save's predictions"),
        Binding("d", "delete", "Delete", show=False,
                tooltip="delete the selected save (asks first; never the newest or best)"),
        Binding("ctrl+r", "reload", "Refresh", show=False,
                tooltip="read the runs from disk again"),
        Binding("escape,q", "close", "Close"),
        # Across the panes as the eye goes: the runs on the left, their saves on the right.
        Binding("right", "focus_pane('saves')", "Saves pane", show=False, priority=True,
                tooltip="from the runs to the selected run's saves"),
        Binding("left", "focus_pane('runs')", "Runs pane", show=False, priority=True,
                tooltip="from the saves back to the runs"),
    ]

    def __init__(
        self, root: Path, run_dir: Path | None = None, keep_last: int = 3, keep_best: int = 1,
        on_resume: Callable[[Path, Path | None], str | None] | None = None,
    ) -> None:
        """Browse the runs under `root`, starting on `run_dir` (default: the newest).

        `on_resume(run_dir, checkpoint)` continues a run (the console passes it; the
        `mile-tui checkpoints` app has none, and no resume key): it returns why it
        cannot, in one line, or None once the run is going."""
        super().__init__()
        self.on_resume = on_resume
        self.root = Path(root)
        self.start_run = Path(run_dir) if run_dir is not None else None
        self.keep_last = keep_last
        self.keep_best = keep_best
        self.runs: list[RunSummary] = []
        self.run: RunSummary | None = None
        self.checks: dict[str, VerifyResult] = {}
        self.save_rows: list[tuple[str, dict[str, str]]] = []
        """The cells of every save of the run (key: file), all columns, newest first."""
        self.shown_columns: list[Column] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="runs-pane"):
                yield Static("Runs · newest first", id="runs-title", classes="pane-title")
                yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
            with Vertical(id="saves-pane"):
                yield Static("Saves", id="saves-title", classes="pane-title")
                yield DataTable(id="saves", cursor_type="row", zebra_stripes=True)
                yield Static("", id="details")
        yield Static("", id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.title = "mile-tui checkpoints"
        self.reload(select=self.start_run)
        self.query_one("#runs", DataTable).focus()

    def on_resize(self) -> None:
        # The panes' widths follow the screen's: lay the columns out again once they do.
        self.call_after_refresh(self._fill_runs)
        self.call_after_refresh(self._layout_saves)

    # ------------------------------------------------------------------ data
    def reload(self, select: Path | None = None) -> None:
        """Re-read the runs from disk in a thread worker (a folder of many runs on a
        shared file system must not freeze the screen), keeping (or moving to) a
        selected run."""
        if select is None and self.run is not None:
            select = self.run.path
        self.run_worker(lambda: self._read_runs(select), thread=True, group="runs",
                        exclusive=True, exit_on_error=False)

    def _read_runs(self, select: Path | None) -> None:
        """In the worker: the runs, newest save first, with their saves read (every
        manifest is read here, not when the tables are filled)."""
        runs = sorted(list_runs([self.root]), key=lambda r: (r.last_save_time, r.name))
        known = {r.path.resolve() for r in runs}
        if select is not None and select.resolve() not in known and is_run_folder(select):
            runs.append(summarize_run(select))
        runs.reverse()  # newest first, like the saves
        _ = [run.unreadable for run in runs]  # the manifests and files, read here
        if not get_current_worker().is_cancelled:  # a newer reading replaces this one
            self.app.call_from_thread(self._show_runs, runs, select)

    def _show_runs(self, runs: list[RunSummary], select: Path | None) -> None:
        """Show the runs read, the selected one's saves beside them."""
        self.runs = runs
        self._fill_runs()
        if not self.runs:
            self.run = None
            self._fill_saves()
            self.set_status(f"no runs under {self.root}")
            return
        index = 0
        if select is not None:
            for i, run in enumerate(self.runs):
                if run.path.resolve() == select.resolve():
                    index = i
        self.query_one("#runs", DataTable).move_cursor(row=index)
        self.show_run(index)

    def _fill_runs(self) -> None:
        """List the runs, names cut to the pane's share of the screen."""
        pane = self.query_one("#runs-pane")
        names = [("▶ " if r.active else "") + r.name for r in self.runs]
        longest = max((len(n) for n in names), default=3)
        # name, saves count ("saves"), a cell's padding each, and the scrollbar
        budget = int(self.size.width * RUNS_SHARE) - 5 - 4 * CELL_PADDING - 2
        width = max(RUNS_MIN_NAME, min(longest, budget))
        pane.styles.width = width + 5 + 4 * CELL_PADDING + 2 + 1  # + its border
        table = self.query_one("#runs", DataTable)
        row = table.cursor_row
        table.clear(columns=True)
        table.add_column("run", width=width, key="run")
        table.add_column("saves", key="saves")
        for run, name in zip(self.runs, names, strict=True):
            table.add_row(wrap_name(name, width), str(len(run.records)), key=str(run.path),
                          height=None)
        if self.runs:
            table.move_cursor(row=min(max(row, 0), len(self.runs) - 1), animate=False)
        active = " · ▶ training" if any(r.active for r in self.runs) else ""
        self.query_one("#runs-title", Static).update(f"Runs · newest first{active}")

    def show_run(self, index: int) -> None:
        """Show the saves of the run in row `index`."""
        if not 0 <= index < len(self.runs):
            return
        run = self.runs[index]
        if self.run is None or self.run.path != run.path:
            self.checks = {}
        self.run = run
        self._fill_saves()

    def _fill_saves(self) -> None:
        run = self.run
        self.save_rows = [] if run is None else [
            (r.file, self._row(run, r)) for r in reversed(run.records)  # newest first
        ]
        self._saves_title()
        # The header names the run whose saves are listed: its folder's name, whose end
        # an 80-column header would cut from a whole path (`checkpoints list` prints it).
        self.sub_title = run.name if run is not None else str(self.root)
        self._layout_saves(cursor=0)
        if run is None:
            self.query_one("#details", Static).update("")
        elif run.records:
            self.show_details(run.records[-1])
        else:
            self.query_one("#details", Static).update("this run has no checkpoint yet")

    def _saves_title(self) -> None:
        """Name the run over its saves, so that they never read as another run's row."""
        title = self.query_one("#saves-title", Static)
        marks = f" · {BEST} {NEWEST}"
        room = (title.size.width or self.size.width // 2) - 2 - len("Saves of ") - len(marks)
        name = "" if self.run is None else cut_name(self.run.name, max(room, 12))
        title.update(f"Saves of {name}{marks}" if name else f"Saves{marks}")

    def _layout_saves(self, cursor: int | None = None) -> None:
        """Fill the saves table with the columns that fit its width, by priority."""
        self._saves_title()  # its width too follows the screen's
        table = self.query_one("#saves", DataTable)
        widths = {c.key: max([len(c.label)] + [len(cells[c.key]) for _, cells in
                                                 self.save_rows]) for c in SAVE_COLUMNS}
        available = table.scrollable_content_region.width or table.size.width
        columns = visible_columns(SAVE_COLUMNS, widths, available)
        row = table.cursor_row if cursor is None else cursor
        table.clear(columns=True)
        for column in columns:
            table.add_column(column.label, width=widths[column.key], key=column.key)
        for key, cells in self.save_rows:
            table.add_row(*(cells[c.key] for c in columns), key=key)
        self.shown_columns = columns
        if self.save_rows:
            table.move_cursor(row=min(max(row, 0), len(self.save_rows) - 1), animate=False)

    def _row(self, run: RunSummary, r: Record) -> dict[str, str]:
        marks = ""
        if run.best and r.file == run.best.file:
            marks += BEST_MARK
        if run.newest and r.file == run.newest.file:
            marks += NEWEST_MARK
        m = r.metrics or {}
        check = self.checks.get(r.file)
        status = "" if check is None else ("ok" if check.ok else "FAILED")
        return {"mark": marks, "file": r.file, "gen": str(r.generation), "phase": r.phase,
                "step": str(r.global_step), "real_f1": _num(m.get("real_f1")),
                "top1": _num(m.get("top1")), "size": file_size(r.size), "time": _when(r.time),
                "check": status}

    def selected(self) -> Record | None:
        """The save under the cursor."""
        if self.run is None or not self.run.records:
            return None
        table = self.query_one("#saves", DataTable)
        row = table.cursor_row
        records = list(reversed(self.run.records))
        return records[row] if 0 <= row < len(records) else None

    def show_details(self, record: Record) -> None:
        """Fill the details pane: position, metrics, the run's settings."""
        assert self.run is not None
        lines = [
            f"[b]{record.file}[/b]  saved for {record.reason!r} at {_when(record.time)}, "
            f"{file_size(record.size)}",
            describe_position(record),
        ]
        if record.metrics:
            lines.append("metrics: " + "  ".join(
                f"{k} {_num(v)}" for k, v in record.metrics.items()
                if k not in ("generation", "global_step", "rho")
            ))
        else:
            lines.append("metrics: - (saved between two evaluations)")
        try:
            meta = load_checkpoint(self.run.path / record.file, mmap=True)["meta"]
            settings = meta.get("settings", {})
            lines.append("settings: " + "  ".join(
                f"{k}={settings[k]}" for k in DETAIL_SETTINGS if k in settings
            ))
        except CheckpointError as exc:
            lines.append(f"[red]{exc}[/red]")
        check = self.checks.get(record.file)
        if check is not None and not check.ok:
            lines.append("[red]verify: " + "; ".join(check.problems) + "[/red]")
        self.query_one("#details", Static).update("\n".join(lines))

    def set_status(self, text: str) -> None:
        """One line under the tables."""
        self.query_one("#status", Static).update(text)

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "runs":
            if self.runs and (self.run is None or event.cursor_row != self._run_index()):
                self.show_run(event.cursor_row)
        else:
            record = self.selected()
            if record is not None:
                self.show_details(record)

    def _run_index(self) -> int:
        for i, run in enumerate(self.runs):
            if self.run is not None and run.path == self.run.path:
                return i
        return -1

    # ------------------------------------------------------------------ actions
    def action_focus_pane(self, pane: str) -> None:
        """Move the keys to the runs table or to the saves table."""
        self.query_one(f"#{pane}", DataTable).focus()

    def action_resume(self) -> None:
        """Continue the selected run from the highlighted save."""
        run, record = self.run, self.selected()
        if self.on_resume is None or run is None:
            return
        if record is None:
            self.set_status(f"{run.name} has no save to resume from")
            return
        problem = self.on_resume(run.path, run.path / record.file)
        if problem:
            self.set_status(problem)

    def action_reload(self) -> None:
        """Re-read the runs from disk."""
        self.reload()

    def action_close(self) -> None:
        """Leave the browser (and the app, when the browser is the app)."""
        if isinstance(self.app, CheckpointsApp):
            self.app.exit()
        else:
            self.app.pop_screen()

    def action_verify(self) -> None:
        """Check every save of the run (SHA-256 and a safe load) in a thread."""
        if self.run is None:
            return
        run_dir = self.run.path
        self.set_status(f"verifying {self.run.name}…")
        self.run_worker(lambda: self._verify(run_dir), thread=True, group="verify",
                        exclusive=True)

    def _verify(self, run_dir: Path) -> None:
        results = verify_run(run_dir)
        self.app.call_from_thread(self._verified, run_dir, results)

    def _verified(self, run_dir: Path, results: list[tuple[Record | None, VerifyResult]]) -> None:
        if self.run is None or self.run.path != run_dir:
            return
        self.checks = {r.path.name: r for _, r in results}
        bad = [r for _, r in results if not r.ok]
        self._fill_saves()
        if bad:
            self.set_status(f"verify: {len(bad)} of {len(results)} FAILED: "
                            + ", ".join(r.path.name for r in bad))
        else:
            self.set_status(f"verify: all {len(results)} checkpoint(s) ok")

    def action_prune(self) -> None:
        """Remove all saves but the newest `keep_last` and the best, after a confirmation."""
        run = self.run
        if run is None:
            return
        keep = retained(run.records, self.keep_last, self.keep_best) | protected(run.records)
        doomed = [r.file for r in run.records if r.file not in keep]
        if not doomed:
            self.set_status(f"prune: nothing to remove (keeping {self.keep_last} newest and "
                            "the best)")
            return

        def prune() -> str:
            removed = prune_run(run.path, self.keep_last, self.keep_best)
            return f"pruned {len(removed)} checkpoint(s)"

        self._confirm_then(
            f"Prune {run.name}? Keeps the {self.keep_last} newest and the best; removes "
            f"{len(doomed)}: {', '.join(doomed)}", "prune", run, prune,
        )

    def action_delete(self) -> None:
        """Delete the selected save after a confirmation (never the newest or the best)."""
        run, record = self.run, self.selected()
        if run is None or record is None:
            return
        if record.file in protected(run.records):
            self.set_status(f"{record.file} is the newest or the best save: not deleted "
                            "(mile-tui checkpoints delete --force can)")
            return

        def delete() -> str:
            delete_checkpoint(run.path, record.file)
            return f"deleted {record.file}"

        self._confirm_then(f"Delete {run.name}/{record.file}?", "delete", run, delete)

    def _confirm_then(self, question: str, what: str, run: RunSummary,
                      act: Callable[[], str]) -> None:
        """Ask `question`; on yes run `act` (it returns the status line), then relist `run`."""

        def done(yes: bool | None) -> None:
            if not yes:
                self.set_status(f"{what} cancelled")
                return
            try:
                status = act()
            except CheckpointError as exc:
                self.set_status(f"{what} failed: {exc}")
                return
            self.reload(select=run.path)
            self.set_status(status)

        self.app.push_screen(ConfirmScreen(question, destructive=True), done)

    def action_inspect(self) -> None:
        """Open the sample inspector on the selected save."""
        run, record = self.run, self.selected()
        if run is None or record is None:
            return
        from mile_tui.inspector import InspectorScreen

        self.app.push_screen(InspectorScreen(run.path / record.file))

    def action_export(self) -> None:
        """Export the selected save's model weights to a file the user names."""
        run, record = self.run, self.selected()
        if run is None or record is None:
            return
        default = str(Path.cwd() / f"{run.name}-{Path(record.file).stem}.weights.pt")

        def done(target: str | None) -> None:
            if not target:
                self.set_status("export cancelled")
                return
            try:
                out = export_weights(run.path / record.file, Path(target).expanduser())
            except CheckpointError as exc:
                self.set_status(f"export failed: {exc}")
                return
            self.set_status(f"exported the weights to {out.resolve()}")

        self.app.push_screen(ExportScreen(default), done)


class ConsoleCheckpointBrowser(CheckpointBrowser):
    """The browser as the training console opens it (F4): with a key that resumes the
    run from the highlighted save. Prune leaves the footer to make room for it (80
    columns); F1 still lists it."""

    BINDINGS = [
        Binding("r", "resume", "Resume",
                tooltip="continue the run from the highlighted save, its history on screen "
                "(the last save of a finished run asks how many generations to train to)"),
        Binding("p", "prune", "Prune", show=False, tooltip=PRUNE_HELP),
    ]


class CheckpointsApp(App[None]):
    """`mile-tui checkpoints` on a terminal: the browser as an app of its own."""

    TITLE = "mile-tui checkpoints"
    BINDINGS = [HELP_BINDING]

    def __init__(
        self, root: Path, run_dir: Path | None = None, keep_last: int = 3, keep_best: int = 1,
        preferences: Path | None = None,
    ) -> None:
        """Browse the runs under `root`; `preferences`: the file with the console's theme."""
        super().__init__()
        self.browser = CheckpointBrowser(root, run_dir, keep_last, keep_best)
        self.preferences_file = preferences

    def on_mount(self) -> None:
        if self.preferences_file is not None:
            remember_theme(self, self.preferences_file)
        self.push_screen(self.browser)

    def action_help(self) -> None:
        """List every key of the current screen (F1 or ?)."""
        open_help(self)
