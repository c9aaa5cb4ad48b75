"""Settings: loading, precedence and every kind of bad input."""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomlkit
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mile_engine.config.loader import load_settings, parse_override
from mile_engine.config.render import render_toml
from mile_engine.config.schema import FIELDS, GROUPS, Settings, SettingsError
from mile_engine.config.validation import parse_ascii_float, parse_ascii_int
from mile_engine.device import resolve_device
from mile_engine.runstore.layout import SETTINGS_FILE
from mile_engine.runstore.records import create_run_dir
from mile_tui.cli import app

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


ORIGINAL_KEYS = (
    "model schema dataset data_path val_path real_path mnist_path lr batch_size num_workers "
    "epoch_num k_t k_s device rho checkpoint_path max_checkpoint_num"
).split()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mile.toml"
    path.write_text(text)
    return path


def test_every_original_key_keeps_its_name() -> None:
    assert set(ORIGINAL_KEYS) <= set(FIELDS)


def test_shipped_mile_toml_is_the_rendered_defaults() -> None:
    shipped = Path(__file__).resolve().parents[2] / "mile.toml"
    assert shipped.read_text() == render_toml()
    assert load_settings(shipped) == Settings()


def test_grouped_and_flat_keys_load(tmp_path: Path) -> None:
    path = write(tmp_path, 'k_t = 7\n[mile]\nk_s = 3\n[run]\nschema = "sigmoid"\n')
    s = load_settings(path)
    assert (s.k_t, s.k_s, s.schema) == (7, 3, "sigmoid")


def test_precedence_cli_over_file_over_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "[mile]\nk_t = 7\nk_s = 3\n")
    s = load_settings(path, ["k_t=11", "dataset=digits", "rho=0.5"])
    assert (s.k_t, s.k_s, s.rho, s.lr) == (11, 3, 0.5, Settings().lr)


