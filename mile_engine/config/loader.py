"""Loading settings: a TOML file, then `--set key=value` overrides, on the defaults.

In a TOML file the keys may sit at the top level or inside the table of their group
(`[mile] k_t = 2`); on the command line (`--set k_t=2`) they are always bare names.
Precedence: command line > file > defaults.
"""

from __future__ import annotations

import codecs
import os
import stat
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mile_engine.config.schema import FIELDS, GROUPS, Settings, SettingsError
from mile_engine.config.validation import build_settings, shown, shown_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

# A settings file is a page of text; reading more than this is a mistake (`--config
# /dev/zero`, a data file named by accident), not a configuration.
MAX_SETTINGS_BYTES = 1 << 20
def flatten(document: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Turn a TOML document whose keys are bare or grouped into tables into bare names."""
    flat: dict[str, Any] = {}
    places: dict[str, str] = {}  # where each key was set, for the "set twice" error

    def put(name: str, value: Any, place: str) -> None:
        if name in flat:
            raise SettingsError(
                f"{source}: {shown(name)} is set twice, {places[name]} and {place}; keep one."
            )
        flat[name], places[name] = value, place

    for key, value in document.items():
        if key in GROUPS and isinstance(value, Mapping):
            for inner, inner_value in value.items():
                if inner in FIELDS and FIELDS[inner].metadata["group"] != key:
                    group = FIELDS[inner].metadata["group"]
                    raise SettingsError(
                        f"{source}: '{inner}' belongs in the [{group}] table, not in [{key}]."
                    )
                put(inner, inner_value, f"in [{key}]")
        else:
            put(key, value, "at the top level")
    return flat


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one `--set key=value`; the value is read as TOML, else taken as a string."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise SettingsError(
            f"--set {shown(text)}: write it as key=value, for example --set k_t=2."
        )
    try:
        document = tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError:
        return key, raw
    except RecursionError:
        raise SettingsError(f"--set {shown(key)}: the value nests too deeply to read.") from None
    # More than one key means the text held a newline and more TOML: that is a string.
    return key, document["v"] if len(document) == 1 else raw


def read_toml(path: Path) -> dict[str, Any]:
    """Read a settings file as bare names; anything unreadable becomes SettingsError.

    Refused with a message: a missing or unreadable file, anything but a regular file
    (a folder, `/dev/zero`, a pipe), more than `MAX_SETTINGS_BYTES`, a UTF-8
    byte-order mark, text that is not UTF-8, invalid TOML, nesting too deep to parse.
    """
    name = shown_path(path)
    text = _decode_settings(_read_settings_bytes(path, name), name)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{name}: not valid TOML: {exc}.") from None
    except RecursionError:
        raise SettingsError(
            f"{name}: arrays or tables nest too deeply to read; a settings file needs none."
        ) from None
    return flatten(document, name)


def _read_settings_bytes(path: Path, name: str) -> bytes:
    """The bytes of a regular file of at most MAX_SETTINGS_BYTES, else SettingsError."""
    try:
        # O_NONBLOCK: opening a named pipe must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise SettingsError(f"{name}: no such settings file.") from None
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read the settings file ({exc.strerror}).") from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        mode = 0
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise SettingsError(f"{name}: is a folder; give a settings file (TOML).")
        raise SettingsError(
            f"{name}: not a regular file (a device, pipe or socket); give a settings file "
            "(TOML)."
        )
    with os.fdopen(fd, "rb") as file:
        try:
            data = file.read(MAX_SETTINGS_BYTES + 1)
        except OSError as exc:
            raise SettingsError(
                f"{name}: cannot read the settings file ({exc.strerror})."
            ) from None
    if len(data) > MAX_SETTINGS_BYTES:
        raise SettingsError(
            f"{name}: larger than {MAX_SETTINGS_BYTES // 2**20} MiB; a settings file is a "
            "page of TOML."
        )
    return data


def _decode_settings(data: bytes, name: str) -> str:
    """UTF-8 text without a byte-order mark, else SettingsError naming the place."""
    if data.startswith(codecs.BOM_UTF8):
        raise SettingsError(
            f"{name}: starts with a UTF-8 byte-order mark; save it as UTF-8 without one."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SettingsError(
            f"{name}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it "
            "as UTF-8."
        ) from None


def apply_allowed_overrides(
    base: Settings, overrides: Iterable[str], allowed: Iterable[str], owner: str
) -> Settings:
    """Apply `--set key=value` strings that may change only the keys in `allowed`.

    Setting another key to its current value is accepted; changing it is an error that
    says it belongs to `owner` (a resumed run, a checkpoint) and lists what may change.
    """
    allowed = frozenset(allowed)
    parsed = dict(parse_override(text) for text in overrides)
    for key, value in parsed.items():
        if key in FIELDS and key not in allowed and value != getattr(base, key):
            raise SettingsError(
                f"--set {key}: '{key}' belongs to {owner} ({getattr(base, key)!r}); "
                f"only these may change: {', '.join(sorted(allowed))}."
            )
    return build_settings(parsed, "--set", base=base) if parsed else base


def load_settings(
    path: Path | None = None, overrides: Iterable[str] = (), missing_ok: bool = False
) -> Settings:
    """Load settings: defaults, then the file at `path`, then `--set` overrides.

    Args:
        path: a TOML settings file, or None for the defaults alone.
        overrides: `key=value` strings from the command line.
        missing_ok: start from the defaults when `path` does not exist.

    Raises:
        SettingsError: with a message naming the file, the key and what is allowed.
    """
    settings = Settings()
    if path is not None and (path.exists() or not missing_ok):
        settings = build_settings(read_toml(path), shown_path(path))
    parsed = dict(parse_override(text) for text in overrides)
    if parsed:
        settings = build_settings(parsed, "--set", base=settings)
    return settings
