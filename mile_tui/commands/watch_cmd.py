"""`mile-tui watch [RUN_DIR]`: the console opened straight on a run, to watch and steer it.

Without RUN_DIR it opens the newest live run under `checkpoint_path` and the `--runs`
folders (a headless or torchrun run on this machine or a shared file system).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mile_tui.options import ConfigOption, SetOption, fail, settings_from_cli

RunsOption = Annotated[
    list[Path] | None,
    typer.Option("--runs", metavar="DIR",
                 help="Also list the runs in this folder, besides checkpoint_path's "
                 "(repeatable)."),
]


def run_roots(checkpoint_path: str, runs: list[Path] | None) -> list[Path]:
    """The folders whose runs are listed: `checkpoint_path` first, then `--runs`."""
    roots = [Path(checkpoint_path)]
    return roots + [r for r in runs or [] if r not in roots]


def watch(
    run_dir: Annotated[
        Path | None,
        typer.Argument(metavar="RUN_DIR", show_default=False,
                       help="The run folder to open (default: the newest live run)."),
    ] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    runs: RunsOption = None,
) -> None:
    """Open the console on a run (default: the newest one training now): its whole
    history, then live as it trains; p, x and n pause, stop and save it."""
    from mile_engine.runstore.catalog import newest_live_run, summarize_run

    settings = settings_from_cli(config, overrides)
    roots = run_roots(settings.checkpoint_path, runs)
    if run_dir is not None:
        try:
            summarize_run(run_dir)
        except (OSError, ValueError) as exc:
            fail(str(exc))
    else:
        live = newest_live_run(roots)
        if live is None:
            where = ", ".join(str(r) for r in roots)
            fail(f"no run is training under {where}: name a RUN_DIR, or add folders "
                 "with --runs DIR.")
        run_dir = live.path
    from mile_tui.app import run_app

    run_app(config, overrides or [], autostart=False, runs=runs or [], watch=run_dir)
