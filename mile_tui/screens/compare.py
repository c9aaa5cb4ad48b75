"""The compare screen: two or more runs side by side.

ReaL F1 and label coverage per generation and the loss against the global step, one
curve a run (textual-plotext charts with axes; our own legend under each, so that long
run names never hide a curve), and tables of each run's best evaluation and of the
settings in which the runs differ. The data comes from `mile_engine.reports.comparison`.

At 80 columns each chart has a tab of its own; from `WIDE` columns on, the F1 and
coverage charts share one tab, side by side.

The screen follows the runs while it is open: every `FOLLOW_INTERVAL_S` it reads only
the bytes each run's metrics.jsonl gained (`MetricsFollower`), and redraws when any did,
so a run still training moves on the charts and tables by itself.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Literal

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.geometry import Size
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane
from textual_plotext import PlotextPlot

from mile_engine import events as ev
from mile_engine.reports.comparison import Comparison, RunData, Series, compare
from mile_engine.runstore.catalog import summarize_run
from mile_engine.runstore.history import MetricsFollower
from mile_tui.checkpoint_browser import wrap_name
from mile_tui.marks import BEST_MARK

WIDE = 120
"""From this many columns the F1 and coverage charts share a tab."""
FOLLOW_INTERVAL_S = 2.0
"""How often the screen looks for records the runs appended (a stat per run when none)."""

PALETTE: list[tuple[int, int, int]] = [
    (66, 135, 245), (245, 145, 40), (60, 180, 75), (230, 60, 60), (160, 110, 220),
    (150, 100, 80), (235, 110, 190), (140, 140, 140), (190, 190, 40), (40, 190, 210),
]
"""One colour a run (then again from the first): readable on dark and light themes."""

BEST_COLUMNS = ("run", "F1", "gen", "mAP", "top-1", "acc", "prec", "recall", "steps")
"""The best table's columns: F1, acc, prec and recall are ReaL metrics (its title says);
mAP is that generation's, threshold-free."""
PSEUDO_SEP = " · "
CELL_PADDING = 1  # DataTable's default, on each side of a cell
SCROLLBAR = 2
MIN_NAME = 12


def colour(index: int) -> tuple[int, int, int]:
    """Run `index`'s colour in every chart and table."""
    return PALETTE[index % len(PALETTE)]


def swatch(index: int) -> Text:
    """A coloured block and the run's number: how the tables and legends name a run."""
    r, g, b = colour(index)
    text = Text("■ ", style=f"rgb({r},{g},{b})")
    text.append(str(index + 1), "bold")
    return text


def legend_entries(names: list[str], empty: set[int], empty_note: str) -> list[Text]:
    """Every run's swatch and name; runs without a point get `empty_note` after them."""
    entries = []
    for index, name in enumerate(names):
        entry = swatch(index)
        entry.append(f" {name}")
        if index in empty:
            entry.append(f" ({empty_note})", "dim")
        entries.append(entry)
    return entries


