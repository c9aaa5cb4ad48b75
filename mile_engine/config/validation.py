"""Checking settings: each value against its field's limits, then the combinations.

The limits are the table each `Settings` field declares (choices, minimum, maximum);
`validate_value` reads it, so a new setting needs no new check unless its rule is not a
range or a list of names. Messages name the source, the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import reprlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mile_engine.config.schema import (
    CUDA_DEVICE,
    DATASET_CLASSES,
    DEVICES,
    FIELDS,
    MAX_CUDA_INDEX,
    MODEL_CLASSES,
    MODELS,
    Settings,
    SettingsError,
)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def allowed_text(name: str) -> str:
    """Describe in words the values a setting allows."""
    f = FIELDS[name]
    meta = f.metadata
    if name == "model":  # 80-odd names: say what they are, the console lists them
        return (
            '"resnet18-10" or a torchvision classification model name ("resnet18", '
            '"convnext_tiny", "vit_b_16", ...; `mile-tui models` lists them)'
        )
    if meta["choices"]:
        return "one of " + ", ".join(f'"{c}"' for c in meta["choices"])
    kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[
        type(f.default)
    ]
    lo, hi, exclusive = meta["minimum"], meta["maximum"], meta["exclusive"]
    if lo is not None and hi is not None:
        op = "strictly between" if exclusive else "from"
        joiner = "and" if exclusive else "to"
        return f"{kind} {op} {_num(lo)} {joiner} {_num(hi)}"
    if lo is not None:
        return f"{kind} {'>' if exclusive else '>='} {_num(lo)}"
    if name == "device":
        return f'"auto", "cpu", "cuda" or "cuda:N" (N from 0 to {MAX_CUDA_INDEX})'
    return kind


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# Values quoted in messages are cut short: an error is one line, even for a 5,000-deep
# array or a megabyte of text, and repr escapes newlines and undecodable bytes.
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong, _SHORT.maxlevel = 80, 80, 40, 3


def shown(value: Any) -> str:
    """`value` for a one-line message: repr, cut short."""
    return _SHORT.repr(value)


def shown_path(path: str | os.PathLike[str]) -> str:
    """A path for a one-line message: undecodable bytes as \\xNN, newlines escaped."""
    text = os.fspath(path)
    try:
        text = os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name can hold: repr shows it
        return shown(text)
    return text if text.isprintable() else shown(text)


def validate_value(name: str, value: Any, source: str = "settings") -> Any:
    """Check one value against its setting; return it (ints widened to float where needed).

    Raises:
        SettingsError: naming the source, the key, the value and what is allowed.
    """
    if name not in FIELDS:
        raise SettingsError(_unknown_key_message(name, source))
    f = FIELDS[name]
    meta = f.metadata
    expected = type(f.default)
    ok_type = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
    bad = False
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value, ok_type = float(value), True
        except OverflowError:  # an integer too large for a float is out of range
            ok_type = bad = True
    if not ok_type:
        raise SettingsError(
            f"{source}: {name!r} must be {allowed_text(name)}, "
            f"got {shown(value)} ({_type_name(value)})."
        )
    if isinstance(value, str):
        _check_text(name, value, source)
    if name == "model" and value not in MODELS:
        near = [f'"{m}"' for m in MODELS.nearest(value)]
        hint = (" Did you mean " + (", ".join(near[:-1]) + " or " if near[:-1] else "")
                + near[-1] + "?") if near else ""
        raise SettingsError(
            f"{source}: 'model' {shown(value)} is not a torchvision classification model."
            f"{hint} `mile-tui models` lists them all."
        )
    if meta["choices"] and value not in meta["choices"]:
        lowered = {c.lower(): c for c in meta["choices"]}
        close = [lowered[m] for m in difflib.get_close_matches(str(value).lower(), lowered, n=1)]
        hint = f' Did you mean "{close[0]}"?' if close else ""
        raise SettingsError(
            f"{source}: {name!r} must be {allowed_text(name)}, got {shown(value)}.{hint}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        bad = True
    lo, hi, exclusive = meta["minimum"], meta["maximum"], meta["exclusive"]
    if not bad and lo is not None and (value <= lo if exclusive else value < lo):
        bad = True
    if not bad and hi is not None and (value >= hi if exclusive else value > hi):
        bad = True
    if name == "device" and not valid_device(value):
        bad = True
    if bad:
        raise SettingsError(
            f"{source}: {name!r} must be {allowed_text(name)}, got {shown(value)}."
        )
    return value


def _check_text(name: str, value: str, source: str) -> None:
    """Refuse text that cannot be saved in settings.toml or used as a path."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        # An undecodable byte from the command line (`$'\xff'`) arrives as a surrogate.
        raise SettingsError(
            f"{source}: {name!r} holds a byte that is not UTF-8 "
            f"({shown_path(value[exc.start:exc.end])} in {shown_path(value)}); settings are "
            "saved as UTF-8 text, so rename the file or folder, or pick another."
        ) from None
    if "\0" in value:
        raise SettingsError(
            f"{source}: {name!r} holds a NUL character, which no path or setting may "
            f"contain: {shown(value)}."
        )


