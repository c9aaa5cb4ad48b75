"""What every command shares: the `--config` and `--set` options, and help pages that show
a placeholder only where an option takes a value."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

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
