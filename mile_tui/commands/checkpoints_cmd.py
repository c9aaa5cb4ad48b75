"""`mile-tui checkpoints`: browse, show, verify, prune and export the saves of runs.

Every form finds the runs through the same settings as `run` (`--config`, `--set
checkpoint_path=...`). With no subcommand it opens a Textual browser on a terminal and
prints the list otherwise.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from mile_engine.config.schema import Settings
from mile_engine.runstore.catalog import RunSummary, is_run_folder, list_runs, summarize_run
from mile_engine.runstore.files import CheckpointError
from mile_engine.runstore.layout import SUFFIX
from mile_engine.runstore.manifest import Record, delete_checkpoint, load_checkpoint, prune_run
from mile_engine.runstore.saves import export_weights, resolve_checkpoint, verify_run
from mile_tui.commands.fit import Col, choose, render, terminal_width
from mile_tui.headless import exit_code_for
from mile_tui.marks import BEST, NEWEST, cut_left, file_size, plural
from mile_tui.options import FLAG, ConfigOption, Group, SetOption, command, fail
from mile_tui.options import settings_from_cli as load

checkpoints_app = typer.Typer(
    cls=Group,
    help="Browse, show, verify, prune and export the checkpoints of runs.",
    no_args_is_help=False,
    add_completion=False,
)

SUBCOMMANDS = ("browse", "list", "show", "verify", "prune", "delete", "export")
# Options of this command that take a value, for `expand_browse_args`.
_VALUED = ("--config", "-c", "--set", "-s")

JsonFlag = typer.Option("--json", metavar=FLAG, help="One JSON document.")
RunArgument = Annotated[
    Path | None,
    typer.Argument(metavar="RUN",
                   help="A run folder, or a run name under checkpoint_path (default: all)."),
]


def expand_browse_args(args: list[str]) -> list[str]:
    """Turn `checkpoints RUN_DIR` into `checkpoints browse RUN_DIR`.

    A Click group cannot take an optional argument next to its subcommands (the
    argument would swallow the subcommand's name), so the browser is a subcommand and
    the short form is rewritten here.
    """
    if "checkpoints" not in args:
        return args
    i = args.index("checkpoints") + 1
    while i < len(args):
        arg = args[i]
        if arg in _VALUED:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        if arg not in SUBCOMMANDS:
            return [*args[:i], "browse", *args[i:]]
        break
    return args


def settings_from_cli(
    ctx: typer.Context | None, config: Path | None, overrides: list[str] | None
) -> Settings:
    """The settings `run` would use; errors exit 2 with a one-line message.

    `--config` and `--set` may come before the subcommand (`checkpoints --set ... list`)
    or after it; the ones after it win.
    """
    group = ctx.parent.params if ctx is not None and ctx.parent is not None else {}
    config = config if config is not None else group.get("config")
    return load(config, [*(group.get("overrides") or []), *(overrides or [])])


def _root(ctx: typer.Context, config: Path | None, overrides: list[str] | None) -> Path:
    return Path(settings_from_cli(ctx, config, overrides).checkpoint_path)


def _runs(root: Path, run: Path | None) -> list[RunSummary]:
    """The run named on the command line, or every run under `root`."""
    if run is None:
        # Oldest activity first: the newest save ends the listing.
        return sorted(list_runs([root]), key=lambda r: (r.last_save_time, r.name))
    for path in (run, root / run):
        if is_run_folder(path):
            return [summarize_run(path)]
    fail(f"{run}: no such run folder (looked under {root}).")


def _inside(path: Path, root: Path) -> None:
    """Refuse to edit anything outside checkpoint_path."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        fail(f"{path} is outside checkpoint_path ({root}); not touched.")


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _f(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _is_best(run: RunSummary, record: Record) -> bool:
    return run.best is not None and record.file == run.best.file


def _is_newest(run: RunSummary, record: Record) -> bool:
    return run.newest is not None and record.file == run.newest.file


def record_marks(run: RunSummary, record: Record) -> str:
    """"★ best", "● newest", both or nothing: the console's notation for a save."""
    marks = [BEST] if _is_best(run, record) else []
    if _is_newest(run, record):
        marks.append(NEWEST)
    return " ".join(marks)


def _record_json(run: RunSummary, record: Record) -> dict[str, Any]:
    data = record.to_json()
    data["path"] = str(run.path / record.file)
    data["newest"] = _is_newest(run, record)
    data["best"] = _is_best(run, record)
    return data


# A save's cells when the terminal is too narrow for the whole line: each says what it
# is ("gen 3", "F1 0.61"), so no header is needed; the least useful give way first.
SAVE_COLUMNS = (
    Col("file", "file"), Col("gen", "gen"), Col("phase", "phase", 5),
    Col("step", "step", 1), Col("f1", "F1"), Col("top1", "top-1", 4),
    Col("size", "size", 2, "right"), Col("time", "time", 3), Col("marks", "marks"),
)


def _save_cells(run: RunSummary, r: Record) -> dict[str, str]:
    m = r.metrics or {}
    return {"file": r.file, "gen": f"gen {r.generation}", "phase": r.phase,
            "step": f"step {r.global_step}", "f1": f"F1 {_f(m.get('real_f1'))}",
            "top1": f"top-1 {_f(m.get('top1'))}", "size": file_size(r.size),
            "time": time.strftime("%m-%d %H:%M", time.localtime(r.time)),
            "marks": record_marks(run, r)}


def _save_line(run: RunSummary, r: Record) -> str:
    m = r.metrics or {}
    return (f"  {r.file:34s} gen {r.generation:3d} {r.phase:11s} step {r.global_step:8d}"
            f"  F1 {_f(m.get('real_f1')):>6s}  top-1 {_f(m.get('top1')):>6s}"
            f"  {file_size(r.size):>7s}  {_when(r.time)}  {record_marks(run, r)}").rstrip()


def _run_line(run: RunSummary, width: int | None) -> str:
    """`PATH (training): 3 checkpoints`, the path cut from its start to fit."""
    state = " (training)" if run.active else ""
    tail = f"{state}: {plural(len(run.records), 'checkpoint')}"
    path = str(run.path)
    return (path if width is None else cut_left(path, max(width - len(tail), 12))) + tail


def _print_runs(runs: list[RunSummary], width: int | None = None) -> None:
    """Each run, then its saves one a line, in at most `width` cells (None: the whole
    line whatever the width, for files and pipes)."""
    if not runs:
        typer.echo("no runs")
    wide = all(len(_save_line(run, r)) <= width for run in runs for r in run.records
               ) if width is not None else True
    if not wide:
        assert width is not None
        cells = [_save_cells(run, r) for run in runs for r in run.records]
        columns = choose(SAVE_COLUMNS, cells, width - 2, header=False)
        lines = iter(render(columns, cells, width, header=False, indent=2))
    for run in runs:
        typer.echo(_run_line(run, width))
        for r in run.records:
            typer.echo(_save_line(run, r) if wide else next(lines))
        for name in run.unreadable:
            if wide:
                typer.echo(f"  {name:34s} unreadable: damaged or not a mile-tui checkpoint "
                           "(`checkpoints verify` says why)")
            else:
                line = f"  {name}  unreadable (`checkpoints verify` says why)"
                typer.echo(line if len(line) <= (width or 0) else line[:(width or 1) - 1] + "…")


@checkpoints_app.callback(invoke_without_command=True)
def checkpoints(
    ctx: typer.Context, config: ConfigOption = None, overrides: SetOption = None
) -> None:
    """With no subcommand: the browser on a terminal, the list otherwise."""
    if ctx.invoked_subcommand is None:
        browse(ctx, None, config, overrides)


@command(checkpoints_app)
def browse(
    ctx: typer.Context,
    run: RunArgument = None, config: ConfigOption = None, overrides: SetOption = None
) -> None:
    """Open the checkpoint browser (a Textual app); prints the list when not on a terminal."""
    settings = settings_from_cli(ctx, config, overrides)
    root = Path(settings.checkpoint_path)
    if run is not None:
        _runs(root, run)  # a bad name is an error before any screen opens
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        _print_runs(_runs(root, run), terminal_width())
        return
    from mile_tui.checkpoint_browser import CheckpointsApp

    run_dir = None if run is None else (run if is_run_folder(run) else root / run)
    from mile_tui.preferences import preferences_path

    CheckpointsApp(root, run_dir, keep_last=settings.max_checkpoint_num,
                   preferences=preferences_path()).run()


@command(checkpoints_app, "list")
def list_cmd(
    ctx: typer.Context,
    run: RunArgument = None,
    as_json: Annotated[bool, JsonFlag] = False,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """List runs and their saves (generation, step, ReaL F1, top-1, size, time)."""
    root = _root(ctx, config, overrides)
    runs = _runs(root, run)
    if as_json:
        data = [
            {"run": str(r.path), "active": r.active,
             "checkpoints": [_record_json(r, rec) for rec in r.records],
             "unreadable": [str(r.path / name) for name in r.unreadable]}
            for r in runs
        ]
        typer.echo(json.dumps(data, indent=1))
        return
    _print_runs(runs, terminal_width())


def show_checkpoint(ref: str, root: Path) -> dict[str, Any]:
    """Everything about one save: its record, position, metrics and settings."""
    path, record = resolve_checkpoint(ref, root)
    state = load_checkpoint(path)
    meta = state["meta"]
    return {
        "path": str(path),
        "record": record.to_json() if record else None,
        "position": state["position"],
        "metrics": meta.get("metrics"),
        "best_metrics": state.get("best_metrics"),
        "settings": meta.get("settings"),
        "reason": meta.get("reason"),
        "meta": {k: meta.get(k) for k in ("generation", "phase", "step")},
        "time": _when(float(meta.get("time", 0.0))),
    }


@command(checkpoints_app, "show")
def show(
    ctx: typer.Context,
    checkpoint: Annotated[str, typer.Argument(metavar="CHECKPOINT",
                                               help="A checkpoint file, RUN/FILE, or a run.")],
    as_json: Annotated[bool, JsonFlag] = False,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Show one save: its position, metrics and the settings of its run."""
    try:
        info = show_checkpoint(checkpoint, _root(ctx, config, overrides))
    except CheckpointError as exc:
        fail(str(exc), exit_code_for(exc))
    if as_json:
        typer.echo(json.dumps(info, indent=1, default=str))
        return
    typer.echo(f"checkpoint {info['path']} ({info['reason']}, {info['time']})")
    typer.echo(f"position: {describe_position(info['meta'], info['position'])}")
    for title, values in (("metrics", info["metrics"]), ("best so far", info["best_metrics"]),
                          ("settings", info["settings"])):
        typer.echo(f"{title}:" + ("" if values else " -"))
        for key, value in (values or {}).items():
            typer.echo(f"  {key} = {_value(value)}")


def describe_position(meta: dict[str, Any], position: dict[str, Any]) -> str:
    """Where a save stands in its run, in words: what the manifest's phase field means."""
    generation, phase, step = meta.get("generation"), meta.get("phase"), meta.get("step")
    steps = f"global step {position['global_step']}"
    if phase == "evaluated":
        return f"end of generation {generation}, evaluated ({steps})"
    if phase == "start":
        return f"before the first step ({steps})"
    return f"generation {generation}, {phase} phase, after step {step} ({steps})"


def _value(value: Any) -> str:
    """A metric or setting as people read it: floats to 4 decimals, the rest as is."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@command(checkpoints_app)
def verify(
    ctx: typer.Context,
    run: RunArgument = None, config: ConfigOption = None, overrides: SetOption = None
) -> None:
    """Check every save: SHA-256 against the manifest and a safe load. Exit 1 on any failure."""
    failures = 0
    for info in _runs(_root(ctx, config, overrides), run):
        for record, result in verify_run(info.path):
            name = record.file if record else f"{result.path.name} (not in the manifest)"
            if result.ok:
                typer.echo(f"ok      {info.path / name}")
            else:
                failures += 1
                typer.echo(f"FAILED  {info.path / name}: {'; '.join(result.problems)}")
    if failures:
        typer.secho(f"{plural(failures, 'checkpoint')} failed verification", fg="red",
                    err=True)
        raise typer.Exit(1)


@command(checkpoints_app)
def prune(
    ctx: typer.Context,
    run: RunArgument = None,
    keep_last: Annotated[
        int | None,
        typer.Option("--keep-last", "--keep", help="Newest saves to keep (default: "
                     "max_checkpoint_num)."),
    ] = None,
    keep_best: Annotated[int, typer.Option("--keep-best", help="Best saves to keep.")] = 1,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", metavar=FLAG, help="Print, remove nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", metavar=FLAG,
                           help="Allow removing the best and newest saves.")
    ] = False,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Remove old saves: keeps the newest and the best ones; prints what it removes."""
    if keep_last is not None and keep_last < 1:
        # Refused, not rounded up: a typo such as -1 must not delete anything.
        fail(f"--keep-last must be at least 1, got {keep_last}; to remove one save, use "
             "`mile-tui checkpoints delete RUN/FILE`.")
    settings = settings_from_cli(ctx, config, overrides)
    root = Path(settings.checkpoint_path)
    keep = settings.max_checkpoint_num if keep_last is None else keep_last
    verb = "would remove" if dry_run else "removed"
    total = 0
    for info in _runs(root, run):
        _inside(info.path, root)
        try:
            removed = prune_run(info.path, keep, keep_best, dry_run=dry_run, force=force)
        except CheckpointError as exc:
            fail(str(exc), exit_code_for(exc))
        for r in removed:
            typer.echo(f"{verb} {info.path / r.file}")
        total += len(removed)
    if not total:
        typer.echo("nothing to remove")
    else:
        typer.echo(f"{verb} {plural(total, 'checkpoint')}")


@command(checkpoints_app)
def delete(
    ctx: typer.Context,
    checkpoint: Annotated[str, typer.Argument(metavar="CHECKPOINT",
                                               help="A checkpoint file or RUN/FILE.")],
    force: Annotated[
        bool, typer.Option("--force", metavar=FLAG,
                           help="Allow deleting the best or the newest save.")
    ] = False,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Delete one save (never the newest of a run that is still training)."""
    root = _root(ctx, config, overrides)
    try:
        path, _ = resolve_checkpoint(checkpoint, root)
        if not path.is_file() or path.suffix != SUFFIX:
            fail(f"{checkpoint}: name a checkpoint file, not a run.")
        _inside(path, root)
        delete_checkpoint(path.parent, path.name, force=force)
    except CheckpointError as exc:
        fail(str(exc), exit_code_for(exc))
    typer.echo(f"deleted {path}")


@command(checkpoints_app)
def export(
    ctx: typer.Context,
    checkpoint: Annotated[str, typer.Argument(metavar="CHECKPOINT",
                                               help="A checkpoint file, RUN/FILE, or a run.")],
    out_arg: Annotated[Path | None, typer.Argument(metavar="OUT", help="Output file.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", metavar="FILE", help="Output file.")
    ] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Write the model weights alone: a plain state_dict for torchvision's ResNet."""
    target = out or out_arg
    if target is None:
        fail("name the output file: export CHECKPOINT --out FILE.")
    try:
        path, _ = resolve_checkpoint(checkpoint, _root(ctx, config, overrides))
        export_weights(path, target)
    except CheckpointError as exc:
        fail(str(exc), exit_code_for(exc))
    typer.echo(f"exported the weights of {path} to {target}")
