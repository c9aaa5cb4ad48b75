"""The `mile-tui` command line: the console, headless runs and the tools around them."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from mile_engine import events as ev
from mile_engine.config.schema import Settings, SettingsError
from mile_engine.control import Control
from mile_engine.device import resolve_device
from mile_tui.commands.watch_cmd import RunsOption
from mile_tui.headless import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    SaveTracker,
    StopSignals,
    console_sink,
    exit_code_for,
)
from mile_tui.options import (
    FLAG,
    ConfigOption,
    Group,
    SetOption,
    command,
    fail,
    settings_from_cli,
)

__all__ = ["app", "expand_resume_flag", "main", "run_headless"]

app = typer.Typer(
    name="mile-tui",
    cls=Group,
    help="A training console for MILe (Multi-label Iterated Learning).",
    add_completion=False,
    no_args_is_help=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def console(
    ctx: typer.Context,
    config: ConfigOption = None,
    overrides: SetOption = None,
    runs: RunsOption = None,
) -> None:
    """With no command, open the training console (a Textual app)."""
    if ctx.invoked_subcommand is not None:
        return
    _open_console(config, overrides, autostart=False, runs=runs)


def _open_console(config: Path | None, overrides: list[str] | None, autostart: bool,
                  runs: list[Path] | None = None) -> None:
    # A bad file is reported before the screen opens.
    settings_from_cli(config, overrides, new_run=autostart)
    from mile_tui.app import run_app

    # None: the app picks the file
    run_app(config, overrides or [], autostart=autostart, runs=runs or [])


@command(app)
def run(
    config: ConfigOption = None,
    overrides: SetOption = None,
    headless: Annotated[
        bool, typer.Option("--headless", metavar=FLAG,
                     help="No console: progress on the terminal, for servers.")
    ] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="RUN_DIR|CHECKPOINT",
            help="Continue a run exactly where its last good checkpoint left it: a run "
            "folder, a checkpoint file, or alone the newest run under checkpoint_path. "
            "--set may still change epoch_num, device, precision, log_every and the like.",
        ),
    ] = None,
) -> None:
    """Train one run with the settings; --headless for servers and batch jobs.

    Exit codes: 0 finished, 1 training failed (a full disk included), 2 bad usage,
    settings or checkpoint, 130 stopped by Ctrl-C or `mile-tui runs stop`, 143 stopped by
    SIGTERM.
    """
    if not headless:
        if resume is not None:
            fail("--resume works with --headless; in the console, resume from its "
                 "checkpoints screen.")
        _open_console(config, overrides, autostart=True)
        return
    settings = settings_from_cli(config, overrides, new_run=resume is None)
    # The suggested `mile-tui compare` repeats a new run's settings (a resumed one's
    # live in its folder, not on this command line).
    again = "" if resume is not None else " ".join(
        ([f"--config {shlex.quote(str(config))}"] if config is not None else [])
        + [f"--set {shlex.quote(o)}" for o in overrides or []])
    if not distributed_job():
        raise typer.Exit(run_headless(settings, resume=resume, overrides=overrides or [],
                                      compare_args=again))
    try:
        code = run_headless(settings, resume=resume, overrides=overrides or [],
                            compare_args=again)
    except typer.Exit as exit_:
        code = exit_.exit_code
    # A torchrun worker ends here, skipping the interpreter's shutdown: Gloo may join its
    # worker threads while Python is being torn down and abort the process ("terminate
    # called without an active exception"), and torchrun then reports a finished run as
    # failed. Everything is written and the process group has been left by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_headless(
    settings: Settings, resume: str | None = None, overrides: list[str] | None = None,
    compare_args: str = "",
) -> int:
    """Train with no UI; return the process exit code.

    With `resume`, the run continues in its folder with the settings it saved,
    `overrides` applied on top (see `mile_engine.session.open_run`). `compare_args`: the
    options the closing `mile-tui compare` suggestion repeats.
    """
    from mile_engine import distributed
    from mile_engine.oserrors import describe_os_error
    from mile_engine.runstore.files import CheckpointError
    from mile_engine.session import open_run

    control = Control()
    ctx = distributed.from_environment()
    if ctx.enabled and resume is None and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        # torchrun restarted the job after a failure: go on from the newest good save.
        resume = "latest"
    sink = console_sink(compare_args=compare_args) if ctx.is_main else rank_error_sink(ctx.rank)
    saves = SaveTracker()
    try:
        resolve_device(settings.device)
        distributed.setup(ctx, settings.device)
        trainer = open_run(settings, [sink, saves], control, resume=resume,
                           overrides=overrides or [], dist=ctx)
    except (SettingsError, CheckpointError, OSError) as exc:
        distributed.teardown()
        text = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
        fail(text if ctx.is_main else f"rank {ctx.rank}: {text}", exit_code_for(exc))
    if ctx.enabled and ctx.is_main:
        typer.echo(
            f"torchrun: {ctx.world_size} processes, global batch {settings.batch_size} x "
            f"{ctx.world_size} = {settings.batch_size * ctx.world_size}"
        )
    ended: ev.RunEnded | None = None
    with StopSignals(control) as signals:
        try:
            ended = trainer.train()
        except KeyboardInterrupt:  # a second Ctrl-C: leave at once, no final save
            typer.secho("aborted by a second Ctrl-C: the newest completed checkpoint is kept",
                        fg=typer.colors.YELLOW, err=True)
            _print_resume_hint(saves, ctx.is_main)
            return EXIT_INTERRUPTED
        finally:
            # The DDP wrapper inside the trainer holds the process group: let it go first,
            # so the group's threads end now rather than at interpreter shutdown.
            del trainer
            # Ranks that finished or stopped together (they agree on stops) leave together.
            distributed.teardown(synchronize=ended is not None and ended.status != "failed")
    if ended.status == "stopped":
        _print_resume_hint(saves, ctx.is_main)
    if control.failure is not None and ended.status != "failed":
        # The disk refused a record after the run had ended (its last lines): say so.
        fail(control.failure, EXIT_FAILED)
    return signals.exit_code(ended.status)


def distributed_job() -> bool:
    """Whether this process is one of several started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _print_resume_hint(saves: SaveTracker, is_main: bool) -> None:
    """After a stopped run: where its newest save is and how to go on."""
    hint = saves.hint()
    if hint is not None and is_main:
        typer.secho(hint, fg=typer.colors.YELLOW, err=True)


