"""The console's preferences between launches: the theme and the last settings file.

A small TOML file in the user's config folder. Preferences are a convenience: a file
that cannot be read or holds nonsense is ignored (the caller shows the notice), and a
file that cannot be written costs nothing but the memory of the choice.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import tomlkit
from textual.app import App
from textual.theme import Theme
from tomlkit.exceptions import TOMLKitError

# Tests (and users with several setups) point this at a folder of their own.
CONFIG_DIR_ENV = "MILE_TUI_CONFIG_DIR"
FILE_NAME = "preferences.toml"


@dataclass
class Preferences:
    """What the console remembers between launches."""

    theme: str = ""
    """The Textual theme last chosen ("" for Textual's default)."""
    settings_file: str = ""
    """The settings file the console last had open, as an absolute path ("" for none)."""


def config_dir() -> Path:
    """The folder of the preferences file.

    `$MILE_TUI_CONFIG_DIR`, else `$XDG_CONFIG_HOME/mile-tui`, else the platform's
    config folder (`%APPDATA%` on Windows, `~/.config` elsewhere).
    """
    if os.environ.get(CONFIG_DIR_ENV):
        return Path(os.environ[CONFIG_DIR_ENV])
    base = os.environ.get("XDG_CONFIG_HOME")
    if not base and sys.platform == "win32":
        base = os.environ.get("APPDATA")
    return (Path(base) if base else Path.home() / ".config") / "mile-tui"


def preferences_path() -> Path:
    """The preferences file (it may not exist yet)."""
    return config_dir() / FILE_NAME


def load_preferences(path: Path | None = None) -> tuple[Preferences, str | None]:
    """Read the preferences; return them and a notice when the file had to be ignored.

    A missing file is the first launch: defaults and no notice.
    """
    path = path or preferences_path()
    try:
        data = tomlkit.parse(path.read_text(encoding="utf-8")).unwrap()
    except FileNotFoundError:
        return Preferences(), None
    except (OSError, UnicodeDecodeError, TOMLKitError) as exc:
        return Preferences(), f"ignored the preferences in {path}: {exc}"
    known = {f.name for f in fields(Preferences)}
    # Unknown keys (a newer version's) and values of the wrong type are skipped one by
    # one: the rest of the file still counts.
    values = {k: v for k, v in data.items() if k in known and isinstance(v, str)}
    skipped = sorted(set(data) - set(values))
    notice = (f"ignored {', '.join(skipped)} in {path}: unknown or not text"
              if skipped else None)
    return Preferences(**values), notice


def save_preferences(prefs: Preferences, path: Path | None = None) -> str | None:
    """Write the preferences; return a notice when they could not be written."""
    path = path or preferences_path()
    doc = tomlkit.document()
    doc.add(tomlkit.comment("mile-tui console preferences, written by the console"))
    for key, value in asdict(prefs).items():
        doc.add(key, value)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(tomlkit.dumps(doc), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        return f"could not save the preferences to {path}: {exc}"
    return None


def remember_theme(app: App[Any], path: Path) -> Preferences:
    """Apply the remembered theme to `app` and remember every later change of theme.

    Returns the preferences read (the caller may remember more in them); a file that
    had to be ignored is reported as a notification.
    """
    prefs, notice = load_preferences(path)
    if notice:
        app.notify(notice, title="Preferences", severity="warning", timeout=8)
    if prefs.theme in app.available_themes:
        app.theme = prefs.theme
    elif prefs.theme:
        app.notify(f"unknown theme {prefs.theme!r} in {path}: ignored", title="Preferences",
                   severity="warning")

    def changed(theme: Theme) -> None:
        if theme.name != prefs.theme:
            prefs.theme = theme.name
            problem = save_preferences(prefs, path)
            if problem:
                app.notify(problem, title="Preferences", severity="warning")

    app.theme_changed_signal.subscribe(app, changed)
    return prefs
