"""`mile-tui eval` and `mile-tui predict`: score a saved checkpoint, or list what it sees
in image files. Rich tables on a terminal, `--json` for scripts.

Exit codes: 0 done; 1 `predict` could not read some image (the others are reported);
2 bad usage, settings, checkpoint or validation data.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mile_engine.config.schema import SettingsError
from mile_engine.config.validation import parse_ascii_float
from mile_engine.runstore.files import CheckpointError
from mile_engine.runstore.manifest import check_against_manifest, load_checkpoint
from mile_engine.runstore.records import json_clean
from mile_engine.runstore.saves import resolve_checkpoint
from mile_tui.headless import exit_code_for
from mile_tui.options import FLAG, fail, file_values_from_cli, settings_from_cli

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", metavar="FILE", readable=False,
                 help="Settings file whose data paths and device apply "
                 "(the model and schema stay the checkpoint's)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="KEY=VALUE",
                 help="Override a data or device setting: --set device=cpu, "
                 "--set val_size=500 (repeatable)."),
]
JsonOption = Annotated[
    bool, typer.Option("--json", metavar=FLAG, help="Print JSON, for scripts.")
]
CheckpointArgument = Annotated[
    str,
    typer.Argument(metavar="CHECKPOINT",
                   help="A checkpoint file, a run folder (its newest save), or RUN or "
                   "RUN/FILE under checkpoint_path.", show_default=False),
]
METRIC_COLUMNS = (("top1", "top-1"), ("real_accuracy", "ReaL acc"), ("real_f1", "ReaL F1"),
                  ("real_precision", "precision"), ("real_recall", "recall"),
                  ("coverage", "coverage"))


def _root(config: Path | None, overrides: list[str]) -> Path:
    """checkpoint_path for relative names: the settings the user named, read as every
    command reads them (--config, else ./mile.toml if present, then --set)."""
    return Path(settings_from_cli(config, overrides).checkpoint_path)


def _load(checkpoint: str, config: Path | None, overrides: list[str] | None) -> Any:
    """Resolve and load the checkpoint; every failure exits 2 with one line."""
    from mile_engine.reports.inference import load_model

    values = file_values_from_cli(config)
    overrides = overrides or []
    try:
        path, _ = resolve_checkpoint(checkpoint, _root(config, overrides))
        return load_model(path, values, overrides)
    except (CheckpointError, SettingsError) as exc:
        fail(str(exc), exit_code_for(exc))


def class_list(names: list[str], shown: int = 12) -> str:
    """The first `shown` class names, comma-separated, and how many more."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def parse_rhos(text: str) -> list[float]:
    """`0.05,0.1,0.25` -> [0.05, 0.1, 0.25]; each strictly between 0 and 1."""
    rhos = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = parse_ascii_float(part)
        except ValueError:
            fail(f"--rho {text!r}: '{part}' is not a number in ASCII digits; write e.g. "
                 "--rho 0.05,0.1,0.25.")
        if not 0.0 < value < 1.0:
            fail(f"--rho {text!r}: {value} is outside (0, 1).")
        rhos.append(value)
    return rhos


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def eval_checkpoint(
    checkpoint: CheckpointArgument,
    rho: Annotated[
        str | None,
        typer.Option("--rho", metavar="RHOS",
                     help="Thresholds to sweep, comma-separated: one row each "
                     "(default: the run's rho)."),
    ] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score a checkpoint on its run's validation set: mAP, top-1, ReaL accuracy and F1,
    coverage.

    The numbers are those the run's own evaluation gives the same weights; `--rho` sweeps
    the threshold of the prediction sets so that you can pick an operating point.
    """
    from mile_engine.reports.inference import evaluate_checkpoint

    rhos = parse_rhos(rho) if rho is not None else None
    loaded = _load(checkpoint, config, overrides)
    try:
        rows = evaluate_checkpoint(loaded, rhos)
    except SettingsError as exc:
        fail(str(exc))
    s = loaded.settings
    reference = {k: rows[0][k] for k in ("ref_f1_all", "ref_f1_label")}
    metrics = [{k: r[k] for k in ("rho", *[m for m, _ in METRIC_COLUMNS])} for r in rows]
    if as_json:
        typer.echo(json.dumps(json_clean({
            "checkpoint": str(loaded.path),
            "schema": s.schema, "model": s.model, "dataset": s.dataset,
            "global_step": loaded.meta.get("global_step"),
            "map": rows[0]["map"], "map_classes_left_out": rows[0]["map_classes_left_out"],
            "rows": metrics, "reference": reference, "recorded": loaded.recorded,
            "classes": loaded.class_names,
        }), indent=1))
        return
    table = Table(title=f"{loaded.path}  ({s.schema}, {s.model}, {s.dataset}, "
                  f"step {loaded.meta.get('global_step', '?')})", title_justify="left")
    table.add_column("rho", justify="right")
    for _, title in METRIC_COLUMNS:
        table.add_column(title, justify="right")
    best = max(range(len(rows)), key=lambda i: rows[i]["real_f1"]
               if math.isfinite(rows[i]["real_f1"]) else -1.0)
    for i, r in enumerate(rows):
        style = "bold" if len(rows) > 1 and i == best else None
        table.add_row(f"{r['rho']:g}", *[_num(r[m], 3 if m == "coverage" else 4)
                                         for m, _ in METRIC_COLUMNS], style=style)
    console = Console()
    console.print(table)
    left_out = int(rows[0]["map_classes_left_out"])
    console.print(f"mAP {_num(rows[0]['map'])} (any rho"
                  + (f"; {left_out} classes without a positive left out" if left_out else "")
                  + ")", highlight=False)
    console.print(f"{len(loaded.class_names)} classes: {class_list(loaded.class_names)}",
                  highlight=False)
    console.print(f"reference F1: predict every class {_num(reference['ref_f1_all'])}, "
                  f"the single label {_num(reference['ref_f1_label'])}")
    if loaded.recorded:
        recorded_map = (f"mAP {_num(loaded.recorded.get('map'))}, "
                        if "map" in loaded.recorded else "")
        console.print(f"recorded at save (rho {loaded.recorded.get('rho')}): {recorded_map}"
                      f"ReaL F1 {_num(loaded.recorded.get('real_f1'))}, top-1 "
                      f"{_num(loaded.recorded.get('top1'))}")


def predict(
    checkpoint: CheckpointArgument,
    images: Annotated[list[Path], typer.Argument(
        metavar="IMAGE", help="Image files (any format PIL reads).", show_default=False)],
    rho: Annotated[
        float | None,
        typer.Option("--rho", help="Threshold on sigmoid probabilities (default: the run's)."),
    ] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the labels a checkpoint sees in each image file, with their probabilities.

    A file that cannot be used (missing, not an image, truncated, over the pixel limit, or
    a float image outside [0, 1]) is reported, on stderr one line each, and the others are
    still processed; the exit code is then 1. 16-bit and 32-bit images are scaled to 8 bits.
    """
    from mile_engine.reports.inference import predict_files

    if rho is not None and not 0.0 < rho < 1.0:
        fail(f"--rho {rho}: outside (0, 1).")
    loaded = _load(checkpoint, config, overrides)
    results = predict_files(loaded, images, rho)
    if as_json:
        typer.echo(json.dumps({
            "checkpoint": str(loaded.path),
            "rho": loaded.settings.rho if rho is None else rho,
            "images": [r.to_json() for r in results],
        }, indent=1))
    else:
        table = Table(title=f"{loaded.path}  ({loaded.settings.schema}, "
                      f"rho {loaded.settings.rho if rho is None else rho:g})",
                      title_justify="left")
        table.add_column("image")
        table.add_column("labels (probability)")
        for r in results:
            if r.error is not None:
                table.add_row(r.path, Text(r.error.removeprefix(f"{r.path}: "), style="red"))
            else:
                table.add_row(r.path, ", ".join(f"{lab.name} ({lab.prob:.2f})"
                                                for lab in r.labels))
        Console().print(table)
        for r in results:
            if r.error is not None:  # the table wraps; here each reason is one whole line
                typer.secho(f"error: {r.error}", fg=typer.colors.RED, err=True)
    if any(r.error is not None for r in results):
        raise typer.Exit(1)


def inspect(
    checkpoint: CheckpointArgument,
    overrides: SetOption = None,
    index: Annotated[int, typer.Option("--index", help="First validation image shown.")] = 0,
) -> None:
    """Open the sample inspector (a Textual app) on a checkpoint's validation images."""
    try:
        path, _ = resolve_checkpoint(checkpoint, _root(None, overrides or []))
        # A damaged or unsafe file is refused before any screen opens (a mapped load
        # unpickles the structure, cheaply: the screen loads the weights itself).
        check_against_manifest(path)
        load_checkpoint(path, mmap=True)
    except CheckpointError as exc:
        fail(str(exc), exit_code_for(exc))
    from mile_tui.inspector import InspectorApp
    from mile_tui.preferences import preferences_path

    InspectorApp(path, overrides or [], index, preferences=preferences_path()).run()
