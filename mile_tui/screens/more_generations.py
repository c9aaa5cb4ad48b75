"""Resuming a finished run for more generations: the question, and what it needs to know.

A finished run has trained every generation of its `epoch_num`; resumed with its saved
settings it would finish again at once. The console asks instead how far to train, and
resumes with `epoch_num` set to the answer, as `mile-tui run --headless --resume RUN
--set epoch_num=N` does on the command line.
"""

from __future__ import annotations

import json
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from mile_engine.config.validation import parse_ascii_int
from mile_engine.runstore.layout import MANIFEST_FILE


def generations_done(run_dir: Path, checkpoint: Path) -> int | None:
    """How many generations a save of `run_dir` has completed, from the run's manifest
    (None when the manifest does not list it or cannot be read).

    A save at a generation's end (phase "evaluated") has completed that generation; a
    save within one (a stop or a request mid-phase) has completed the one before.
    """
    try:
        data = json.loads((Path(run_dir) / MANIFEST_FILE).read_text(encoding="utf-8"))
        for record in data["checkpoints"]:
            if record["file"] == Path(checkpoint).name:
                generation = int(record["generation"])
                return generation if record["phase"] in ("evaluated", "start") else generation - 1
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


def default_total(done: int, epoch_num: int) -> int:
    """The answer offered first: as many generations again as the run was set to train
    (`epoch_num`), or, where that is unknown, twice what is done (at least one more)."""
    more = epoch_num if epoch_num > 0 else done
    return done + max(more, 1)


def parse_total(text: str, done: int) -> int | str:
    """The number of generations to train to, or a one-line reason why `text` is not one.

    It must be a whole number above `done` (the generations the save has completed).
    """
    if not text.strip():
        return f"Enter a whole number above {done}."
    try:
        total = parse_ascii_int(text)
    except ValueError:
        return f"'{text.strip()}' is not a whole number: enter one above {done}."
    if total <= done:
        return f"Enter a number above {done} (the generations done)."
    return total


class MoreGenerationsScreen(ModalScreen[int | None]):
    """Asks how many generations a finished run should train to; dismisses with that
    total, or None when cancelled. Looks like the console's yes/no question
    (`ConfirmScreen`)."""

    # Here rather than in app.tcss, as ConfirmScreen: the dialog carries its own look.
    DEFAULT_CSS = """
    MoreGenerationsScreen { align: center middle; }
    MoreGenerationsScreen #dialog {
        width: 60; max-width: 90%; height: auto; padding: 1 2;
        border: thick $accent; background: $surface;
    }
    MoreGenerationsScreen #question { width: 1fr; margin-bottom: 1; }
    MoreGenerationsScreen #total-row { height: auto; }
    MoreGenerationsScreen #total-label { width: auto; padding: 1 1 0 0; }
    MoreGenerationsScreen #total { width: 14; }
    MoreGenerationsScreen #total-error { width: 1fr; height: auto; color: $text-error; }
    MoreGenerationsScreen #dialog-buttons { height: auto; align-horizontal: right; }
    MoreGenerationsScreen #dialog-buttons Button { margin-left: 2; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, name: str, done: int, epoch_num: int) -> None:
        """Ask about the run `name`, whose save has completed `done` generations of
        the `epoch_num` it was set to."""
        super().__init__()
        self.run_name = name
        self.done = done
        self.epoch_num = epoch_num

    def compose(self) -> ComposeResult:
        plural = "" if self.done == 1 else "s"
        with Vertical(id="dialog"):
            yield Static(f"{self.run_name} finished {self.done} generation{plural}. "
                         "Resume it to train more generations, from its last save.",
                         id="question")
            with Horizontal(id="total-row"):
                yield Static("Train to generation:", id="total-label")
                yield Input(str(default_total(self.done, self.epoch_num)), id="total",
                            type="text", max_length=9)
            yield Static("", id="total-error")
            with Horizontal(id="dialog-buttons"):
                yield Button("Train (⏎)", id="train", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "train":
            self.submit()
        else:
            self.dismiss(None)

    def submit(self) -> None:
        """Dismiss with the typed total, or say in one line why it is not one."""
        answer = parse_total(self.query_one(Input).value, self.done)
        if isinstance(answer, str):
            self.query_one("#total-error", Static).update(answer)
            return
        self.dismiss(answer)

    def action_cancel(self) -> None:
        """Close without resuming."""
        self.dismiss(None)
