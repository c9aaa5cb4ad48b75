"""Bad settings (issue #14): each a one-line error, exit 2, no traceback, nothing created.

Every row goes through the real command line (`mile-tui run --headless` in Typer's
CliRunner) with the issue's tiny settings, so a row fails if the input reaches the
trainer, prints a traceback, or leaves anything behind in the test's folder.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mile_engine.config import (
    FIELDS,
    Settings,
    SettingsError,
    load_settings,
    parse_override,
    render_toml,
)
from mile_engine.device import resolve_device
from mile_engine.runstore.layout import SETTINGS_FILE
from mile_engine.runstore.records import create_run_dir
from mile_tui.cli import app

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TINY = ["k_t=3", "k_s=3", "epoch_num=2", "batch_size=8", "num_workers=0", "device=cpu",
        "val_size=64"]
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
