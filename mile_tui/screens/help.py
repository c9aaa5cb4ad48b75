"""The help screen (F1 or ?): every key of the screen beneath it, and what it does.

Built from that screen's active bindings when it opens, so it lists exactly what the
keys do there and cannot drift from the code: the footer shows the essential keys, this
lists all of them, the ones hidden from the footer too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

EVERYWHERE = "Everywhere"
HELP_BINDING = Binding("f1,question_mark", "help", "Help",
                       tooltip="list every key of this screen and what it does")


@dataclass
class KeyHelp:
    """One action of a screen: the keys bound to it and what it does."""

    section: str
    keys: list[str]
    description: str
    enabled: bool


def own_actions(node: DOMNode) -> set[str]:
    """The actions bound by this project's classes in `node`'s ancestry (not Textual's)."""
    actions = set()
    for cls in type(node).__mro__:
        if cls.__module__.startswith("textual."):
            continue
        for binding in vars(cls).get("BINDINGS", []):
            if isinstance(binding, Binding):
                actions.add(binding.action)
    return actions


def section_of(node: DOMNode, action: str) -> str:
    """The heading a binding goes under: its screen's title, or "Everywhere" for the
    app's keys and the keys every Textual screen has (Tab, copy)."""
    if isinstance(node, Screen) and action in own_actions(node):
        return node.BINDING_GROUP_TITLE or f"{type(node).__name__} screen"
    return EVERYWHERE


def keys_of(screen: Screen[Any]) -> list[KeyHelp]:
    """The actions bound on `screen` now, each with all its keys, screen keys first.

    The keys of the focused widget (moving in a table, editing a field) are left out:
    they are Textual's usual ones, and the help's note says so.
    """
    app = screen.app
    found: dict[tuple[str, str], KeyHelp] = {}
    for node, binding, enabled, _tooltip in screen.active_bindings.values():
        if binding.system or not binding.description or not isinstance(node, (App, Screen)):
            continue
        description = binding.description
        if binding.tooltip:
            description = f"{description}: {binding.tooltip}"
        section = section_of(node, binding.action)
        entry = found.setdefault((section, binding.action),
                                 KeyHelp(section, [], description, enabled))
        key = app.get_key_display(binding)
        if key not in entry.keys:
            entry.keys.append(key)
    palette = app.COMMAND_PALETTE_BINDING
    if app.ENABLE_COMMAND_PALETTE and palette in screen.active_bindings:
        found[(EVERYWHERE, "command_palette")] = KeyHelp(
            EVERYWHERE, [app.get_key_display(screen.active_bindings[palette].binding)],
            "Command palette: search every command, the themes too", True)
    # The screen's own keys first, then the ones that work everywhere (stable sort).
    return sorted(found.values(), key=lambda k: k.section == EVERYWHERE)


def help_table(entries: list[KeyHelp]) -> Table:
    """The keys as a two-column table, one section per owner."""
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=True)
    table.add_column("key", style="bold", no_wrap=True, justify="right")
    table.add_column("what it does", ratio=1)
    section = None
    for entry in entries:
        if entry.section != section:
            if section is not None:
                table.add_row("", "")
            section = entry.section
            table.add_row("", Text(section, style="bold underline"))
        what = Text(entry.description)
        if not entry.enabled:
            what.append("  (not now)", style="dim")
        table.add_row(Text(" ".join(entry.keys), style="bold"), what)
    return table


class HelpScreen(ModalScreen[None]):
    """The keys of the screen beneath, in a box over it; Esc closes."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 90; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    HelpScreen #help-keys { height: auto; max-height: 100%; scrollbar-gutter: stable; }
    HelpScreen #help-note { color: $text-muted; margin-top: 1; }
    """
    BINDINGS = [Binding("escape,q,f1,question_mark", "close", "Close")]

    def __init__(self, screen: Screen[Any]) -> None:
        """Explain the keys of `screen` (the one the user was on)."""
        super().__init__()
        self.entries = keys_of(screen)

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Keys"
            box.border_subtitle = "Esc closes"
            with VerticalScroll(id="help-keys"):
                yield Static(help_table(self.entries), id="help-table")
                yield Static("Arrows, Tab, Enter and the usual editing keys move and edit in "
                             "the focused table or field; the mouse works too.", id="help-note")

    def action_close(self) -> None:
        """Back to the screen the help is about."""
        self.dismiss(None)


def open_help(app: App[Any]) -> None:
    """Show the help for the current screen (pressing F1 in the help does nothing more)."""
    if not isinstance(app.screen, HelpScreen):
        app.push_screen(HelpScreen(app.screen))
