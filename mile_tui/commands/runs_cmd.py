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
from mile_engine.runstore.steering import (
    ACK_TIMEOUT_S,
    Request,
    SteeringError,
    send_request,
    wait_for_ack,
)
from mile_tui.commands.fit import GAP, Col, choose, natural_width, render, terminal_width
from mile_tui.commands.watch_cmd import RunsOption, run_roots
from mile_tui.headless import EXIT_FAILED
from mile_tui.marks import cut_name, file_size
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


def shown_status(run: RunSummary) -> str:
    """The status a person reads: a live run that is paused says so."""
    return "paused" if run.paused else run.status


def status_text(run: RunSummary) -> str:
    """The status as the list prints it; a live run names its host and pid."""
    if run.status == "running" and run.holder is not None and run.holder.pid:
        return f"{shown_status(run)} ({run.holder})"
    return shown_status(run)


def summary_json(run: RunSummary) -> dict[str, Any]:
    """A run summary as JSON-ready data (`runs list --json`)."""
    holder = run.holder
    return {
        "path": str(run.path), "name": run.name, "schema": run.schema,
        "dataset": run.dataset, "model": run.model, "status": run.status,
        "paused": run.paused,
        "holder": None if holder is None else {"host": holder.host, "pid": holder.pid},
        "generation": run.generation, "generations": run.generations,
        "global_step": run.global_step, "total_steps": run.total_steps,
        "best_f1": run.best_f1, "best_generation": run.best_generation,
        "last_activity": run.last_activity, "disk_bytes": run.disk_bytes,
        "settings": run.settings,
    }


# Every column whole, when the terminal is wide enough (or the output is not a terminal).
WIDE = (Col("name", "RUN"), Col("what", "WHAT"), Col("status", "STATUS"),
        Col("progress", "PROGRESS"), Col("best", "BEST REAL F1"),
        Col("when", "LAST ACTIVITY"), Col("size", "SIZE"))
# Shorter cells otherwise, the columns of least use giving way first; the run's name
# stays, cut in its middle if it must (its time stamp and its end tell runs apart).
NARROW = (Col("name", "RUN"), Col("status", "STATUS"),
          Col("progress", "GEN · STEP", justify="right"),
          Col("best", "BEST F1", justify="right"), Col("when", "ACTIVITY", 1),
          Col("size", "SIZE", 2, "right"), Col("holder", "HELD BY", 3), Col("what", "WHAT", 4))
NAME_MIN = 16


def _row(run: RunSummary) -> dict[str, str]:
    best = "-" if run.best_f1 is None else f"{run.best_f1:.4f}" + (
        f" (gen {run.best_generation})" if run.best_generation is not None else "")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.last_activity))
    return {"name": run.name, "what": f"{run.schema} {run.dataset} {run.model}",
            "status": status_text(run),
            "progress": f"gen {run.generation}/{run.generations} step "
                        f"{run.global_step}/{run.total_steps}",
            "best": best, "when": when, "size": file_size(run.disk_bytes)}


def _narrow_row(run: RunSummary) -> dict[str, str]:
    best = "-" if run.best_f1 is None else f"{run.best_f1:.3f}" + (
        f" g{run.best_generation}" if run.best_generation is not None else "")
    return {"name": run.name, "what": f"{run.schema} {run.dataset} {run.model}",
            "status": shown_status(run), "holder": str(run.holder or "") if run.status == "running"
            else "", "progress": f"{run.generation}/{run.generations or '?'} · "
                                 f"{run.global_step}",
            "best": best, "when": time.strftime("%m-%d %H:%M",
                                                time.localtime(run.last_activity)),
            "size": file_size(run.disk_bytes)}


def table_lines(found: list[RunSummary], width: int | None) -> list[str]:
    """The runs as lines of at most `width` cells (None: every column whole)."""
    rows = [_row(r) for r in found]
    if width is None or natural_width(WIDE, rows) <= width:
        return render(WIDE, rows, width)
    rows = [_narrow_row(r) for r in found]
    if not any(row["holder"] for row in rows):
        columns: tuple[Col, ...] = tuple(c for c in NARROW if c.key != "holder")
    else:
        columns = NARROW
    # Columns are chosen with the name at its shortest; it then takes what they leave.
    shortest = [{**row, "name": row["name"][:NAME_MIN]} for row in rows]
    chosen = choose(columns, shortest, width)
    others = natural_width([c for c in chosen if c.key != "name"], rows) + GAP
    room = max(width - others, NAME_MIN)
    return render(chosen, [{**row, "name": cut_name(row["name"], room)} for row in rows],
                  width)


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
    for line in table_lines(found, terminal_width()):
        typer.echo(line)


def resolve_run(run: Path, checkpoint_path: str) -> Path:
    """RUN as given: a run folder, else a run name under checkpoint_path; else exit 2."""
    for path in (run, Path(checkpoint_path) / run):
        if is_run_folder(path):
            return path
    fail(f"{run}: no such run folder (looked under {checkpoint_path}).")


TimeoutOption = Annotated[
    float,
    typer.Option("--timeout", metavar="SECONDS",
                 help="How long to wait for the run to take the request (0: do not wait); "
                 "exit 1 if it does not."),
]


def _steer(request: Request, run: Path, config: Path | None,
           overrides: list[str] | None, timeout: float) -> None:
    """Send `request` and wait for its acknowledgement: exit 2 when it cannot be sent,
    1 when the run does not take it within `timeout` seconds."""
    settings = load(config, overrides)
    if not 0 <= timeout < 1e9:
        fail(f"--timeout {timeout:g}: give a number of seconds, 0 or more.")
    run_dir = resolve_run(run, settings.checkpoint_path)
    try:
        since = send_request(run_dir, request)
    except SteeringError as exc:
        fail(str(exc))
    if timeout == 0:
        typer.echo(f"{request} requested: {run_dir} (the run takes it between two steps "
                   "and says so in its log)")
        return
    try:
        wait_for_ack(run_dir, request, since, timeout)
    except SteeringError as exc:
        fail(str(exc), EXIT_FAILED)
    typer.echo(f"{request} taken by the run: {run_dir}")


@command(runs_app)
def pause(run: RunArgument, config: ConfigOption = None, overrides: SetOption = None,
          timeout: TimeoutOption = ACK_TIMEOUT_S) -> None:
    """Pause a live run before its next step (resume continues it)."""
    _steer("pause", run, config, overrides, timeout)


@command(runs_app)
def resume(run: RunArgument, config: ConfigOption = None, overrides: SetOption = None,
          timeout: TimeoutOption = ACK_TIMEOUT_S) -> None:
    """Let a paused run go on."""
    _steer("resume", run, config, overrides, timeout)


@command(runs_app)
def stop(run: RunArgument, config: ConfigOption = None, overrides: SetOption = None,
          timeout: TimeoutOption = ACK_TIMEOUT_S) -> None:
    """Stop a live run cleanly: a final save, then it ends "stopped" (a headless run
    exits 130, as after Ctrl-C)."""
    _steer("stop", run, config, overrides, timeout)


@command(runs_app)
def save(run: RunArgument, config: ConfigOption = None, overrides: SetOption = None,
          timeout: TimeoutOption = ACK_TIMEOUT_S) -> None:
    """Save a checkpoint of a live run now; it goes on training."""
    _steer("save", run, config, overrides, timeout)