# Numbers typed by a user: ASCII digits only, as TOML and the device setting read them
# (Python's int() and float() would also take Arabic-Indic or full-width digits and "_").
ASCII_INT = re.compile(r"[+-]?[0-9]+")
ASCII_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_ascii_int(text: str) -> int:
    """An integer written in ASCII digits (surrounding spaces allowed).

    Raises:
        ValueError: anything else, other scripts' digits included.
    """
    text = text.strip()
    if not ASCII_INT.fullmatch(text):
        raise ValueError(f"not an integer in ASCII digits: {text!r}")
    return int(text)


def parse_ascii_float(text: str) -> float:
    """A decimal number written in ASCII (`0.25`, `.5`, `1e-3`; no `nan`, `inf`, `_`).

    Raises:
        ValueError: anything else, other scripts' digits included.
    """
    text = text.strip()
    if not ASCII_FLOAT.fullmatch(text):
        raise ValueError(f"not a number in ASCII digits: {text!r}")
    return float(text)


def valid_device(value: str) -> bool:
    """Whether `value` is a device setting torch parses: auto, cpu, cuda or cuda:0..127."""
    if value in DEVICES:
        return True
    match = CUDA_DEVICE.fullmatch(value)
    return match is not None and int(match.group(1)) <= MAX_CUDA_INDEX


def _unknown_key_message(name: str, source: str) -> str:
    close = difflib.get_close_matches(name, list(FIELDS), n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return (
        f"{source}: {shown(name)} is not a setting.{hint} Known settings: {', '.join(FIELDS)}."
    )


def build_settings(
    values: Mapping[str, Any], source: str = "settings", base: Settings | None = None
) -> Settings:
    """Validate bare-named values on top of `base` (the defaults when None)."""
    checked = {name: validate_value(name, value, source) for name, value in values.items()}
    settings = dataclasses.replace(base or Settings(), **checked)
    check_consistency(settings, source)
    return settings


# The paths a data set cannot do without, and what they hold (for the message).
DATASET_NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "folder": (("data_path", "val_path"),
               "the training and validation folders, one sub-folder per class"),
    "imagenet": (("data_path", "val_path", "real_path"),
                 "the train folder, the validation images and ReaL's real.json"),
}


def check_consistency(settings: Settings, source: str = "settings") -> None:
    """Reject combinations of values that cannot work together."""
    model_classes = MODEL_CLASSES.get(settings.model)
    known = DATASET_CLASSES.get(settings.dataset)
    if model_classes is not None and known is not None and model_classes != known:
        raise SettingsError(
            f"{source}: model '{settings.model}' predicts {model_classes} classes but dataset "
            f"'{settings.dataset}' has {known}; use model = \"resnet18\" or \"resnet50\" (or "
            "any torchvision classifier: its head is sized to the dataset's classes)."
        )
    needs, what = DATASET_NEEDS.get(settings.dataset, ((), ""))
    missing = [k for k in needs if not getattr(settings, k)]
    if missing:
        raise SettingsError(
            f"{source}: dataset '{settings.dataset}' needs {', '.join(missing)} ({what})."
        )


def check_checkpoint_path(settings: Settings) -> None:
    """Refuse a `checkpoint_path` under which no run folder can be made; make nothing.

    Run before a new run builds anything: a file (or a path under one), a broken link, a
    read-only or pseudo file system (`/proc/runs`) would otherwise fail only once the
    trainer is built. Writability is proven by making and removing an empty folder in
    the nearest existing folder, the one test that no permission bit or mount flag fools.

    Raises:
        SettingsError: naming checkpoint_path and what is wrong with it.
    """
    root = Path(settings.checkpoint_path)
    where = f"checkpoint_path {shown_path(root)}"
    existing = root
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing.is_file() else "is not a folder"
        if existing == root:
            raise SettingsError(f"{where}: {what}; name a folder for the runs.")
        raise SettingsError(
            f"{where}: {shown_path(existing)} {what}, so no folder can be made under it."
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mile-write-test-", dir=existing))
    except OSError as exc:
        raise SettingsError(
            f"{where}: cannot make folders in {shown_path(existing)} ({exc.strerror}); name "
            "a writable folder."
        ) from None
