"""What every command shares: the `--config` and `--set` options, loading the settings
they name, the one-line error exit, and help pages that show a placeholder only where an
option takes a value.

The entry point (`mile_tui.cli`) and every sub-command module import these from here, so
no module needs to import the entry point back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from mile_engine.config.loader import load_settings, read_toml
from mile_engine.config.schema import Settings, SettingsError
from mile_engine.config.validation import check_checkpoint_path
from mile_tui.headless import EXIT_USAGE

DEFAULT_CONFIG = Path("mile.toml")

# A flag takes no value: an empty placeholder keeps Typer from printing `<bool>`.
FLAG = ""

ConfigOption = Annotated[
    Path | None,
    # readable=False: the settings loader reports an unreadable file in the tool's own
    # one-line format (Click's check would print a boxed usage error instead).
    typer.Option("--config", "-c", metavar="FILE", readable=False,
                 help="Settings file (default: ./mile.toml if present)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="KEY=VALUE",
                 help="Override one setting: --set k_t=200 (repeatable)."),
]


def _flag_help(option: Any) -> Any:
    """Typer gives `--help` a type placeholder (`--help <bool>`); it is a flag."""
    if option is not None:
        option.metavar = FLAG
    return option


# Typer bundles its own Click: its commands' types are not `click`'s, hence `Any` here.
class Command(TyperCommand):
    """A command whose help shows placeholders only for options that take a value."""

    def get_help_option(self, ctx: Any) -> Any:
        return _flag_help(super().get_help_option(ctx))


class Group(TyperGroup):
    """A group of commands, with help pages like `Command`'s."""

    def get_help_option(self, ctx: Any) -> Any:
        return _flag_help(super().get_help_option(ctx))


def command(app: typer.Typer, name: str | None = None, **kwargs: Any) -> Any:
    """`app.command(...)`, with this module's help pages."""
    return app.command(name, cls=Command, **kwargs)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print a one-paragraph error to stderr and exit with `code`, no traceback."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def settings_from_cli(
    config: Path | None, overrides: list[str] | None, new_run: bool = False
) -> Settings:
    """Load the settings the user named: --config, else ./mile.toml if any, then --set.

    With `new_run`, also refuse a `checkpoint_path` where no run folder can be made,
    before a trainer is built or a folder made. Every refusal is one line, exit 2.
    """
    path = config if config is not None else DEFAULT_CONFIG
    try:
        settings = load_settings(path, overrides or (), missing_ok=config is None)
        if new_run:
            check_checkpoint_path(settings)
    except SettingsError as exc:
        fail(str(exc))
    return settings


def file_values_from_cli(config: Path | None) -> dict[str, Any] | None:
    """The values of the file `--config` names, as bare setting names (None without
    one), for a command that lays them over a saved run's own settings rather than the
    defaults; ./mile.toml is read only when named. A refusal is one line, exit 2, as
    `settings_from_cli`'s."""
    if config is None:
        return None
    try:
        return read_toml(config)
    except SettingsError as exc:
        fail(str(exc))
