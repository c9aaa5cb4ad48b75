"""The `mile-tui` command line: the console, headless runs and the tools around them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from mile_engine.config import Settings, SettingsError, load_settings
from mile_engine.control import Control
from mile_engine.device import resolve_device
from mile_tui.headless import EXIT_USAGE, StopSignals, console_sink

DEFAULT_CONFIG = Path("mile.toml")

app = typer.Typer(
    name="mile-tui",
    help="A training console for MILe (Multi-label Iterated Learning).",
    add_completion=False,
    no_args_is_help=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Settings file (default: ./mile.toml if present)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one setting: --set k_t=200 (repeatable)."),
]


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print a one-paragraph error to stderr and exit with `code`, no traceback."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def settings_from_cli(config: Path | None, overrides: list[str] | None) -> Settings:
    """Load the settings the user named: --config, else ./mile.toml if any, then --set."""
    path = config if config is not None else DEFAULT_CONFIG
    try:
        return load_settings(path, overrides or (), missing_ok=config is None)
    except SettingsError as exc:
        fail(str(exc))


@app.callback(invoke_without_command=True)
def console(
    ctx: typer.Context,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """With no command, open the training console (a Textual app)."""
    if ctx.invoked_subcommand is not None:
        return
    _open_console(config, overrides, autostart=False)


def _open_console(config: Path | None, overrides: list[str] | None, autostart: bool) -> None:
    settings_from_cli(config, overrides)  # a bad file is reported before the screen opens
    from mile_tui.app import run_app

    run_app(config or DEFAULT_CONFIG, overrides or [], autostart=autostart)


@app.command()
def run(
    config: ConfigOption = None,
    overrides: SetOption = None,
    headless: Annotated[
        bool, typer.Option("--headless", help="No console: progress on the terminal, for servers.")
    ] = False,
) -> None:
    """Train one run with the settings; --headless for servers and batch jobs.

    Exit codes: 0 finished, 1 training failed, 2 bad usage or settings,
    130 stopped by Ctrl-C, 143 stopped by SIGTERM.
    """
    if not headless:
        _open_console(config, overrides, autostart=True)
        return
    settings = settings_from_cli(config, overrides)
    raise typer.Exit(run_headless(settings))


def run_headless(settings: Settings) -> int:
    """Train with no UI; return the process exit code."""
    from mile_engine.session import open_run

    control = Control()
    try:
        resolve_device(settings.device)
        trainer = open_run(settings, [console_sink()], control)
    except SettingsError as exc:
        fail(str(exc))
    with StopSignals(control) as signals:
        ended = trainer.train()
    return signals.exit_code(ended.status)


def main() -> None:
    """Entry point of the `mile-tui` script."""
    app(args=sys.argv[1:], prog_name="mile-tui")