class Legend(Widget):
    """A chart's legend under it: entries side by side, a new line where the next one
    would not fit, so that a run's number never parts from its name."""

    DEFAULT_CSS = """
    Legend { height: auto; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.entries: list[Text] = []

    def show(self, entries: list[Text]) -> None:
        """Take new entries and lay them out again."""
        self.entries = entries
        self.refresh(layout=True)

    def lines(self, width: int) -> list[Text]:
        """The entries in lines of at most `width` cells (a longer entry alone on its line)."""
        lines: list[Text] = []
        for entry in self.entries:
            if lines and lines[-1].cell_len + 3 + entry.cell_len <= width:
                lines[-1].append("   ")
                lines[-1].append_text(entry)
            else:
                lines.append(entry.copy())
        return lines

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return max(1, sum(max(1, -(-line.cell_len // max(width, 1)))
                          for line in self.lines(width)))

    def render(self) -> Text:
        return Text("\n").join(self.lines(self.content_size.width))


def step_ticks(low: float, high: float, count: int = 6) -> list[int]:
    """Whole-number ticks 1, 2 or 5 times a power of ten apart, about `count` of them
    between `low` and `high` (global steps are counts: 8.2 would read as nonsense)."""
    span = max(high - low, 1.0)
    raw = span / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    # 2.5 only where it makes whole numbers (25, 250, ...).
    multiples = (1, 2, 2.5, 5, 10) if power >= 10 else (1, 2, 5, 10)
    gap = next((m * power for m in multiples if m * power >= raw), 10 * power)
    gap = max(1, round(gap))
    first = math.ceil(low / gap) * gap
    return list(range(int(first), int(high) + 1, int(gap)))


LOG_MANTISSAS = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
"""Where the ticks of a log axis go in each decade (1, 2, 5 alone when that is enough)."""


def log_ticks(low: float, high: float) -> list[float]:
    """Round values between `low` and `high` (both > 0) to mark a log axis with: 1, 2
    and 5 in each decade, or more mantissas when those leave fewer than three."""
    for mantissas in ((1.0, 2.0, 5.0), LOG_MANTISSAS):
        ticks = [m * 10.0 ** e
                 for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
                 for m in mantissas]
        inside = [round(t, 12) for t in ticks
                  if low <= t * (1 + 1e-9) and t <= high * (1 + 1e-9)]
        if len(inside) >= 3:
            return inside
    return [low, high] if low < high else [low]


def linear_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """About `count` round values (steps of 1, 2, 2.5 or 5 times a power of ten) from
    `low` to `high`."""
    if not high > low:
        return [low]
    rough = (high - low) / (count - 1)
    power = 10.0 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= rough)
    first = math.ceil(low / step - 1e-9)
    return [round(i * step, 12) for i in range(first, math.floor(high / step + 1e-9) + 1)]


def draw(plot: PlotextPlot, series: list[Series], title: str, xlabel: str,
         per_generation: bool, y_axis: Literal["auto", "linear", "log"] = "auto") -> None:
    """Redraw `plot` with one curve a run in the run's colour.

    `y_axis`: "auto" leaves the y ticks to plotext; "linear" and "log" place round ones
    (a chart that switches between the two sets its ticks each time, since plotext
    cannot be told to go back to its own). On "log" the y values are drawn as their
    logarithms, the ticks labelled in the values: plotext's own log scale transforms
    its data in place at every build, so a chart drawn twice, as a terminal redraws
    it, failed.
    """
    log_y = y_axis == "log"
    plt = plot.plt
    plt.clear_data()
    plt.title(title)
    plt.xlabel(xlabel)
    xs: list[float] = []
    shown: list[float] = []
    for index, run in enumerate(series):
        points = [(x, y) for x, y in zip(run.xs, run.ys, strict=True)
                  if not log_y or y > 0]
        if not points:
            continue
        run_xs = [x for x, _ in points]
        run_ys = [math.log10(y) if log_y else y for _, y in points]
        plt.plot(run_xs, run_ys, marker="hd", color=colour(index))
        if per_generation:
            # A dot on each evaluation: a generation is a point, not a stretch of line.
            plt.scatter(run_xs, run_ys, marker="●", color=colour(index))
        xs.extend(run_xs)
        shown.extend(y for _, y in points)
    if shown and y_axis == "log":
        ticks = log_ticks(min(shown), max(shown))
        plt.yticks([math.log10(t) for t in ticks], [f"{t:g}" for t in ticks])
    elif shown and y_axis == "linear":
        ticks = linear_ticks(min(shown), max(shown))
        plt.yticks(ticks, [f"{t:g}" for t in ticks])
    if xs:
        if per_generation:
            last = int(max(xs))
            every = max(1, -(-last // 12))  # at most about a dozen ticks
            plt.xticks([float(g) for g in range(1, last + 1, every)])
        else:
            steps = step_ticks(min(xs), max(xs))
            if steps:  # else plotext's own
                plt.xticks([float(t) for t in steps], [f"{t:,}" for t in steps])
    plot.refresh()


def metric_text(value: float | None) -> str:
    """A metric with three decimals, "–" where there is none yet."""
    return "–" if value is None else f"{value:.3f}"


class CompareScreen(Screen[None]):
    """ReaL F1, coverage and loss of several runs overlaid; their best metrics and the
    settings in which they differ."""

    DEFAULT_CSS = """
    CompareScreen TabbedContent { height: 1fr; }
    CompareScreen TabPane { padding: 0; }
    CompareScreen .chart-box { height: 1fr; width: 1fr; }
    CompareScreen #cmp-coverage-beside { display: none; }
    CompareScreen.-wide #cmp-coverage-beside { display: block; }
    CompareScreen .table-title { height: 1; padding: 0 1; color: $text-accent;
                                 text-style: bold; }
    CompareScreen DataTable { height: auto; max-height: 100%; }
    CompareScreen #cmp-status { height: auto; padding: 0 1; color: $text-warning; }
    """
    BINDING_GROUP_TITLE = "Compare runs"
    BINDINGS = [
        Binding("escape,q", "close", "Close"),
        Binding("1", "tab('generations')", "F1", tooltip="ReaL F1 per generation"),
        Binding("2", "tab('coverage')", "Coverage", tooltip="label coverage per generation"),
        Binding("3", "tab('loss')", "Loss", tooltip="training loss against the global step"),
        Binding("4", "tab('tables')", "Tables",
                tooltip="best metrics per run and the settings that differ"),
        Binding("l", "log_loss", "Log loss", show=False,
                tooltip="the loss chart on a log scale, or back to a linear one"),
        Binding("ctrl+r", "reload", "Reload", show=False,
                tooltip="read the runs again from the start"),
    ]

    def __init__(self, run_dirs: list[Path]) -> None:
        """Compare the runs in `run_dirs` (two or more run folders)."""
        super().__init__()
        self.run_dirs = [Path(d) for d in run_dirs]
        self.comparison: Comparison | None = None
        self.errors: list[str] = []
        self.log_loss = False
        self.live = 0
        """How many of the runs were training at the last look."""
        # Per run folder: its follower, the events read so far, its name and settings.
        self._followers: dict[Path, MetricsFollower] = {}
        self._events: dict[Path, list[ev.Event]] = {}
        self._runs: dict[Path, RunData] = {}
        self._lock = threading.Lock()

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="cmp-generations"):
            with TabPane("ReaL F1", id="cmp-generations"), Horizontal():
                with Vertical(classes="chart-box"):
                    yield PlotextPlot(id="cmp-f1-chart")
                    yield Legend(id="cmp-f1-legend")
                with Vertical(classes="chart-box", id="cmp-coverage-beside"):
                    yield PlotextPlot(id="cmp-coverage-chart-beside")
                    yield Legend(id="cmp-coverage-legend-beside")
            with TabPane("Coverage", id="cmp-coverage"), Vertical(classes="chart-box"):
                yield PlotextPlot(id="cmp-coverage-chart")
                yield Legend(id="cmp-coverage-legend")
            with TabPane("Loss", id="cmp-loss"), Vertical(classes="chart-box"):
                yield PlotextPlot(id="cmp-loss-chart")
                yield Legend(id="cmp-loss-legend")
            with TabPane("Tables", id="cmp-tables"), VerticalScroll():
                yield Static("Best generation by ReaL F1 (F1, acc, prec, recall: ReaL)",
                             classes="table-title")
                yield DataTable(id="cmp-best", cursor_type="row", zebra_stripes=True)
                yield Static(id="cmp-pseudo-title", classes="table-title")
                yield DataTable(id="cmp-pseudo", cursor_type="row", zebra_stripes=True)
                yield Static("Settings that differ", classes="table-title",
                             id="cmp-settings-title")
                yield DataTable(id="cmp-settings", cursor_type="row", zebra_stripes=True)
        yield Static(id="cmp-status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.title = "mile-tui"
        self.sub_title = f"compare {len(self.run_dirs)} runs"
        self.query_one("#cmp-status", Static).update(Text("reading the runs…", "dim"))
        self.load()
        self.set_interval(FOLLOW_INTERVAL_S, self.follow)

    def on_resize(self) -> None:
        self._layout()
        self.call_after_refresh(self._fill_tables)

    # ------------------------------------------------------------------ data
    @work(thread=True)
    def load(self, from_start: bool = False) -> None:
        """Read what each run's history gained since the last look (all of it the first
        time, or with `from_start`) in a thread, and redraw when anything changed.

        One look at a time: the followers and event lists belong to whoever holds
        `_lock`, so a reload (ctrl+r) waits for a look in progress.
        """
        with self._lock:
            if from_start:
                self._followers.clear()
            changed, runs, errors, live = False, [], [], 0
            for run_dir in self.run_dirs:
                try:
                    summary = summarize_run(run_dir)
                    follower = self._followers.get(run_dir)
                    fresh = follower is None
                    if follower is None:
                        follower = self._followers[run_dir] = MetricsFollower(run_dir)
                    new = follower.read_new()
                    if fresh or follower.restarted:
                        # A first look, or a file replaced: its history is `new` alone.
                        self._events[run_dir] = []
                        self._runs.pop(run_dir, None)
                    if new or run_dir not in self._runs:
                        self._events[run_dir].extend(new)
                        self._runs[run_dir] = RunData(summary.name, self._events[run_dir],
                                                      summary.settings)
                        changed = True
                    runs.append(self._runs[run_dir])
                    live += summary.status == "running"
                except (OSError, ValueError) as exc:
                    # The engine's messages start with the folder's path: name it once.
                    reason = str(exc).removeprefix(f"{run_dir}: ")
                    errors.append(f"{run_dir.name}: {reason}")
            if changed or from_start or errors != self.errors or live != self.live:
                self.app.call_from_thread(self.show, compare(runs), errors, live)

    def follow(self) -> None:
        """The timer's look at the runs; skipped while the previous look still reads."""
        if not self._lock.locked():
            self.load()

    def show(self, comparison: Comparison, errors: list[str] | None = None,
             live: int = 0) -> None:
        """Draw `comparison`; `errors`: one line per run that could not be read; `live`:
        how many of the runs are training."""
        if not self.is_mounted:  # closed while its runs were being read
            return
        self.comparison = comparison
        self.errors = list(errors or [])
        self.live = live
        self.sub_title = f"compare {len(self.run_dirs)} runs" + (
            f" · following {live} live" if live else "")
        status = self.query_one("#cmp-status", Static)
        status.update("\n".join(f"not shown: {line}" for line in self.errors))
        status.display = bool(self.errors)
        names = comparison.names
        no_eval = {i for i, s in enumerate(comparison.f1) if not s.xs}
        no_loss = {i for i, s in enumerate(comparison.loss) if not s.xs}
        draw(self.query_one("#cmp-f1-chart", PlotextPlot), comparison.f1, "ReaL F1",
             "generation", True)
        for suffix in ("", "-beside"):
            draw(self.query_one(f"#cmp-coverage-chart{suffix}", PlotextPlot), comparison.coverage,
                 "label coverage (labels predicted per image)", "generation", True)
            self.query_one(f"#cmp-coverage-legend{suffix}", Legend).show(
                legend_entries(names, no_eval, "no evaluation yet"))
        self.query_one("#cmp-f1-legend", Legend).show(
            legend_entries(names, no_eval, "no evaluation yet"))
        self._draw_loss()
        self.query_one("#cmp-loss-legend", Legend).show(
            legend_entries(names, no_loss, "no steps yet"))
        self._layout()
        self._fill_tables()

    def _draw_loss(self) -> None:
        """The loss chart, on the scale the user chose (`l`)."""
        if self.comparison is None:
            return
        draw(self.query_one("#cmp-loss-chart", PlotextPlot), self.comparison.loss,
             "training loss (log scale)" if self.log_loss else "training loss",
             "global step", False, y_axis="log" if self.log_loss else "linear")

    def _layout(self) -> None:
        """Side by side when wide; a tab each when narrow."""
        wide = self.size.width >= WIDE
        self.set_class(wide, "-wide")
        tabs = self.query_one(TabbedContent)
        tabs.get_tab("cmp-generations").label = "ReaL F1 · coverage" if wide else "ReaL F1"
        if wide:
            if tabs.active == "cmp-coverage":
                tabs.active = "cmp-generations"
            tabs.hide_tab("cmp-coverage")
        else:
            tabs.show_tab("cmp-coverage")

    def _fill_tables(self) -> None:
        """The best-metrics and differing-settings tables, names wrapped to the width."""
        if self.comparison is None:
            return
        comparison = self.comparison
        rows: list[list[str]] = []
        scores = [row.best_f1 for row in comparison.best]
        known = [f1 for f1 in scores if f1 is not None]
        top = scores.index(max(known)) if known else -1
        for index, row in enumerate(comparison.best):
            rows.append([
                # The best run of all gets the star the evaluation table gives its best.
                (f"{BEST_MARK} " if index == top else "") + metric_text(row.best_f1),
                str(row.best_generation) if row.best_generation is not None else "–",
                metric_text(row.map), metric_text(row.top1), metric_text(row.real_accuracy),
                metric_text(row.precision), metric_text(row.recall),
                f"{row.global_step:,}/{row.total_steps:,}" if row.total_steps else "–"])
        # The name takes what the other columns leave: each of them as wide as its
        # widest cell, and every column has a cell's padding on each side.
        others = sum(max([len(label), *(len(r[i]) for r in rows)]) + 2 * CELL_PADDING
                     for i, label in enumerate(BEST_COLUMNS[1:]))
        budget = self.size.width - others - 2 * CELL_PADDING - SCROLLBAR - 4
        longest = max((len(row.name) for row in comparison.best), default=MIN_NAME)
        width = max(MIN_NAME, min(longest, budget))
        best = self.query_one("#cmp-best", DataTable)
        best.clear(columns=True)
        best.add_column(BEST_COLUMNS[0], key="run", width=width + 4)
        for label in BEST_COLUMNS[1:]:
            best.add_column(Text(label, justify="right"), key=label)
        for index, (summary, cells) in enumerate(zip(comparison.best, rows, strict=True)):
            name = swatch(index)
            name.append(" ")
            name.append(wrap_name(summary.name, width).replace("\n", "\n    "))
            best.add_row(name, *(Text(c, justify="right") for c in cells), height=None)
        self._fill_pseudo(width)
        settings = self.query_one("#cmp-settings", DataTable)
        settings.clear(columns=True)
        title = self.query_one("#cmp-settings-title", Static)
        if not comparison.differing:
            title.update("Settings that differ: none, the runs have the same settings")
            settings.display = False
            return
        title.update("Settings that differ")
        settings.display = True
        settings.add_column("setting", key="setting")
        for index in range(len(comparison.names)):
            settings.add_column(swatch(index), key=str(index))
        for key, values in comparison.differing:
            settings.add_row(key, *values)

    def _fill_pseudo(self, name_width: int) -> None:
        """Pseudo-label precision / recall per generation (LL: and the share of rejected
        labels that were true), the newest generations that fit; hidden when no run has
        them (no true sets in the training data, or no targets in the schema)."""
        assert self.comparison is not None
        rows = self.comparison.pseudo
        table = self.query_one("#cmp-pseudo", DataTable)
        title = self.query_one("#cmp-pseudo-title", Static)
        table.clear(columns=True)
        shown_ = any(rows)
        table.display = title.display = shown_
        if not shown_:
            return
        title.update("Pseudo-labels against the true training sets, per generation: "
                     "precision/recall (LL: · share of rejected that were true)")
        generations = sorted({q.generation for run in rows for q in run})
        cells = [{q.generation: PSEUDO_SEP.join(
            [f"{metric_text(q.precision)}/{metric_text(q.recall)}"]
            + ([f"{q.rejected_true:.0%}"] if q.rejected_true is not None else []))
            for q in run} for run in rows]
        widest = max(len(c) for run in cells for c in run.values())
        room = max(1, (self.size.width - name_width - 12) // (widest + 2 * CELL_PADDING))
        generations = generations[-room:]
        table.add_column("run", key="run", width=name_width + 4)
        for g in generations:
            table.add_column(Text(f"gen {g}", justify="right"), key=str(g))
        for index, (summary, run) in enumerate(zip(self.comparison.best, cells, strict=True)):
            name = swatch(index)
            name.append(" ")
            name.append(wrap_name(summary.name, name_width).replace("\n", "\n    "))
            table.add_row(name, *(Text(run.get(g, "–"), justify="right") for g in generations),
                          height=None)

    # ------------------------------------------------------------------ actions
    def action_tab(self, tab: str) -> None:
        """Show a tab (the coverage tab is the F1 tab's right half when wide)."""
        if tab == "coverage" and self.has_class("-wide"):
            tab = "generations"
        # The panes' ids have a prefix: the app's style sheet styles a `#loss` of its own.
        self.query_one(TabbedContent).active = f"cmp-{tab}"

    def action_reload(self) -> None:
        """Read every run's folder again, from the start."""
        self.load(from_start=True)

    def action_log_loss(self) -> None:
        """Switch the loss chart between a linear and a log scale."""
        self.log_loss = not self.log_loss
        self._draw_loss()
        self.notify("loss on a log scale" if self.log_loss else "loss on a linear scale",
                    timeout=2)

    def action_close(self) -> None:
        """Back to the screen beneath (the runs list)."""
        self.dismiss(None)
