"""Fuzzing the settings loader (issue #14): random TOML documents and `--set` strings.

Whatever comes in, the loader gives valid settings or a `SettingsError` with a one-line
message naming where the problem is; nothing else escapes and nothing is created. A few
examples go through the real command line too: exit 2 and that same line, no traceback,
no run folder.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import tomlkit
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mile_engine.config import FIELDS, GROUPS, Settings, SettingsError, load_settings
from mile_tui.cli import app

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TINY = ["k_t=3", "k_s=3", "epoch_num=2", "batch_size=8", "num_workers=0", "device=cpu",
        "val_size=64"]

# -- strategies -------------------------------------------------------------------------

KEYS = st.one_of(st.sampled_from(sorted(FIELDS)), st.sampled_from(sorted(GROUPS)),
                 st.text(max_size=10))
SCALARS = st.one_of(
    st.integers(),
    st.sampled_from([0, 1, 2, -1, 2**31, 2**63 - 1, 2**63, 2**64, 10**30]),
    st.floats(),  # NaN and infinities included
    st.sampled_from([0.0, -0.0, 1e-320, 1e308, 0.5, 9.99]),
    st.text(),  # quotes, backslashes, newlines, control characters, any plane
    st.sampled_from(["cpu", "cuda:\u0663", "cuda:127", "MILe", "digits", "resnet50", "a\nb"]),
    st.booleans(),
    st.dates(),
    st.datetimes(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)
# A document: keys at the top level and in tables, valid names with any value.
DOCUMENTS = st.dictionaries(
    KEYS, VALUES | st.dictionaries(st.sampled_from(sorted(FIELDS)) | KEYS, VALUES, max_size=4),
    max_size=5,
)




def _near(name: str) -> st.SearchStrategy[Any]:
    """Values at and just beyond the documented range of setting `name`."""
    meta = FIELDS[name].metadata
    kind: type = type(FIELDS[name].default)  # `type`: mypy reads default as maybe MISSING
    if meta["choices"]:
        return st.sampled_from([*meta["choices"], meta["choices"][0].upper(), ""])
    if kind is bool:
        return st.booleans() | st.just(1)
    if kind is str:
        return st.text(max_size=12)
    lo, hi = meta["minimum"], meta["maximum"]
    edges = [e + d for e in (lo, hi) if e is not None for d in (-1, 0, 1)]
    if kind is int:
        return st.sampled_from([int(e) for e in edges]) | st.integers(int(lo), int(lo) + 99)
    return st.sampled_from(edges) | st.floats(lo, hi)


def _near_document() -> st.SearchStrategy[dict[str, Any]]:
    """Valid names, each at the top level or in its own table, with values near range."""
    entry = st.sampled_from(sorted(FIELDS)).flatmap(
        lambda name: st.tuples(st.just(name), _near(name), st.booleans())
    )

    def build(entries: list[tuple[str, Any, bool]]) -> dict[str, Any]:
        document: dict[str, Any] = {}
        for name, value, in_table in entries:
            group = FIELDS[name].metadata["group"]
            # `device` names both a setting and a table: whichever comes first keeps it.
            if in_table and isinstance(document.get(group, {}), dict):
                document.setdefault(group, {})[name] = value
            elif name not in document:
                document[name] = value
        return document

    return st.lists(entry, max_size=6, unique_by=lambda e: e[0]).map(build)


def _dump(document: dict[str, Any]) -> bytes:
    return tomlkit.dumps(document).encode("utf-8")


SPECIAL = st.sampled_from([
    b"k_t = " + b"[" * 5000 + b"]" * 5000,
    b"[mile]\nk_t = " + b"{a = " * 3000 + b"1" + b"}" * 3000,
    b"\xef\xbb\xbfk_t = 3\n",
    b"k_t = 3\n\xff\xfe\n",
    b"rho = 0.2\n[mile]\nrho = 0.3\n",
    b"",
])
FILE_BYTES = st.one_of(
    DOCUMENTS.map(_dump),
    _near_document().map(_dump),
    _near_document().map(_dump),
    st.binary(max_size=120),
    st.text(max_size=120).map(lambda t: t.encode("utf-8")),
    SPECIAL,
)


def _toml_literal(value: Any) -> str:
    return tomlkit.item(value).as_string()


OVERRIDES = st.lists(
    st.one_of(
        st.tuples(KEYS, SCALARS.map(_toml_literal)).map("=".join),
        st.tuples(KEYS, st.text(max_size=20)).map("=".join),
        st.tuples(st.sampled_from(sorted(FIELDS)),
                  st.sampled_from(["nan", "inf", "-inf", "1e308", "[[[1]]]", "[" * 3000,
                                   "18446744073709551616", '"a\\nb"', "{a=1}"])).map("=".join),
        st.text(max_size=20),  # with or without "="
    ),
    max_size=3,
)

# -- oracles ----------------------------------------------------------------------------


def check_message(message: str, source: Path) -> None:
    """One printable line that says where the problem is (the file, or --set)."""
    assert message and message.isprintable(), repr(message)
    assert message.startswith((str(source), "--set")), message


def check_settings(result: Settings, data: bytes, overrides: list[str]) -> None:
    """Valid settings: every value of its field's type and range, the file's values
    kept where no --set replaced them, and a faithful round trip through TOML."""
    for name, f in FIELDS.items():
        value, meta = getattr(result, name), f.metadata
        assert type(value) is type(f.default), (name, value)
        if isinstance(value, float):
            assert math.isfinite(value)
        if meta["minimum"] is not None:
            assert value >= meta["minimum"]
        if meta["maximum"] is not None:
            assert value <= meta["maximum"]
        if meta["choices"]:
            assert value in meta["choices"]
    # What torch itself accepts: the device string and the seed.
    torch.device("cpu" if result.device == "auto" else result.device)
    torch.Generator().manual_seed(result.seed)
    replaced = {text.partition("=")[0].strip() for text in overrides}
    document = tomllib.loads(data.decode("utf-8"))
    names = [k for k, v in document.items() if not (k in GROUPS and isinstance(v, dict))]
    for key, table in document.items():
        if key in GROUPS and isinstance(table, dict):
            names += list(table)
    assert len(names) == len(set(names)), names  # a key given twice is an error
    flat = {k: v for k, v in document.items() if k not in GROUPS or not isinstance(v, dict)}
    for key, table in document.items():
        if key in GROUPS and isinstance(table, dict):
            flat.update(table)
    for name, value in flat.items():
        if name not in replaced:
            assert getattr(result, name) == value, name
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "again.toml"
        path.write_text(result.to_toml(), encoding="utf-8")
        assert load_settings(path) == result


# -- the loader, in-process ---------------------------------------------------------------


@given(data=FILE_BYTES, overrides=OVERRIDES)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_loader_gives_settings_or_a_one_line_error(data: bytes, overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.toml"
        path.write_bytes(data)
        try:
            result = load_settings(path, overrides)
        except SettingsError as exc:
            check_message(str(exc), path)
        else:
            check_settings(result, data, overrides)
        assert os.listdir(folder) == ["fuzz.toml"]  # the loader makes nothing


@given(overrides=OVERRIDES)
@settings(max_examples=100, deadline=None)
def test_set_alone_gives_settings_or_a_one_line_error(overrides: list[str]) -> None:
    try:
        result = load_settings(None, overrides)
    except SettingsError as exc:
        check_message(str(exc), Path("--set"))
    else:
        check_settings(result, b"", overrides)


# -- a sample through the command line ----------------------------------------------------


@given(data=FILE_BYTES, overrides=OVERRIDES)
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_cli_refuses_bad_settings_in_one_line(data: bytes, overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path, runs = Path(folder) / "fuzz.toml", Path(folder) / "runs"
        path.write_bytes(data)
        sets = [*TINY, *overrides, f"checkpoint_path={runs}"]
        try:
            load_settings(path, sets)
        except SettingsError as exc:
            expected = f"error: {exc}"
        else:
            expected = ""
        assume(expected)  # valid settings would train: not this test's business
        args = [part for text in sets for part in ("--set", text)]
        result = CliRunner().invoke(app, ["run", "--headless", "--config", str(path), *args])
        assert result.exit_code == 2, result.output
        assert result.stdout == "" and "Traceback" not in result.stderr
        assert result.stderr.strip() == expected
        assert os.listdir(folder) == ["fuzz.toml"]  # no checkpoint_path, no run folder

