"""The console's polish (#16): keys that fit 80 columns, the help screen, columns that
collapse by priority, messages that say what happened, preferences between launches."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomlkit
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from textual.app import App
from textual.binding import Binding
from textual.dom import DOMNode
from textual.widgets import DataTable, Input, Static
from textual.widgets._footer import FooterKey

from mile_tui.app import MileApp, choose_settings_file, create_app
from mile_tui.checkpoint_browser import (
    CheckpointsApp,
    Column,
    visible_columns,
)
from mile_tui.marks import file_size
from mile_tui.preferences import CONFIG_DIR_ENV, Preferences, preferences_path
from mile_tui.screens.dialogs import ConfirmScreen
from mile_tui.screens.help import HelpScreen
from mile_tui.screens.run import RunScreen
from mile_tui.screens.settings import SettingsScreen
from tests.helpers.pilot import wait_for
from tests.helpers.runs import make_run

SMALL = (80, 24)


def notices(app: App[None]) -> list[str]:
    """The messages of the notifications the app has shown."""
    return [n.message for n in app._notifications]


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


# ---------------------------------------------------------------------------- keys
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


# ---------------------------------------------------------------------------- settings
async def test_ctrl_r_with_unsaved_edits_asks_first(settings_file: Path) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        editor = app.settings_screen.query_one("#field-k_t", Input)
        editor.focus()
        editor.value = "7"
        await pilot.pause()
        assert app.form.values["k_t"] == 7

        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # keep editing: the edit stays
        await pilot.pause()
        assert app.form.values["k_t"] == 7 and editor.value == "7"

        await pilot.press("ctrl+r")
        await pilot.pause()
        await pilot.press("y")  # reload: back to the file's k_t = 3
        await pilot.pause()
        assert app.form.values["k_t"] == 3 and editor.value == "3"

        await pilot.press("ctrl+r")  # nothing unsaved: reloads without a question
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen)


async def test_a_bad_value_typed_on_screen_is_not_blamed_on_the_file(
    settings_file: Path,
) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        editor = app.settings_screen.query_one("#field-rho", Input)
        editor.focus()
        editor.value = "2"
        await pilot.pause()
        message = app.form.errors["rho"]
        assert message.startswith("settings screen: 'rho' must be") and "mile.toml" not in message


async def test_pause_from_the_palette_with_no_run_says_so(settings_file: Path) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        for title, what in (("Pause / resume run", "pause"), ("Stop run", "stop")):
            commands[title].callback()
            await pilot.pause()
            assert any(f"No run to {what}" in n for n in notices(app)), notices(app)


# ---------------------------------------------------------------------------- quitting
async def test_quitting_mid_run_says_where_the_save_is_and_how_to_resume(
    settings_file: Path,
) -> None:
    app = create_app(settings_file, ["epoch_num=100"])
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("f5")
        await wait_for(pilot, lambda: app.run_screen.view.global_step >= 1)
        await pilot.press("ctrl+q")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(pilot, lambda: app.exit_note is not None)
    note = app.exit_note or ""
    run_dirs = list(Path("runs").iterdir())
    assert len(run_dirs) == 1
    saves = sorted(p.name for p in run_dirs[0].glob("*.pt"))
    assert saves and saves[-1] in note and "stop" in saves[-1]
    command = note.splitlines()[-1].split()
    assert command == ["mile-tui", "run", "--headless", "--resume", str(run_dirs[0])]


# ---------------------------------------------------------------------------- browser
def test_sizes_read_as_people_write_them() -> None:
    assert file_size(134_368_983) == "128 MB"
    assert file_size(int(1.2 * 2**30)) == "1.2 GB"
    assert file_size(512 * 1024) == "512 KB"
    assert file_size(int(9.5 * 2**20)) == "9.5 MB"
    assert file_size(900) == "900 B"


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(1, 30)), min_size=1, max_size=10),
    st.integers(0, 200),
)
def test_columns_give_way_by_priority(spec: list[tuple[int, int]], available: int) -> None:
    columns = [Column(f"c{i}", f"c{i}", p) for i, (p, _) in enumerate(spec)]
    widths = {f"c{i}": w for i, (_, w) in enumerate(spec)}
    shown = visible_columns(columns, widths, available)
    keys = [c.key for c in shown]
    assert keys == [c.key for c in columns if c.key in keys]  # display order kept
    assert {c.key for c in columns if c.priority == 0} <= set(keys)
    optional = [c for c in shown if c.priority > 0]
    if optional:  # an optional column is shown only where everything shown fits
        assert sum(widths[k] + 2 for k in keys) <= available
    # A column is never hidden while a less important one, as wide or wider, is shown.
    for hidden in (c for c in columns if c.key not in keys):
        for less in (c for c in optional if c.priority > hidden.priority):
            assert widths[less.key] < widths[hidden.key]


async def test_browser_at_80_columns_keeps_its_key_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the export below writes to a relative path
    make_run(tmp_path, [0.3, 0.5], name="20260101-120000-a-rather-long-run-name-mile")
    app = CheckpointsApp(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        await pilot.pause()
        browser = app.browser
        table = browser.query_one("#saves", DataTable)
        labels = [str(c.label) for c in table.ordered_columns]
        assert {"ReaL F1", "top-1", "size", "gen"} <= set(labels)
        for column in table.ordered_columns:  # no header is cut
            assert column.get_render_width(table) >= len(str(column.label))
        right = table.region.right
        assert right <= SMALL[0] and table.virtual_size.width <= table.size.width
        # The run name is there in full, over as many lines as it takes.
        runs = browser.query_one("#runs", DataTable)
        assert str(runs.get_row_at(0)[0]).replace("\n", "") == browser.runs[0].name

        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one("#export-path", Input).value = "out/w.pt"
        await pilot.press("enter")
        await pilot.pause()
        status = str(browser.query_one("#status", Static).render())
        assert str(Path("out/w.pt").resolve()) in status.replace("\n", "")


# ---------------------------------------------------------------------------- preferences
async def test_theme_and_settings_file_are_remembered_between_launches(
    settings_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "config"))
    path = preferences_path()
    assert path == tmp_path / "config" / "preferences.toml"
    app = create_app(settings_file, preferences=path)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        app.theme = "nord"
        await pilot.pause()
    saved = tomlkit.parse(path.read_text()).unwrap()
    assert saved == {"theme": "nord", "settings_file": str(settings_file.resolve())}

    again = create_app(settings_file, preferences=path)
    async with again.run_test(size=SMALL) as pilot:
        await pilot.pause()
        assert again.theme == "nord"

    # Elsewhere, with no mile.toml and no --config, the console reopens that file.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    prefs = Preferences(**saved)
    chosen, notice = choose_settings_file(None, prefs, autostart=False)
    assert chosen == tmp_path / "mile.toml" and notice and str(chosen) in notice
    assert choose_settings_file(None, prefs, autostart=True)[0] == Path("mile.toml")
    assert choose_settings_file(Path("x.toml"), prefs, autostart=False)[0] == Path("x.toml")


@pytest.mark.parametrize("text", ["theme = [", "theme = 3\n", b"\xff\xfe".decode("latin-1")])
async def test_unreadable_preferences_are_ignored_with_a_notice(
    settings_file: Path, tmp_path: Path, text: str
) -> None:
    path = tmp_path / "prefs.toml"
    path.write_text(text, encoding="utf-8")
    app = create_app(settings_file, preferences=path)
    default_theme = App().theme
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        assert app.theme == default_theme
        assert any("ignored" in n and str(path) in n for n in notices(app)), notices(app)


def test_the_log_panel_keeps_tracebacks_out_and_errors_in() -> None:
    from mile_engine import events as ev
    from mile_tui.widgets.run_view import RunView

    view = RunView()
    view.apply(ev.Message("error", "no space left on device: /runs/x/step-1.pt"))
    view.apply(ev.Message(ev.DETAIL, "Traceback (most recent call last):\n  ..."))
    assert view.log == [("error", "no space left on device: /runs/x/step-1.pt")]


async def test_the_checkpoint_browser_opens_in_the_remembered_theme(tmp_path: Path) -> None:
    from mile_tui.checkpoint_browser import CheckpointsApp

    path = tmp_path / "prefs.toml"
    path.write_text('theme = "nord"\n', encoding="utf-8")
    app = CheckpointsApp(tmp_path / "runs", preferences=path)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        assert app.theme == "nord"
        app.theme = "gruvbox"
        await pilot.pause()
    assert tomlkit.parse(path.read_text(encoding="utf-8"))["theme"] == "gruvbox"


def test_the_phase_panel_follows_positions_between_records() -> None:
    from mile_engine import events as ev
    from mile_tui.widgets.run_view import RunView

    view = RunView()
    view.apply(ev.PhaseStarted(2, 8, "imitation", 50))
    assert view.apply(ev.Position(2, "imitation", 7, 50, 157, 1200, 30.0)) == {"phase"}
    assert (view.generation, view.phase, view.step, view.global_step) == (2, "imitation",
                                                                          7, 157)
    assert not view.losses  # a position carries no loss
