"""The settings being edited in the console: values, per-key errors, unsaved marks, saving.

Pure Python (no widgets), so that the rules are tested without a terminal. Every check
goes through `mile_engine.config`, so the console shows the engine's own messages.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import Table

from mile_engine.config.loader import parse_override, read_toml
from mile_engine.config.render import render_toml
from mile_engine.config.schema import FIELDS, Settings, SettingsError
from mile_engine.config.validation import (
    build_settings,
    check_consistency,
    parse_ascii_float,
    parse_ascii_int,
    validate_value,
)

# Settings that name something which must already exist on disk when they are set.
# (checkpoint_path is left out: the run creates it; `weights` is a path or a torchvision
# weights name, checked by `weights_warning`.)
PATH_KEYS = ("mnist_path", "data_path", "val_path", "val_labels_path", "real_path")
# What messages about a value typed or chosen on the settings screen start with.
SCREEN_SOURCE = "settings screen"


def format_value(value: Any) -> str:
    """The text an input shows for a setting's value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_text(name: str, text: str) -> Any:
    """Turn what the user typed into a value of the setting's type, where it reads as one.

    Text that does not read as the right type is returned unchanged, so that
    `validate_value` reports it with the engine's message.
    """
    kind = type(FIELDS[name].default)
    text = text.strip()
    if kind is str:
        return text
    if kind is int:
        try:
            return parse_ascii_int(text)
        except ValueError:
            pass
    if kind is float:
        try:
            return parse_ascii_float(text)
        except ValueError:
            pass
    return parse_override(f"{name}={text}")[1] if text else text


class SettingsForm:
    """The settings file as the console edits it.

    Attributes:
        path: the settings file (it may not exist yet).
        saved: every setting's value as on disk (defaults for keys the file leaves out).
        values: every setting's current valid value (the last valid one for a key in error).
        errors: a message per key whose typed text is invalid.
        texts: what the user typed, per key, for keys edited as text.
        missing: whether the file did not exist when last loaded.
    """

    def __init__(self, path: Path, overrides: Iterable[str] = ()) -> None:
        self.path = path
        self.saved: dict[str, Any] = {}
        self.values: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.texts: dict[str, str] = {}
        self.missing = False
        self.reload()
        for text in overrides:
            name, value = parse_override(text)
            self.set_value(name, value, source="--set")

    @property
    def source(self) -> str:
        """The name messages about the file start with: the settings file's path."""
        return str(self.path)

    @property
    def values_source(self) -> str:
        """Where the values now on screen come from, for messages about them: the file
        while nothing is edited, else the settings screen (a bad value typed there is not
        the file's fault)."""
        return SCREEN_SOURCE if self.dirty else self.source

    def reload(self) -> None:
        """Read the file again, dropping unsaved edits.

        Raises:
            SettingsError: the file cannot be read or holds an invalid value.
        """
        self.missing = not self.path.exists()
        settings = Settings() if self.missing else build_settings(
            read_toml(self.path), self.source
        )
        self.saved = settings.to_dict()
        self.values = dict(self.saved)
        self.errors.clear()
        self.texts.clear()

    # ------------------------------------------------------------------ editing
    def set_text(self, name: str, text: str) -> str | None:
        """Record typed text for a setting; return its error message or None."""
        self.texts[name] = text
        return self.set_value(name, parse_text(name, text))

    def set_value(self, name: str, value: Any, source: str = "") -> str | None:
        """Record a value for a setting (edited on screen unless `source` says where it
        comes from); return its error message or None."""
        try:
            self.values[name] = validate_value(name, value, source or SCREEN_SOURCE)
        except SettingsError as exc:
            self.errors[name] = str(exc)
            return str(exc)
        self.errors.pop(name, None)
        return None

    @property
    def dirty(self) -> set[str]:
        """Keys whose value (or typed text) differs from the file."""
        changed = {n for n, v in self.values.items() if v != self.saved[n]}
        return changed | set(self.errors)

    def path_warning(self, name: str) -> str | None:
        """A note when a path setting names something that does not exist (or weights
        a run could not load)."""
        value = self.values.get(name)
        if name == "weights" and value:
            return weights_warning(value, self.values["model"])
        if name in PATH_KEYS and value and not Path(value).expanduser().exists():
            return f"{name}: no such file or folder: {value}"
        return None

    def consistency_error(self) -> str | None:
        """The message of a cross-key problem (model vs dataset, ...), or None.

        Checked on the last valid value of each key, so it shows even while another
        key is being typed.
        """
        from mile_engine.model_inputs import check_input_side, input_side

        try:
            settings = Settings(**self.values)
            check_consistency(settings, self.values_source)
            # The model against the input side, which the run would refuse at its start.
            check_input_side(settings.model, input_side(settings))
        except SettingsError as exc:
            return str(exc)
        return None

    def settings(self) -> Settings:
        """The settings a run would use now.

        Raises:
            SettingsError: the first per-key error, or the cross-key one.
        """
        if self.errors:
            raise SettingsError(next(iter(self.errors.values())))
        settings = dataclasses.replace(Settings(), **self.values)
        check_consistency(settings, self.values_source)
        return settings

    # ------------------------------------------------------------------ saving
    def save(self) -> None:
        """Write the changed keys to the file, keeping its comments and key order.

        A missing file is created as the fully commented default file with the
        current values.

        Raises:
            SettingsError: some typed value is invalid (nothing is written).
        """
        if self.errors:
            raise SettingsError(next(iter(self.errors.values())))
        if self.path.exists():
            text = self.path.read_text(encoding="utf-8")
            changed = {n: self.values[n] for n in self.dirty}
            text = update_toml(text, changed)
        else:
            text = render_toml(dataclasses.replace(Settings(), **self.values))
        _write_atomically(self.path, text)
        self.saved = dict(self.values)
        self.texts.clear()
        self.missing = False


