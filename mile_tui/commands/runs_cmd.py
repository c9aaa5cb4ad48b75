"""`mile-tui runs`: list every run folder, and steer a live run from another terminal.

`runs list` shows the runs under `checkpoint_path` and the `--runs` folders, newest
first; `runs pause|resume|stop|save RUN` leaves a request in the run's folder, which its
trainer (headless, torchrun or another console) takes between two steps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from mile_engine.runstore.catalog import RunSummary, is_run_folder, list_runs
from mile_engine.runstore.steering import Request, SteeringError, send_request
from mile_tui.commands.watch_cmd import RunsOption, run_roots
from mile_tui.marks import file_size
from mile_tui.options import FLAG, ConfigOption, Group, SetOption, command, fail
from mile_tui.options import settings_from_cli as load

runs_app = typer.Typer(
    cls=Group,
    help="List every run (status, progress, best ReaL F1) and steer a live one: pause, "
    "resume, stop or save it from another terminal.",
    no_args_is_help=True,
    add_completion=False,
)

RunArgument = Annotated[
    Path,
    typer.Argument(metavar="RUN", show_default=False,
                   help="A run folder, or a run name under checkpoint_path."),
]


def status_text(run: RunSummary) -> str:
    """The status as the list prints it; a running run names its host and pid."""
    if run.status == "running" and run.holder is not None and run.holder.pid:
        return f"running ({run.holder})"
    return run.status


def summary_json(run: RunSummary) -> dict[str, Any]:
    """A run summary as JSON-ready data (`runs list --json`)."""
    holder = run.holder
    return {
        "path": str(run.path), "name": run.name, "schema": run.schema,
        "dataset": run.dataset, "model": run.model, "status": run.status,
        "holder": None if holder is None else {"host": holder.host, "pid": holder.pid},
        "generation": run.generation, "generations": run.generations,
        "global_step": run.global_step, "total_steps": run.total_steps,
        "best_f1": run.best_f1, "best_generation": run.best_generation,
        "last_activity": run.last_activity, "disk_bytes": run.disk_bytes,
        "settings": run.settings,
    }


def _row(run: RunSummary) -> list[str]:
    best = (f"{run.best_f1:.4f} (gen {run.best_generation})"
            if run.best_f1 is not None else "-")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.last_activity))
    return [run.name, f"{run.schema} {run.dataset} {run.model}", status_text(run),
            f"gen {run.generation}/{run.generations} step {run.global_step}/{run.total_steps}",
            best, when, file_size(run.disk_bytes)]


@command(runs_app, "list")
def list_cmd(
    config: ConfigOption = None,
    overrides: SetOption = None,
    runs: RunsOption = None,
    as_json: Annotated[bool, typer.Option("--json", metavar=FLAG,
                                          help="One JSON document.")] = False,
) -> None:
    """Every run under checkpoint_path (and --runs DIR), newest activity first: status
    (running with its host and pid, finished, stopped, failed, interrupted), progress,
    best ReaL F1, last activity, size on disk."""
    settings = load(config, overrides)
    found = list_runs(run_roots(settings.checkpoint_path, runs))
    if as_json:
        typer.echo(json.dumps([summary_json(r) for r in found], indent=1))
        return
    if not found:
        typer.echo("no runs")
        return
    header = ["RUN", "WHAT", "STATUS", "PROGRESS", "BEST REAL F1", "LAST ACTIVITY", "SIZE"]
    rows = [header, *map(_row, found)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                   .rstrip())


def resolve_run(run: Path, checkpoint_path: str) -> Path:
    """RUN as given: a run folder, else a run name under checkpoint_path; else exit 2."""
    for path in (run, Path(checkpoint_path) / run):
        if is_run_folder(path):
            return path
    fail(f"{run}: no such run folder (looked under {checkpoint_path}).")


def _steer(request: Request, run: Path, config: Path | None,
           overrides: list[str] | None) -> None:
    settings = load(config, overrides)
    run_dir = resolve_run(run, settings.checkpoint_path)
    try:
        send_request(run_dir, request)
    except SteeringError as exc:
        fail(str(exc))
    typer.echo(f"{request} requested: {run_dir} (the run takes it between two steps and "
               "says so in its log)")


@command(runs_app)
def pause(run: RunArgument, config: ConfigOption = None, overrides: SetOption = None) -> None:
    """Pause a live run before its next step (resume continues it)."""
    _steer("pause", run, config, overrides)


@command(runs_app)
def resume(run: RunArgument, config: ConfigOption = None, overrides: SetOption = None) -> None:
    """Let a paused run go on."""
    _steer("resume", run, config, overrides)


@command(runs_app)
def stop(run: RunArgument, config: ConfigOption = None, overrides: SetOption = None) -> None:
    """Stop a live run cleanly: a final save, then it ends "stopped" (a headless run
    exits 130, as after Ctrl-C)."""
    _steer("stop", run, config, overrides)


@command(runs_app)
def save(run: RunArgument, config: ConfigOption = None, overrides: SetOption = None) -> None:
    """Save a checkpoint of a live run now; it goes on training."""
    _steer("save", run, config, overrides)
