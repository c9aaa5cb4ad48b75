"""`mile-tui sweep`: an Optuna search over run settings, joined by any number of workers.

    mile-tui sweep --name rho-ks --space rho=0.03:0.5:log --space k_s=25:200:int --trials 20
    mile-tui sweep --join rho-ks          # another terminal or node: one more worker
    mile-tui sweep show rho-ks            # best trials, importances, a mile.toml fragment
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mile_engine.config.schema import SettingsError
from mile_engine.control import Control
from mile_tui.headless import EXIT_INTERRUPTED, StopSignals, console_sink
from mile_tui.options import ConfigOption, Group, SetOption, command, fail, settings_from_cli

sweep_app = typer.Typer(
    cls=Group,
    help="Search settings with Optuna: each trial an ordinary run, several workers on one "
    "study (a journal file in the runs folder, no server).",
    add_completion=False,
    invoke_without_command=True,
)


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in params.items())


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_report(root: Path, name: str) -> None:
    """Print a sweep's best trials, its parameters' importances and its best settings."""
    from mile_engine.sweep import sweep_report

    report = sweep_report(root, name)
    spec = report.spec
    done = sum(t.state == "complete" for t in report.trials)
    metric = "mAP, else ReaL F1 (auto)" if spec.metric == "auto" else spec.metric
    typer.echo(f"sweep {name}: {len(report.trials)} trials shown of {spec.trials} "
               f"({done} complete among them), maximising {metric}; space: "
               + " ".join(d.to_text() for d in spec.space))
    typer.echo(f"{'trial':>5}  {'state':<8}  {'value':>7}  parameters (run folder)")
    for row in report.trials:
        value = f"{row.value:.4f}" if row.value is not None else "-"
        extra = f" ({row.run_dir})" if row.run_dir else ""
        note = f"  [{row.note}]" if row.note else ""
        typer.echo(f"{row.number:>5}  {row.state:<8}  {value:>7}  "
                   f"{_params_text(row.params)}{extra}{note}")
    if report.importances is not None:
        typer.echo("importance: " + ", ".join(
            f"{k} {v:.2f}" for k, v in report.importances.items()))
    else:
        typer.echo(report.importance_note)
    if report.fragment:
        typer.echo("best settings (mile.toml):")
        typer.echo(report.fragment.rstrip("\n"))
    else:
        typer.echo("no completed trial yet.")


@sweep_app.callback()
def sweep(
    ctx: typer.Context,
    space: Annotated[
        list[str] | None,
        typer.Option("--space", metavar="KEY=SPACE",
                     help="A setting to search (repeatable): LOW:HIGH[:log][:int] or A,B,...: "
                     "rho=0.03:0.5:log, "
                     "k_s=25:200:int, gt_or=true,false."),
    ] = None,
    trials: Annotated[
        int, typer.Option(metavar="N", min=1, help="Trials in all, over every worker.")
    ] = 20,
    name: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Start the sweep NAME (or join it, if it exists "
                     "with the same space)."),
    ] = None,
    join: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Join the existing sweep NAME as one more worker "
                     "(it keeps the space, metric and settings it was started with)."),
    ] = None,
    metric: Annotated[
        str, typer.Option(metavar="METRIC", help="What to maximise: auto (mAP where the "
                          "evaluations have it, else ReaL F1), real_f1, map, ...")
    ] = "auto",
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Search settings: train trials as ordinary runs under checkpoint_path, stop the
    unpromising ones early (Optuna's median pruner, with a save), and print the best.

    Several workers (terminals, machines sharing the runs folder, a Slurm job array) run
    `--join NAME` and draw trials from the one study. Exit codes: 0 the sweep has all
    its trials, 2 bad usage, 130 stopped by Ctrl-C (the stopped trial is queued again).
    """
    if ctx.invoked_subcommand is not None:
        return
    from mile_engine.sweep import (
        SweepError,
        SweepSpec,
        base_settings,
        check_name,
        load_spec,
        open_sweep,
        parse_spaces,
        require_optuna,
        run_worker,
    )

    if (name is None) == (join is None):
        fail("give --name NAME (with --space) to start a sweep, or --join NAME to join one.")
    settings = settings_from_cli(config, overrides)
    root = Path(settings.checkpoint_path)
    try:
        require_optuna()
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if join is not None:
            if space:
                fail("--join takes the sweep's own --space; leave --space out.")
            spec = load_spec(root, check_name(join))
        else:
            assert name is not None
            dims = parse_spaces(space or [])
            spec = open_sweep(root, SweepSpec(check_name(name), tuple(dims), trials, metric,
                                              settings.to_dict()))
        base = base_settings(spec, root, overrides or [])
    except (SweepError, SettingsError) as exc:
        fail(str(exc))
    signals = StopSignals(Control())

    def new_control() -> Control:
        control = Control()
        signals.control = control
        return control

    def started(number: int, params: dict[str, Any]) -> None:
        typer.echo(f"sweep {spec.name}: trial {number}: {_params_text(params)}")

    def ended(result: Any) -> None:
        value = (f" {result.metric or spec.metric} {result.value:.4f}"
                 if result.value is not None else "")
        error = f": {result.error}" if result.error else ""
        typer.echo(f"sweep {spec.name}: trial {result.number} {result.outcome}{value}{error}")

    with signals:
        results = run_worker(root, spec, base, [console_sink()], new_control, started, ended)
    if results and results[-1].outcome == "stopped":
        typer.secho(f"stopped; the trial is queued again: mile-tui sweep --join {spec.name}",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    if results and results[-1].ends_worker:
        fail(results[-1].error or "the sweep cannot go on")
    print_report(root, spec.name)


@command(sweep_app, "show")
def show(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The sweep's name.")],
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """The best trials of a sweep, its parameters' importances and its best settings as a
    mile.toml fragment (paste it into a settings file, or save it and pass --config)."""
    from mile_engine.sweep import SweepError, check_name, require_optuna

    settings = settings_from_cli(config, overrides)
    try:
        require_optuna()
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        print_report(Path(settings.checkpoint_path), check_name(name))
    except SweepError as exc:
        fail(str(exc))
