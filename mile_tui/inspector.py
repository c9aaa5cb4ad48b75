"""The sample inspector: a validation image drawn in the terminal, next to its single
training label, its ReaL set, the model's prediction set and (MILe) the teacher's
pseudo-labels; below, the classes the pseudo-labels add most often.

It looks at a saved checkpoint or at a live trainer. The networks run in a thread worker
on private copies of the weights (`mile_engine.reports.inspection.Inspection`), never on the UI
thread, and a live view refreshes at a bounded rate whatever the training speed.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Static

from mile_engine.reports.inspection import Inspection, PseudoLabelTable, SampleView
from mile_tui.preferences import remember_theme
from mile_tui.screens.help import HELP_BINDING, open_help

if TYPE_CHECKING:
    from mile_engine.trainer import Trainer

HALF_BLOCK = "▀"
# Largest drawing, in terminal cells: two pixel rows per cell.
IMAGE_COLS, IMAGE_ROWS = 48, 24
REFRESH_S = 1.0
# The per-class table of a live run is recomputed every this many refreshes (it scores
# up to LIVE_TABLE_IMAGES images; the sample alone is one forward pass).
TABLE_EVERY = 5
LIVE_TABLE_IMAGES = 512


class HalfBlocks:
    """A Rich renderable drawing an image with '▀': top pixel as foreground, bottom
    pixel as background, so one cell shows two pixel rows."""

    def __init__(self, image: torch.Tensor, cols: int = IMAGE_COLS, rows: int = IMAGE_ROWS):
        """`image` is uint8 [H, W] (grey) or [H, W, 3]; it is scaled to fit the box."""
        self.pixels = fit(image, cols, rows * 2)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(self.pixels.width, self.pixels.width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width, height = self.pixels.size
        data = self.pixels.tobytes()  # RGB, row after row
        pixels = [[tuple(data[i:i + 3]) for i in range(start, start + 3 * width, 3)]
                  for start in range(0, 3 * width * height, 3 * width)]
        for y in range(0, height, 2):
            top = pixels[y]
            bottom = pixels[y + 1] if y + 1 < height else None
            for x, colour in enumerate(top):
                bg = bottom[x] if bottom is not None else None
                style = Style(color=_colour(colour), bgcolor=_colour(bg) if bg else None)
                yield Segment(HALF_BLOCK, style)
            yield Segment.line()


def _colour(rgb: tuple[int, ...]) -> str:
    return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})"


def fit(image: torch.Tensor, width: int, height: int) -> Image.Image:
    """Scale an image to fit `width` x `height` pixels, aspect kept, as an RGB picture.

    Integer up-scaling (nearest) keeps a small grid's pixels sharp; larger images are
    averaged down. PIL does the work, not torch: this runs on the UI thread, and one
    multi-threaded torch kernel there makes the trainer's thread about a third slower
    for the rest of the process (each thread keeps its own OpenMP team; docs/console.md,
    "How it stays fast").
    """
    h, w = int(image.shape[0]), int(image.shape[1])
    mode = "L" if image.ndim == 2 else "RGB"
    rows = image.tolist()  # nested lists: no torch kernel runs here
    flat = [v for row in rows for v in row] if mode == "L" else [
        v for row in rows for pixel in row for v in pixel]
    picture = Image.frombytes(mode, (w, h), bytes(flat))
    if h <= height and w <= width:
        k = max(1, min(width // w, height // h))
        if k > 1:
            picture = picture.resize((w * k, h * k), Image.Resampling.NEAREST)
    else:
        scale = min(width / w, height / h)
        size = (max(1, int(w * scale)), max(1, int(h * scale)))
        picture = picture.resize(size, Image.Resampling.BOX)
    return picture.convert("RGB")


def set_f1(pred: set[int], real: set[int]) -> float:
    """F1 of one prediction set against one ReaL set (the metric, for a single image)."""
    if not real:
        return float("nan")
    return 2 * len(pred & real) / (len(pred) + len(real))


def labels_table(view: SampleView, names: list[str]) -> Table:
    """The label columns: training label, ReaL set, prediction, teacher pseudo-labels."""
    real = set(view.real)
    table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0))
    headers = ["label", "ReaL set", "prediction (p)"]
    if view.pseudo is not None:
        headers.append("teacher (p)")
    for header in headers:
        # A header is never cut; a long class name wraps rather than being cut.
        table.add_column(header, min_width=len(header), overflow="fold")

    def mark(index: int, text: str) -> Text:
        return Text(text, style="green" if index in real else "red")

    columns: list[list[Text]] = [
        [mark(view.label, names[view.label])] if view.label >= 0 else [Text("?")],
        [Text(names[c]) for c in view.real] or [Text("(none)", style="dim")],
        [mark(lab.index, f"{lab.name} {lab.prob:.2f}") for lab in view.prediction],
    ]
    if view.pseudo is not None:
        columns.append([mark(lab.index, f"{lab.name} {lab.prob:.2f}") for lab in view.pseudo]
                       or [Text("(none)", style="dim")])
    for i in range(max(len(c) for c in columns)):
        table.add_row(*[c[i] if i < len(c) else Text("") for c in columns])
    return table


def verdict(view: SampleView) -> Text:
    """Per-image F1 of the prediction set against the single label's, as a sentence."""
    real = set(view.real)
    pred = set(lab.index for lab in view.prediction)
    f1, f1_label = set_f1(pred, real), set_f1({view.label}, real)
    if f1 != f1:  # NaN: no ReaL set
        return Text("no ReaL set for this image", style="dim")
    better = "better than" if f1 > f1_label else ("as good as" if f1 == f1_label else
                                                    "worse than")
    return Text.assemble("F1 against ReaL: prediction ", (f"{f1:.2f}", "bold"),
                         f", single label {f1_label:.2f}  ({better} the label)")