def test_missing_default_file_is_fine_but_named_file_is_not(tmp_path: Path) -> None:
    assert load_settings(tmp_path / "none.toml", missing_ok=True) == Settings()
    with pytest.raises(SettingsError, match="no such settings file"):
        load_settings(tmp_path / "none.toml")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("k_tt = 3\n", ["mile.toml", "'k_tt' is not a setting", "Did you mean 'k_t'"]),
        ('k_t = "many"\n', ["'k_t'", "an integer", "'many'"]),
        ("k_t = 0\n", ["'k_t'", "an integer >= 1", "0"]),
        ("rho = 1.5\n", ["'rho'", "strictly between 0 and 1", "1.5"]),
        ("rho = 0.0\n", ["'rho'", "strictly between 0 and 1"]),
        ("lr = -0.1\n", ["'lr'", "a number strictly between 0 and 10"]),
        ('schema = "mile"\n', ["'schema'", '"MILe"', "Did you mean"]),
        ('device = "gpu"\n', ["'device'", "cuda:N"]),
        ("grid_objects = 10\n", ["'grid_objects'", "from 1 to 9"]),
        ("gt_or = 1\n", ["'gt_or'", "true or false"]),
        ("k_t = true\n", ["'k_t'", "an integer"]),
        ("k_t = 3\nk_s = = 2\n", ["not valid TOML", "line 2"]),
        ("[mile]\nschema = 'MILe'\n", ["'schema' belongs in the [run] table"]),
        ('dataset = "imagenet"\nmodel = "resnet18-10"\ndata_path = "a"\nval_path = "b"\n'
         'real_path = "c"\n', ["predicts 10 classes", "'imagenet' has 1000", "resnet18"]),
        ('model = "convnext_tinny"\n',
         ["'model'", '"convnext_tiny"', "Did you mean", "mile-tui models"]),
        ('model = "vit"\n', ["'model'", '"vit_b_16"', "Did you mean"]),
        ('dataset = "folder"\ndata_path = "a"\n', ["needs val_path"]),
        ('dataset = "imagenet"\nmodel = "resnet50"\n', ["needs data_path, val_path, real_path"]),
    ],
)
def test_bad_file_values_name_file_key_and_allowed(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(write(tmp_path, text))
    message = str(info.value)
    assert str(tmp_path / "mile.toml") in message
    for fragment in fragments:
        assert fragment in message


def test_overrides_are_typed_and_validated() -> None:
    assert parse_override("k_t=2") == ("k_t", 2)
    assert parse_override("dataset=mnist") == ("dataset", "mnist")
    assert parse_override('data_path="/a b"') == ("data_path", "/a b")
    assert parse_override("gt_or=true") == ("gt_or", True)
    with pytest.raises(SettingsError, match="key=value"):
        parse_override("k_t")
    with pytest.raises(SettingsError, match="--set: 'rho'"):
        load_settings(None, ["rho=2"])


def test_int_accepted_for_float_setting() -> None:
    assert load_settings(None, ["lr=1"]).lr == 1.0


# One rule for numbers typed by a user: ASCII digits only. Python's own float() and int()
# are the oracle on ASCII text (the alphabet leaves out "nan", "inf" and "_"); any digit
# of another script is refused.
OTHER_DIGITS = "\u0660\u0665\u06f3\u0967\uff10\uff19\u09e8"


@given(st.text(alphabet="0123456789.eE+- " + OTHER_DIGITS, max_size=12))
def test_ascii_numbers_are_pythons_on_ascii_and_refused_otherwise(text: str) -> None:
    def python(convert: Callable[[str], float]) -> float | None:
        try:
            return convert(text)
        except ValueError:
            return None

    for parse, convert in ((parse_ascii_float, float), (parse_ascii_int, int)):
        try:
            got: float | None = parse(text)
        except ValueError:
            got = None
        if not text.isascii():
            assert got is None
        else:
            assert got == python(convert)


# ------------------------------------------------------------------------------ fuzzing the loader
# Fuzzing the settings loader: random TOML documents and `--set` strings.
#
# Whatever comes in, the loader gives valid settings or a `SettingsError` with a one-line
# message naming where the problem is; nothing else escapes and nothing is created. A few
# examples go through the real command line too: exit 2 and that same line, no traceback,
# no run folder.
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


# ----------------------------------------------------------- bad settings through the command line
# Bad settings: each a one-line error, exit 2, no traceback, nothing created.
#
# Every row goes through the real command line (`mile-tui run --headless` in Typer's
# CliRunner) with tiny settings, so a row fails if the input reaches the
# trainer, prints a traceback, or leaves anything behind in the test's folder.
DEEP = "k_t = " + "[" * 5000 + "]" * 5000 + "\n"


def snapshot(folder: Path) -> set[Path]:
    """Every path under `folder`, to prove that a refusal created nothing."""
    return set(folder.rglob("*"))


def run_cli(tmp_path: Path, args: list[str]) -> tuple[int, str, str]:
    """`run --headless` with the tiny settings, runs under tmp_path/runs; the exit code,
    stdout and stderr. The caller's --set come last, so they win."""
    sets = [part for text in TINY for part in ("--set", text)]
    root = ["--set", f"checkpoint_path={tmp_path / 'runs'}"]
    result = CliRunner().invoke(app, ["run", "--headless", *sets, *root, *args])
    return result.exit_code, result.stdout, result.stderr


def assert_refused(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    """Exit 2, one `error:` line naming the fragments, no traceback, nothing made."""
    before = snapshot(tmp_path)
    code, out, err = run_cli(tmp_path, args)
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert out == "" and "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert snapshot(tmp_path) == before


# --set value -> fragments of the one line it must produce.
BAD_VALUES = [
    ("device=cuda:\u0663", ["'device'", "cuda:N", "0 to 127"]),  # Arabic-Indic three
    ("device=cuda:\u00b9", ["'device'", "cuda:N"]),  # superscript one
    ("device=cuda:99999999999999999999", ["'device'", "0 to 127"]),
    ("device=cuda:128", ["'device'", "0 to 127"]),  # torch would wrap it to cuda:-128
    ("device=cuda:01", ["'device'", "cuda:N"]),
    ("seed=18446744073709551616", ["'seed'", "from 0 to 4294967295"]),
    ("seed=-1", ["'seed'", "from 0 to 4294967295"]),
    ("val_size=1000000000000", ["'val_size'", "from 1 to 100000"]),
    ("batch_size=99999999999999999999999", ["'batch_size'", "from 2 to 65536"]),
    ("batch_size=1000000000000", ["'batch_size'", "from 2 to 65536"]),
    ("batch_size=1", ["'batch_size'", "from 2 to 65536"]),
    ("lr=1e308", ["'lr'", "strictly between 0 and 10"]),
    ("lr=inf", ["'lr'", "strictly between 0 and 10"]),
    ("lr=nan", ["'lr'", "strictly between 0 and 10"]),
    ("lr=" + "9" * 400, ["'lr'", "strictly between 0 and 10"]),  # too big for a float
    ("num_workers=100000", ["'num_workers'", "from 0 to 1024"]),
    ("k_t=1\nk_s=2", ["'k_t'", "an integer"]),  # a newline does not smuggle in a key
    ("k_t=" + "x" * 500, ["'k_t'", "an integer", "..."]),  # a long string, cut short
    ("k_t=" + "[" * 5000, ["--set 'k_t'", "nests too deeply"]),
    ("k_t=" + "[" * 5000 + "]" * 5000, ["--set 'k_t'", "nests too deeply"]),
]


@pytest.mark.parametrize(("override", "fragments"), BAD_VALUES,
                         ids=[ascii(v[0])[:40] for v in BAD_VALUES])
def test_bad_values_are_one_line_errors(
    tmp_path: Path, override: str, fragments: list[str]
) -> None:
    assert_refused(tmp_path, ["--set", override], ["--set", *fragments])


def test_checkpoint_path_naming_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert_refused(tmp_path, ["--set", f"checkpoint_path={tmp_path / 'file'}"],
                   ["checkpoint_path", str(tmp_path / "file"), "is a file"])


def test_checkpoint_path_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert_refused(tmp_path, ["--set", f"checkpoint_path={tmp_path / 'file' / 'runs'}"],
                   ["checkpoint_path", f"{tmp_path / 'file'} is a file", "under it"])


def test_checkpoint_path_where_no_folder_can_be_made(tmp_path: Path) -> None:
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    assert_refused(tmp_path, ["--set", "checkpoint_path=/proc/runs"],
                   ["checkpoint_path /proc/runs", "cannot make folders in /proc"])


def test_checkpoint_path_with_an_undecodable_byte(tmp_path: Path) -> None:
    # What `--set checkpoint_path=$'...\xff'` becomes in sys.argv (surrogateescape).
    path = f"{tmp_path}/runs-\udcff"
    assert_refused(tmp_path, ["--set", f"checkpoint_path={path}"],
                   ["'checkpoint_path'", "not UTF-8", "\\xff"])


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"k_t = 3\n# caf\xe9\n", ["not UTF-8 text", "0xe9", "line 2"]),
        (b"\xef\xbb\xbfk_t = 3\n", ["starts with a UTF-8 byte-order mark", "without one"]),
        (DEEP.encode(), ["nest too deeply"]),
        (b"# padding\n" * 120_000, ["larger than 1 MiB"]),
        (b"rho = 0.2\n[mile]\nrho = 0.3\n", ["'rho' is set twice", "at the top level",
                                             "in [mile]"]),
        (b"[mile]\nk_t = 3\n[[mile]]\n", ["not valid TOML"]),
        (b"k_t = 1979-05-27\n", ["'k_t'", "an integer"]),
        (b"mnist_path = \"a\\u0000b\"\n", ["'mnist_path'", "NUL"]),
    ],
    ids=["latin-1", "bom", "deep", "2MiB", "twice", "array-of-tables", "date", "nul"],
)
def test_bad_config_files(tmp_path: Path, content: bytes, fragments: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    assert_refused(tmp_path, ["--config", str(path)], [str(path), *fragments])


@pytest.mark.parametrize(
    ("where", "fragments"),
    [("/dev/zero", ["/dev/zero", "not a regular file"]),
     (".", ["is a folder"])],
)
def test_config_that_is_not_a_file(tmp_path: Path, where: str, fragments: list[str]) -> None:
    target = str(tmp_path) if where == "." else where
    assert_refused(tmp_path, ["--config", target], fragments)


@pytest.fixture
def unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A settings file this process may not read (mode 000; faked for root, whom the
    mode does not stop: both the access check and the open see EACCES)."""
    path = tmp_path / "secret.toml"
    path.write_text("k_t = 3\n")
    path.chmod(0)
    if os.geteuid() == 0:
        real_open, real_access = os.open, os.access

        def fake_open(file: object, flags: int, *args: object, **kwargs: object) -> int:
            if os.fspath(file) == str(path):  # type: ignore[call-overload]
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(file, flags, *args, **kwargs)  # type: ignore[arg-type]

        def fake_access(file: object, mode: int, *args: object, **kwargs: object) -> bool:
            if os.fspath(file) == str(path):  # type: ignore[call-overload]
                return False
            return real_access(file, mode, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "open", fake_open)
        monkeypatch.setattr(os, "access", fake_access)
    yield path
    path.chmod(0o600)


def test_unreadable_config_is_the_tools_own_error(tmp_path: Path, unreadable: Path) -> None:
    assert_refused(tmp_path, ["--config", str(unreadable)],
                   [str(unreadable), "cannot read the settings file", "Permission denied"])


@pytest.mark.parametrize("text", ["cuda:\u0663", "cuda:\u00b9", "cuda:-1", "cuda:1.0",
                                  "cuda:99999999999999999999", "gpu", "cuda:"])
def test_resolve_device_refuses_what_torch_cannot_parse(text: str) -> None:
    # Saved settings reach resolve_device too; torch's own failure is a RuntimeError.
    with pytest.raises(SettingsError, match="cuda:N"):
        resolve_device(text)


def test_newline_in_a_path_survives_the_runs_settings_file(tmp_path: Path) -> None:
    settings = dataclasses.replace(
        Settings(), mnist_path='a\nb "c" \\d \t\u00e9', checkpoint_path=str(tmp_path)
    )
    run_dir = create_run_dir(settings)
    assert load_settings(run_dir / SETTINGS_FILE) == settings


def test_override_with_a_newline_is_one_string() -> None:
    # Read as TOML, "v = 1\nk_s=2" is two keys; the second must not vanish.
    assert parse_override("k_t=1\nk_s=2") == ("k_t", "1\nk_s=2")
    assert parse_override("k_t=2") == ("k_t", 2)


def _valid_values() -> st.SearchStrategy[dict[str, object]]:
    """Random valid values for every setting, from each one's documented range."""
    text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"))
    parts: dict[str, st.SearchStrategy[object]] = {}
    for name, f in FIELDS.items():
        meta = f.metadata
        kind: type = type(f.default)  # `type`: mypy reads default as maybe MISSING
        if meta["choices"]:
            parts[name] = st.sampled_from(meta["choices"])
        elif kind is bool:
            parts[name] = st.booleans()
        elif kind is int:
            hi = meta["maximum"]
            parts[name] = st.integers(int(meta["minimum"]), int(hi) if hi is not None else 2**70)
        elif kind is float:
            parts[name] = st.floats(meta["minimum"], meta["maximum"], allow_nan=False,
                                    exclude_min=meta["exclusive"], exclude_max=meta["exclusive"])
        else:
            parts[name] = text
    parts["device"] = st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:7", "cuda:127"])
    return st.fixed_dictionaries(parts)


@given(values=_valid_values())
@settings(max_examples=150, deadline=None)
def test_every_settings_value_round_trips(values: dict[str, object]) -> None:
    # A dataset and a model that agree, and ImageNet's paths given: the rules that tie
    # settings together (test_config covers them).
    values["model"] = "resnet18" if values["dataset"] == "imagenet" else "resnet18-10"
    needs = {"imagenet": ("data_path", "val_path", "real_path"),
             "folder": ("data_path", "val_path")}
    for key in needs.get(str(values["dataset"]), ()):
        values[key] = values[key] or "x"
    original = Settings(**values)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as folder:
        for number, text in enumerate((original.to_toml(), render_toml(original))):
            # The document is valid TOML holding exactly the values, whatever the
            # strings hold (read by the TOML parser alone) ...
            tables = tomllib.loads(text)
            assert {k: v for table in tables.values() for k, v in table.items()} == values
            # ... and the settings loader gives back the same settings.
            path = Path(folder) / f"{number}.toml"
            path.write_text(text, encoding="utf-8")
            assert load_settings(path) == original
