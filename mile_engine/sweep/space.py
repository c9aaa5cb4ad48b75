"""The search space of a sweep: `--space` strings read and checked against the
settings, and the values Optuna draws for a trial."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mile_engine.config.loader import parse_override
from mile_engine.config.schema import FIELDS, SettingsError
from mile_engine.config.validation import shown, validate_value


class SweepError(ValueError):
    """A sweep that cannot be started or read: the message says what to fix."""


@dataclass(frozen=True)
class Dimension:
    """One setting to search: a range of numbers (`low`..`high`, integers or not, on a log
    scale or not) or a list of values to choose from."""

    name: str
    kind: Literal["float", "int", "choice"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    def to_text(self) -> str:
        """The `--space` text this dimension was read from (normalised)."""
        if self.kind == "choice":
            return f"{self.name}=" + ",".join(_value_text(c) for c in self.choices)
        flags = (":int" if self.kind == "int" else "") + (":log" if self.log else "")
        low, high = (int(self.low), int(self.high)) if self.kind == "int" else (
            self.low, self.high)
        return f"{self.name}={low}:{high}{flags}"


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_space(text: str) -> Dimension:
    """Read one `--space` string.

    `key=LOW:HIGH` (uniform), `key=LOW:HIGH:log` (log-uniform), `key=LOW:HIGH:int`
    (integers; an integer setting is searched in integers anyway), `:int:log` both;
    `key=A,B,C` a choice among values (`gt_or=true,false`, `schema=MILe,sigmoid`). Every
    key must be a setting and every bound and value one that the setting allows.

    Raises:
        SweepError: one line saying what is wrong and what is allowed.
    """
    where = f"--space {shown(text)}"
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not raw:
        raise SweepError(f"{where}: write it as key=LOW:HIGH[:log][:int] or key=A,B,C, for "
                         "example --space rho=0.03:0.5:log.")
    if key not in FIELDS:
        try:
            validate_value(key, None, where)
        except SettingsError as exc:
            raise SweepError(str(exc).split(" Known settings:")[0]) from None
    default = FIELDS[key].default
    try:
        if ":" in raw:
            return _parse_range(key, raw, default, where)
        return _parse_choices(key, raw, where)
    except SettingsError as exc:
        raise SweepError(str(exc)) from None


def _parse_range(key: str, raw: str, default: Any, where: str) -> Dimension:
    parts = [p.strip() for p in raw.split(":")]
    flags = parts[2:]
    unknown = [f for f in flags if f not in ("log", "int")]
    if len(parts) < 2 or unknown or len(set(flags)) != len(flags):
        raise SweepError(f"{where}: after LOW:HIGH only :log and :int may follow"
                         f"{', not ' + ':'.join(unknown) if unknown else ''}.")
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        raise SweepError(f"{where}: {key!r} is not a number; give a list of values: "
                         f"{key}=A,B.")
    is_int = "int" in flags or isinstance(default, int)
    bounds: list[float] = []
    for part in parts[:2]:
        try:
            number = float(part) if not is_int else int(part)
        except ValueError:
            kind = "an integer" if is_int else "a number"
            raise SweepError(f"{where}: {part!r} is not {kind}.") from None
        if not math.isfinite(number):
            raise SweepError(f"{where}: {part!r} is not a finite number.")
        validate_value(key, number if isinstance(default, float) else int(number), where)
        bounds.append(number)
    low, high = bounds
    if not low < high:
        raise SweepError(f"{where}: LOW must be below HIGH ({low} >= {high}).")
    log = "log" in flags
    if log and low <= 0:
        raise SweepError(f"{where}: a log scale needs LOW above 0, got {low}.")
    return Dimension(key, "int" if is_int else "float", float(low), float(high), log)


def _parse_choices(key: str, raw: str, where: str) -> Dimension:
    values = []
    for part in raw.split(","):
        if not part.strip():
            raise SweepError(f"{where}: an empty value in the list.")
        _, value = parse_override(f"{key}={part.strip()}")
        values.append(validate_value(key, value, where))
    if len(set(map(repr, values))) != len(values):
        raise SweepError(f"{where}: a value is listed twice.")
    return Dimension(key, "choice", choices=tuple(values))


def parse_spaces(texts: Sequence[str]) -> list[Dimension]:
    """Read every `--space`; a key given twice is an error."""
    dims = [parse_space(t) for t in texts]
    names = [d.name for d in dims]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SweepError(f"--space {twice[0]}: given twice; give each setting once.")
    if not dims:
        raise SweepError("give at least one --space, for example --space rho=0.03:0.5:log.")
    return dims


def suggest(trial: Any, dims: Sequence[Dimension]) -> dict[str, Any]:
    """The settings a trial tries: one value per dimension, drawn by Optuna's sampler."""
    params: dict[str, Any] = {}
    for d in dims:
        if d.kind == "choice":
            params[d.name] = trial.suggest_categorical(d.name, list(d.choices))
        elif d.kind == "int":
            params[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high), log=d.log)
        else:
            params[d.name] = trial.suggest_float(d.name, d.low, d.high, log=d.log)
    return params
