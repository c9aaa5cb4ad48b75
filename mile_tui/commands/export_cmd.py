"""`mile-tui export RUN... --format tensorboard|csv --out DIR`: a run's curves for
TensorBoard (and W&B or Aim, which import its files) or for a spreadsheet."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mile_engine.config import SettingsError
from mile_tui.commands.runs_cmd import resolve_run
from mile_tui.options import ConfigOption, SetOption, fail, settings_from_cli


class Format(str, Enum):
    """What `export` writes."""

    tensorboard = "tensorboard"
    csv = "csv"


def export(
    runs: Annotated[
        list[Path],
        typer.Argument(metavar="RUN", show_default=False,
                       help="Run folders, or run names under checkpoint_path."),
    ],
    fmt: Annotated[
        Format,
        typer.Option("--format", "-f", metavar="tensorboard|csv",
                     help="TensorBoard event files (one sub-folder a run) or one CSV file "
                     "(run, step, metric, value, generation, phase)."),
    ] = Format.tensorboard,
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Folder to write to.")
    ] = Path("export"),
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
    run_dirs = [resolve_run(run, settings.checkpoint_path) for run in runs]
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