def classes_table(table: PseudoLabelTable | None, schema: str, limit: int = 8) -> Any:
    """The classes the teacher's pseudo-labels add most often, with a bar each."""
    if table is None:
        return Text(f"no pseudo-labels: schema {schema} has no teacher", style="dim")
    rows = table.rows(limit)
    title = Text(f"pseudo-labels added beyond the training label ({table.images} images, "
                 f"{table.labels_per_image:.2f} per image, training label kept in "
                 f"{table.contains_label:.0%})", style="bold")
    out = Table(box=None, padding=(0, 2, 0, 0))
    for name, justify in (("class", "left"), ("added", "right"), ("of images", "right"),
                          ("in ReaL", "right"), ("most with label", "left"), ("", "left")):
        out.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    top = max((r["share"] for r in rows), default=1.0) or 1.0
    for r in rows:
        bar = "█" * max(1, round(16 * r["share"] / top))
        out.add_row(r["name"], str(r["added"]), f"{r['share']:.0%}", f"{r['in_real']:.0%}",
                    r["most_with"], Text(bar, style="cyan"))
    if not rows:
        out.add_row(Text("(the teacher adds no class)", style="dim"), "", "", "", "", "")
    return Group(title, out)


def image_box_for(width: int, height: int) -> tuple[int, int]:
    """The image's box (columns, rows) on a screen of that size: at most 40% of the width
    and what leaves room for the class table, so the labels keep their columns at 80×24."""
    cols = max(16, min(IMAGE_COLS, int(width * 0.4)))
    rows = max(6, min(IMAGE_ROWS, height - 12))
    return cols, rows


