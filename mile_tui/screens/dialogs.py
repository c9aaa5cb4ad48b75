"""Small modal questions: quitting during a run, creating a missing file, deleting saves."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; dismisses with True for yes.

    A `destructive` question (deleting files) is framed in the error colour and starts
    with "no" focused, so that Enter alone never destroys anything.
    """

    # Here rather than in app.tcss: `mile-tui checkpoints` shows it in an app of its own.
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen #dialog {
        width: 60; max-width: 90%; height: auto; padding: 1 2;
        border: thick $accent; background: $surface;
    }
    ConfirmScreen.destructive #dialog { width: 80; border: thick $error; }
    ConfirmScreen #question { width: 1fr; margin-bottom: 1; }
    ConfirmScreen #dialog-buttons { height: auto; align-horizontal: right; }
    ConfirmScreen #dialog-buttons Button { margin-left: 2; }
    """
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No",
                 destructive: bool = False) -> None:
        super().__init__(classes="destructive" if destructive else None)
        self.question, self.yes, self.no = question, yes, no
        self.destructive = destructive

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, id="question")
            with Horizontal(id="dialog-buttons"):
                yield Button(f"{self.yes} (y)", id="yes",
                             variant="error" if self.destructive else "primary")
                yield Button(f"{self.no} (n)", id="no",
                             variant="primary" if self.destructive else "default")

    def on_mount(self) -> None:
        self.query_one("#no" if self.destructive else "#yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        """Answer from the keyboard."""
        self.dismiss(answer)
