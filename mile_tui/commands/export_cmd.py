"""`mile-tui export RUN... --format tensorboard|csv --out DIR`: a run's curves for
TensorBoard (and W&B or Aim, which import its files) or for a spreadsheet."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mile_engine.config.schema import SettingsError
from mile_tui.commands.runs_cmd import resolve_run
from mile_tui.options import ConfigOption, SetOption, fail, settings_from_cli


def sweep_runs(root: Path, name: str) -> list[Path]:
    """The run folders under `root` tagged as trials of sweep `name`, by trial number;
    exits 2 when there are none."""
    from mile_engine.runstore.catalog import list_runs
    from mile_engine.sweep import read_tag

    found = []
    for run in list_runs([root]):
        tag = read_tag(run.path)
        if tag is not None and tag.get("sweep") == name:
            trial = tag.get("trial")
            found.append((trial if isinstance(trial, int) else -1, run.path))
    if not found:
        fail(f"no trial of a sweep {name!r} under {root}.")
    return [path for _, path in sorted(found)]


class Format(str, Enum):
    """What `export` writes."""

    tensorboard = "tensorboard"
    csv = "csv"


def export(
    runs: Annotated[
        list[Path] | None,
        typer.Argument(metavar="RUN", show_default=False,
                       help="Run folders, or run names under checkpoint_path."),
    ] = None,
    fmt: Annotated[
        Format,
        typer.Option("--format", "-f", metavar="tensorboard|csv",
                     help="TensorBoard event files (one sub-folder a run) or one CSV file "
                     "(run, step, metric, value, generation, phase)."),
    ] = Format.tensorboard,
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Folder to write to.")
    ] = Path("export"),
    sweep: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Also every trial of the sweep NAME (`mile-tui "
                     "sweep`) under checkpoint_path: its settings side by side in "
                     "TensorBoard's HParams dashboard."),
    ] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Write runs' scalars (losses, lr, every metric at rho and each swept threshold,
    pseudo-label statistics, throughput, system load) at their global steps, and their
    settings as TensorBoard hparams; view with `tensorboard --logdir DIR`.

    A resumed run is one continuous curve: what it recorded past the step it resumed
    from before it stopped is left out. Exit codes: 0 written, 2 a run that cannot be
    read or TensorBoard not installed.
    """
    from mile_engine.reports.export import ExportError, export_csv, export_tensorboard

    settings = settings_from_cli(config, overrides)
    run_dirs = [resolve_run(run, settings.checkpoint_path) for run in runs or []]
    if sweep is not None:
        run_dirs += sweep_runs(Path(settings.checkpoint_path), sweep)
    if not run_dirs:
        fail("name a RUN (or several), or --sweep NAME.")
    try:
        if fmt is Format.csv:
            typer.echo(f"wrote {export_csv(run_dirs, out)}")
            return
        for folder in export_tensorboard(run_dirs, out):
            typer.echo(f"wrote {folder}")
    except (ExportError, SettingsError) as exc:
        fail(str(exc))
    except OSError as exc:
        from mile_engine.oserrors import describe_os_error

        fail(describe_os_error(exc), 1)
    typer.echo(f"view with: tensorboard --logdir {out}")