class InspectorScreen(Screen[None]):
    """Validation samples of a checkpoint or a live run, with labels and predictions."""

    DEFAULT_CSS = """
    InspectorScreen #top { height: auto; max-height: 26; }
    InspectorScreen #image { width: auto; padding: 0 1; }
    InspectorScreen #labels { width: 1fr; padding: 0 1; }
    InspectorScreen #classes { height: 1fr; padding: 0 1; border-top: solid $primary; }
    InspectorScreen #status { height: auto; max-height: 2; padding: 0 1; color: $text-muted; }
    """
    BINDING_GROUP_TITLE = "Sample inspector"
    BINDINGS = [
        Binding("n,right", "move(1)", "Next", tooltip="the next validation image"),
        Binding("p,left", "move(-1)", "Previous", tooltip="the previous validation image"),
        Binding("r", "random", "Random", tooltip="a validation image at random"),
        Binding("escape,q", "close", "Close"),
    ]

    def __init__(
        self,
        target: Trainer | Path | str,
        overrides: Iterable[str] = (),
        index: int = 0,
        seed: int | None = None,
        image_box: tuple[int, int] | None = None,
    ) -> None:
        """Inspect `target`: a checkpoint path or a live `Trainer`; the image is drawn in
        `image_box` (columns, rows), by default a share of the screen."""
        super().__init__()
        self.target = target
        self.overrides = list(overrides)
        self.index = index
        self.fixed_box = image_box
        self.image_box = image_box or (IMAGE_COLS, IMAGE_ROWS)
        self.inspection: Inspection | None = None
        self.view: SampleView | None = None
        self.table: PseudoLabelTable | None = None
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # one worker at a time runs the private networks
        self._ticks = 0

    @property
    def live(self) -> bool:
        """Whether the screen follows a training run."""
        return not isinstance(self.target, (Path, str))

    def compose(self) -> ComposeResult:
        with Horizontal(id="top"):
            yield Static("", id="image")
            yield Static("loading…", id="labels")
        yield Static("", id="classes")
        yield Static("", id="status")
        yield Footer(compact=True)

    def on_resize(self) -> None:
        if self.fixed_box is not None:
            return
        box = image_box_for(self.size.width, self.size.height)
        if box != self.image_box:
            self.image_box = box
            if self.view is not None:
                cols, rows = box
                self.query_one("#image", Static).update(HalfBlocks(self.view.image, cols, rows))

    def on_mount(self) -> None:
        self.run_worker(self._open, thread=True, group="inspect")
        if self.live:
            self.set_interval(REFRESH_S, self._tick)

    # ------------------------------------------------------------------ workers
    def _open(self) -> None:
        try:
            with self._lock:
                if isinstance(self.target, (Path, str)):
                    inspection = Inspection.from_checkpoint(Path(self.target), self.overrides)
                else:
                    inspection = Inspection.from_trainer(self.target)
                view = inspection.sample(self.index)
                table = inspection.pseudo_table(LIVE_TABLE_IMAGES if self.live else 2048)
        except Exception as exc:  # a bad checkpoint or missing data: say so, stay open
            self.app.call_from_thread(self._failed, exc)
            return
        self.app.call_from_thread(self._opened, inspection, view, table)

    def _compute(self, index: int, refresh: bool, with_table: bool) -> None:
        inspection = self.inspection
        if inspection is None:
            return
        with self._lock:
            if refresh:
                inspection.refresh()
            view = inspection.sample(index)
            table = inspection.pseudo_table(LIVE_TABLE_IMAGES) if with_table else None
        self.app.call_from_thread(self._show, view, table)

    def _failed(self, exc: Exception) -> None:
        self.query_one("#labels", Static).update(Text(f"cannot inspect: {exc}", style="red"))

    def _opened(self, inspection: Inspection, view: SampleView,
                table: PseudoLabelTable | None) -> None:
        self.inspection = inspection
        self._show(view, table)
        self.query_one("#classes", Static).update(
            classes_table(table, inspection.settings.schema))

    # ------------------------------------------------------------------ drawing
    def _show(self, view: SampleView, table: PseudoLabelTable | None) -> None:
        inspection = self.inspection
        if inspection is None:
            return
        self.view = view
        self.index = view.index
        cols, rows = self.image_box
        self.query_one("#image", Static).update(HalfBlocks(view.image, cols, rows))
        self.query_one("#labels", Static).update(
            Group(labels_table(view, inspection.class_names), Text(""), verdict(view)))
        if table is not None:
            self.table = table
            self.query_one("#classes", Static).update(
                classes_table(table, inspection.settings.schema))
        step = "" if inspection.global_step is None else f", step {inspection.global_step}"
        where = "live run" if self.live else str(self.target)
        self.query_one("#status", Static).update(
            f"image {view.index + 1} of {inspection.size}  ·  {inspection.settings.schema}, "
            f"rho {inspection.settings.rho:g}{step}  ·  {where}")

    # ------------------------------------------------------------------ actions
    def _go(self, index: int) -> None:
        if self.inspection is None:
            return
        self.index = index % max(self.inspection.size, 1)
        self.run_worker(lambda: self._compute(self.index, False, False), thread=True,
                        group="inspect")

    def action_move(self, step: int) -> None:
        """Show the next (1) or previous (-1) validation image."""
        self._go(self.index + step)

    def action_random(self) -> None:
        """Show a random validation image."""
        if self.inspection is not None:
            self._go(self._rng.randrange(max(self.inspection.size, 1)))

    def action_close(self) -> None:
        """Leave the inspector (and the app, when it is the app)."""
        if self.inspection is not None:
            self.inspection.close()
        if isinstance(self.app, InspectorApp):
            self.app.exit()
        else:
            self.app.pop_screen()

    def _tick(self) -> None:
        """Bounded-rate refresh of a live view: new weights, same image."""
        if self.inspection is None or self._lock.locked():
            return  # the previous refresh is still running: skip, never queue
        self._ticks += 1
        with_table = self._ticks % TABLE_EVERY == 0
        self.run_worker(lambda: self._compute(self.index, True, with_table), thread=True,
                        group="inspect")


class InspectorApp(App[None]):
    """The inspector as an app of its own, for a checkpoint (`mile-tui inspect`)."""

    TITLE = "mile-tui inspect"
    BINDINGS = [HELP_BINDING]

    def __init__(self, checkpoint: Path, overrides: Iterable[str] = (), index: int = 0,
                 preferences: Path | None = None) -> None:
        """Inspect `checkpoint`; `preferences`: the file with the console's theme."""
        super().__init__()
        self.inspector = InspectorScreen(checkpoint, overrides, index)
        self.preferences_file = preferences

    def on_mount(self) -> None:
        if self.preferences_file is not None:
            remember_theme(self, self.preferences_file)
        self.push_screen(self.inspector)

    def action_help(self) -> None:
        """List every key of the inspector (F1 or ?)."""
        open_help(self)