def weights_warning(weights: str, model: str) -> str | None:
    """Why a run of `model` could not start from `weights`, or None: a missing file, an
    unknown weights name, or a torchvision weights file not in torch's cache."""
    from mile_engine.model_inputs import is_enum_name

    if not is_enum_name(weights):
        if Path(weights).expanduser().is_file():
            return None
        return f"weights: no such file: {weights}"
    from mile_engine.model_inputs import cache_file, resolve_enum  # torchvision: names only

    try:
        path = cache_file(resolve_enum(weights, model))
    except SettingsError as exc:
        return str(exc)
    return None if path.is_file() else (
        f"weights: not in torch's cache ({path}); runs never download it."
    )


def weights_names(model: str) -> list[str]:
    """The torchvision weights names `model` takes, for completion ("DEFAULT" first);
    none for a name that is not a model."""
    from torchvision import models as tv_models

    from mile_engine.model_inputs import torchvision_name

    try:
        enum = tv_models.get_model_weights(torchvision_name(model))
    except (SettingsError, ValueError):
        return []
    return ["DEFAULT", *(f"{enum.__name__}.{member.name}" for member in enum)]


def update_toml(text: str, values: Mapping[str, Any]) -> str:
    """Set bare-named `values` in a TOML document, keeping comments and key order.

    A key is written where it already is (top level or its group's table); a new key
    goes into its group's table, which is created at the end when absent.
    """
    doc = tomlkit.parse(text)
    for name, value in values.items():
        group = FIELDS[name].metadata["group"]
        table = doc.get(group)
        if name in doc and not isinstance(doc[name], Table):
            _assign(doc, name, value)
        elif isinstance(table, Table):
            _assign(table, name, value)
        else:
            new = tomlkit.table()
            new.add(name, value)
            doc.add(group, new)
    return tomlkit.dumps(doc)


def _assign(container: Any, name: str, value: Any) -> None:
    """Replace a value in place, keeping the comment that trails it on its line."""
    if name in container:
        old = container[name]
        item = tomlkit.item(value)
        trivia = getattr(old, "trivia", None)
        if trivia is not None:
            item.trivia.comment = trivia.comment
            item.trivia.comment_ws = trivia.comment_ws
            item.trivia.indent = trivia.indent
        container[name] = item
    else:
        container.add(name, value)


def _write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, so a crash never truncates it."""
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
