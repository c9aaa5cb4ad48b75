"""The help screen and the footer: the keys each screen declares, listed, and shown
inside 80 columns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.console import Console
from textual.app import App
from textual.binding import Binding
from textual.dom import DOMNode
from textual.widgets import Static
from textual.widgets._footer import FooterKey

from mile_tui.app import MileApp, create_app
from mile_tui.screens.help import HelpScreen
from mile_tui.screens.run import RunScreen
from mile_tui.screens.settings import SettingsScreen

SMALL = (80, 24)


def help_text(app: App[None]) -> str:
    """The help screen's table as plain text."""
    console = Console(width=200, color_system=None)
    with console.capture() as capture:
        console.print(app.screen.query_one("#help-table", Static).content)
    return capture.get()


def lists_key(app: App[None], text: str, binding: Binding) -> bool:
    """Whether the help has a line with each of the binding's keys, then its description."""
    for key in binding.key.split(","):
        shown = app.get_key_display(Binding(key.strip(), binding.action))
        pattern = rf"(^|\s){re.escape(shown)}(\s\S+)*\s\s{re.escape(binding.description)}\b"
        if not any(re.search(pattern, line) for line in text.splitlines()):
            return False
    return True


def declared(screen_class: type[DOMNode]) -> list[Binding]:
    """The bindings a screen class declares (what the help must list)."""
    return [b for b in screen_class.BINDINGS if isinstance(b, Binding)]


@pytest.mark.parametrize("screen_key, screen_class, essential", [
    ("f2", SettingsScreen, {"^s", "f5", "f3", "f4", "^q", "f1", "^p"}),
    ("f3", RunScreen, {"s", "p", "x", "r", "f2", "f4", "^q", "f1", "^p"}),
])
async def test_footer_shows_the_essential_keys_inside_80_columns(
    settings_file: Path, screen_key: str, screen_class: type, essential: set[str]
) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press(screen_key)
        await pilot.pause()
        assert isinstance(app.screen, screen_class)
        keys = list(app.screen.query(FooterKey))
        shown = {k.key_display for k in keys}
        assert essential <= shown
        palette = next(k for k in keys if k.has_class("-command-palette"))
        for key in keys:  # whole on screen, and not under the palette key docked right
            assert key.region.width > 0 and key.region.right <= SMALL[0], key.key_display
            if key is not palette:
                assert key.region.right <= palette.region.x, key.key_display


async def test_f1_and_question_mark_list_every_key_of_the_screen(settings_file: Path) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        for key in ("f1", "question_mark"):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            text = help_text(app)
            # Every key the run screen declares, shown in the footer or not, with what
            # it does; the app's keys too.
            for binding in declared(RunScreen) + declared(MileApp):
                if binding.action == "app.unpause":
                    continue  # what p says while a run is paused (tests/tui/test_sources.py)
                assert lists_key(app, text, binding), (binding.key, text)
            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, RunScreen)

        # In the settings, F1 works while a field has the focus (? would be typed).
        await pilot.press("f2")
        app.settings_screen.focus_setting("rho")
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = help_text(app)
        assert all(lists_key(app, text, b) for b in declared(SettingsScreen)), text
