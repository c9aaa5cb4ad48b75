"""`mile-tui data check`: what a folder data set holds, before a run.

Reads `data_path`, `val_path`, `val_labels_path` and `train_labels_path` from the
settings (`--config`, `--set`) as `dataset = "folder"` would, decodes every image as
training would, and reports the classes, images per class, formats, unreadable files,
the label files' coverage and every problem. Exit 0 when a run could train on it, 2 with the reasons
otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mile_engine.config.schema import Settings
from mile_engine.config.validation import shown_path
from mile_tui.options import FLAG, ConfigOption, Group, SetOption, command, fail, settings_from_cli

data_app = typer.Typer(
    cls=Group,
    help="Look at a data set before training on it.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

# Unreadable files listed by name before "and N more".
LISTED = 10


@command(data_app, "check")
def check(
    config: ConfigOption = None,
    overrides: SetOption = None,
    no_decode: Annotated[
        bool, typer.Option("--no-decode", metavar=FLAG,
                           help="Only list the folders; do not decode every image.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", metavar=FLAG, help="One JSON document on stdout.")
    ] = False,
) -> None:
    """Report what data_path, val_path and the label files hold (dataset = "folder").

    Classes, images per class (training and validation), image formats, unreadable
    files, how many validation images (val_labels_path) and training images
    (train_labels_path) have a label set and how many labels they hold, and every
    problem. Exit codes: 0 a run can train on it, 2 it cannot (the reasons
    are listed).
    """
    settings = settings_from_cli(config, overrides)
    missing = [k for k in ("data_path", "val_path") if not getattr(settings, k)]
    if missing:
        fail(f"data check needs {' and '.join(missing)}: --set data_path=TRAIN_FOLDER "
             "--set val_path=VAL_FOLDER (and optionally --set val_labels_path=FILE), or a "
             "--config file with them.")
    report = build_report(settings, decode=not no_decode)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(render(report))
    raise typer.Exit(0 if report["trainable"] else 2)


def build_report(settings: Settings, decode: bool = True) -> dict[str, Any]:
    """Survey (and decode) the folders the settings name; a JSON-ready report."""
    from mile_engine.data.folder import check_images, survey_folders

    data_path = Path(settings.data_path).expanduser()
    val_path = Path(settings.val_path).expanduser()
    labels = Path(settings.val_labels_path).expanduser() if settings.val_labels_path else None
    survey = survey_folders(data_path, val_path, labels)
    errors, warnings = list(survey.errors), list(survey.warnings)
    train_counts = [len(f) for f in survey.train_files]
    val_counts = [len(f) for f in survey.val_files] or [0] * len(survey.classes)
    report: dict[str, Any] = {
        "data_path": str(data_path),
        "val_path": str(val_path),
        "val_labels_path": str(labels) if labels else None,
        "classes": [
            {"name": c, "train": t, "val": v}
            for c, t, v in zip(survey.classes, train_counts, val_counts, strict=True)
        ],
        "train_images": sum(train_counts),
        "val_images": sum(val_counts),
    }
    if survey.label_sets is not None:
        sets = survey.label_sets
        report["label_sets"] = {
            "form": sets.form, "covered": sets.covered, "images": len(sets.sets),
            "mean_labels": round(sets.mean_labels, 4),
            "empty": sum(1 for s in sets.sets if s == []),
            "unknown_files": len(sets.unknown_files),
        }
    if settings.train_labels_path:
        report.update(_training_sets(Path(settings.train_labels_path).expanduser(), survey,
                                     errors, warnings))
    if decode and survey.classes:
        train = check_images(data_path, survey.train_paths)
        val = check_images(val_path, survey.val_paths)
        report["formats"] = dict((train.formats + val.formats).most_common())
        unreadable = train.unreadable + val.unreadable
        report["unreadable"] = [{"path": p, "reason": r} for p, r in unreadable]
        if unreadable:
            warnings.append(
                f"{len(unreadable)} unreadable file(s) ({len(train.unreadable)} training, "
                f"{len(val.unreadable)} validation): a run skips them and counts them.")
        readable = sum(train.formats.values())
        if survey.train_files and readable < settings.batch_size:
            errors.append(f"data_path: {readable} readable training image(s), fewer than "
                          f"batch_size = {settings.batch_size}.")
        if survey.val_files and not sum(val.formats.values()):
            errors.append("val_path: not one validation image can be decoded.")
    elif survey.train_files and sum(train_counts) < settings.batch_size:
        errors.append(f"data_path: {sum(train_counts)} training image(s), fewer than "
                      f"batch_size = {settings.batch_size}.")
    report["warnings"] = warnings
    report["problems"] = errors
    report["trainable"] = not errors
    return report


def _training_sets(path: Path, survey: Any, errors: list[str],
                   warnings: list[str]) -> dict[str, Any]:
    """The training label file read as a run reads it (`folder.training_sets`): its
    report entries; its refusal goes to `errors`, its notes to `warnings`."""
    from mile_engine.config.schema import SettingsError
    from mile_engine.data.folder import training_sets

    entry: dict[str, Any] = {"train_labels_path": str(path)}
    if not survey.train_files or survey.errors:
        return entry  # the folders' own problems come first; the file names their images
    notes: list[str] = []
    try:
        table = training_sets(path, survey, notes)
    except SettingsError as exc:
        errors.append(str(exc))
        return entry
    warnings.extend(notes)
    sizes = (table >= 0).sum(dim=1)
    entry["train_label_sets"] = {"images": int(table.shape[0]),
                                 "mean_labels": round(float(sizes.float().mean()), 4),
                                 "multi": int((sizes > 1).sum())}
    return entry


def render(report: dict[str, Any]) -> str:
    """The report as text for a terminal."""
    lines = [f"data_path  {shown_path(report['data_path'])}",
             f"val_path   {shown_path(report['val_path'])}"]
    classes = report["classes"]
    if classes:
        width = max(5, *(len(c["name"]) for c in classes))
        lines += ["", f"{len(classes)} classes, {report['train_images']:,} training and "
                  f"{report['val_images']:,} validation images",
                  f"  {'class':<{width}}  {'train':>8}  {'val':>8}"]
        lines += [f"  {c['name']:<{width}}  {c['train']:>8,}  {c['val']:>8,}" for c in classes]
    if "formats" in report:
        lines += ["", "formats    " + (", ".join(f"{k} {v:,}" for k, v in
                                                report["formats"].items()) or "none")]
        bad = report["unreadable"]
        lines.append(f"unreadable {len(bad)}")
        lines += [f"  {shown_path(b['path'])}: {b['reason']}" for b in bad[:LISTED]]
        if len(bad) > LISTED:
            lines.append(f"  ... and {len(bad) - LISTED} more")
    lines.append("")
    if report["val_labels_path"] is None:
        lines.append("label sets none (val_labels_path is empty): each validation image's "
                     "single label is its set")
    elif "label_sets" in report:
        s = report["label_sets"]
        lines.append(
            f"label sets {shown_path(report['val_labels_path'])} ({s['form']}): "
            f"{s['covered']:,} of {s['images']:,} validation images have a set, "
            f"{s['mean_labels']:.2f} labels on average ({s['empty']:,} empty)")
    if "train_label_sets" in report:
        t = report["train_label_sets"]
        lines.append(
            f"training   {shown_path(report['train_labels_path'])}: {t['images']:,} training "
            f"images, {t['mean_labels']:.2f} labels on average ({t['multi']:,} with more "
            "than one)")
    for title, key in (("warnings", "warnings"), ("problems", "problems")):
        if report[key]:
            lines += ["", f"{title}:"] + [f"  - {text}" for text in report[key]]
    lines += ["", "trainable: yes" if report["trainable"] else
              "trainable: no (fix the problems above)"]
    return "\n".join(lines)
