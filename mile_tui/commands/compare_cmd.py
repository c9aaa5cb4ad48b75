"""`mile-tui compare`: schemas (softmax, sigmoid, MILe, EM, LL-R, LL-Ct) on one benchmark,
several seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mile_engine.config.schema import SCHEMAS, SettingsError
from mile_tui.options import ConfigOption, SetOption, fail, settings_from_cli


def compare(
    config: ConfigOption = None,
    overrides: SetOption = None,
    schemas: Annotated[
        str, typer.Option(metavar="NAMES", help="Comma-separated schemas to compare: MILe, "
                          "sigmoid, softmax, EM, LL-R, LL-Ct (docs/schemas.md).")
    ] = "softmax,sigmoid,MILe",
    seeds: Annotated[str, typer.Option(metavar="SEEDS", help="Comma-separated seeds.")] = "0,1,2",
    vary: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=V1,V2",
                     help="Sweep a MILe setting: --vary rho=0.1,0.25,0.5 (repeatable; "
                     "variants are crossed)."),
    ] = None,
    out: Annotated[
        Path, typer.Option(metavar="FOLDER",
                           help="Folder for study.md, study.svg, study.json and the runs; "
                           "the same command with the same folder continues a stopped "
                           "study.")
    ] = Path(
        "study"
    ),
) -> None:
    """Train every schema with the same optimizer steps for each seed; write a table and a plot.

    The table gives mean ± sd over seeds of every metric, at the end and at the best
    generation, at the shared rho and at each schema's best swept threshold, beside the
    benchmark's reference F1s.

    Each run trains in a run folder under OUT/runs, with its checkpoints. Ctrl-C stops the
    run in progress at the next step and saves it; the same command then continues the
    study: finished runs are read back, the stopped one resumes from its newest save.
    """
    from mile_engine.control import Control
    from mile_engine.reports.study import (
        StudyFailed,
        StudyStopped,
        make_variants,
        run_study,
        schedule_caveat,
        write_study,
    )
    from mile_engine.runstore.files import CheckpointError
    from mile_tui.headless import EXIT_FAILED, EXIT_INTERRUPTED, StopSignals, exit_code_for

    base = settings_from_cli(config, overrides)
    names = [s.strip() for s in schemas.split(",") if s.strip()]
    unknown = [s for s in names if s not in SCHEMAS]
    if unknown or not names:
        fail(f"--schemas: {', '.join(unknown) or 'nothing'} is not a schema; use "
             f"{', '.join(SCHEMAS)}.")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        variants = make_variants(names, vary or [])
    except ValueError as exc:
        fail(f"--seeds / --vary: {exc}")
    if not seed_list:
        fail("--seeds: give at least one seed, for example --seeds 0,1,2.")
    runs = len(variants) * len(seed_list)
    typer.echo(f"study: {len(variants)} variants x {len(seed_list)} seeds = {runs} runs -> {out}")
    caveat = schedule_caveat(base, variants)
    if caveat:
        typer.echo(caveat, err=True)
    control = Control()
    try:
        with StopSignals(control):
            result = run_study(base, variants, seed_list, out, progress=typer.echo,
                               control=control)
    except SettingsError as exc:
        fail(str(exc))
    except CheckpointError as exc:  # a run's saves cannot be resumed from
        fail(str(exc), exit_code_for(exc))
    except StudyFailed as exc:
        fail(str(exc), EXIT_FAILED)
    except StudyStopped as exc:
        typer.echo(f"{exc}; the same command continues the study.", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    for path in write_study(result, out):
        typer.echo(f"wrote {path}")