def rank_error_sink(rank: int) -> Callable[[ev.Event], None]:
    """What a rank other than 0 prints: its errors only, marked with its rank."""

    def sink(event: ev.Event) -> None:
        if isinstance(event, ev.RunEnded) and event.status == "failed":
            print(f"rank {rank}: run failed: {event.error}", file=sys.stderr, flush=True)

    return sink


def expand_resume_flag(args: list[str]) -> list[str]:
    """Give a bare `--resume` its implicit value, "latest" (Typer options need a value)."""
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--resume" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("latest")
    return out


def main() -> None:
    """Entry point of the `mile-tui` script."""
    from mile_tui.commands.checkpoints_cmd import expand_browse_args

    args = expand_browse_args(expand_resume_flag(sys.argv[1:]))
    app(args=args, prog_name="mile-tui")


def _register_subcommands() -> None:
    """Sub-apps live in their own modules, imported only when the commands are registered."""
    from mile_tui.commands.checkpoints_cmd import checkpoints_app
    from mile_tui.commands.compare_cmd import compare
    from mile_tui.commands.data_cmd import data_app
    from mile_tui.commands.export_cmd import export
    from mile_tui.commands.inspect_cmd import eval_checkpoint, inspect, predict
    from mile_tui.commands.models_cmd import models
    from mile_tui.commands.runs_cmd import runs_app
    from mile_tui.commands.sweep_cmd import sweep_app
    from mile_tui.commands.watch_cmd import watch

    app.add_typer(checkpoints_app, name="checkpoints")
    app.add_typer(runs_app, name="runs")
    app.add_typer(data_app, name="data")
    app.add_typer(sweep_app, name="sweep")
    command(app)(compare)
    command(app)(export)
    command(app, "eval")(eval_checkpoint)
    command(app)(predict)
    command(app)(inspect)
    command(app)(models)
    command(app)(watch)


_register_subcommands()
