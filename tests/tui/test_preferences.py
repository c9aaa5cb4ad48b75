"""Preferences between launches: the theme and the settings file are remembered, and an
unreadable preferences file is ignored with a notice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomlkit
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Static

from mile_tui.app import choose_settings_file, create_app
from mile_tui.preferences import CONFIG_DIR_ENV, Preferences, preferences_path
from tests.helpers.pilot import notices, wait_for

SMALL = (80, 24)


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


@pytest.fixture
def reopened(settings_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Last session's settings in one folder, the console started in another folder
    that has no mile.toml but a run under the settings' (relative) checkpoint_path."""
    from tests.helpers.runs import write_run

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    write_run(Path("runs"), "20261203-203104-digits-mile")
    return tmp_path / "mile.toml"


def test_reopening_the_last_sessions_file_says_which_and_how_to_start_afresh(
        reopened: Path) -> None:
    chosen, notice = choose_settings_file(
        None, Preferences(settings_file=str(reopened)), autostart=False)
    assert chosen == reopened and notice is not None
    assert str(reopened) in notice and "last session" in notice
    assert "mile-tui --config mile.toml" in notice


async def test_the_reopened_file_is_a_lasting_warning_and_the_runs_title_names_the_folder(
        reopened: Path) -> None:
    _, notice = choose_settings_file(None, Preferences(settings_file=str(reopened)), False)
    app = create_app(reopened, notice=notice)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        (shown,) = [n for n in app._notifications if n.title == "Settings"]
        assert shown.severity == "warning" and shown.timeout >= 20
        assert shown.message == notice
        await wait_for(pilot, lambda: app.runs_screen.loaded)
        await pilot.pause()
        title = str(app.runs_screen.query_one("#runs-title", Static).render())
        assert title.startswith("1 run in runs · "), title


def test_reopened_settings_notice_small(snap_compare: Any, reopened: Path) -> None:
    # Relative to the folder the console starts in: no temporary path on screen.
    last = Path("..") / "mile.toml"
    _, notice = choose_settings_file(None, Preferences(settings_file=str(last)), False)
    app = create_app(last, notice=notice)

    async def settle(pilot: Pilot[None]) -> None:
        await wait_for(pilot, lambda: app.runs_screen.loaded)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SMALL, run_before=settle)
