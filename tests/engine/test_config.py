"""Settings: loading, precedence and every kind of bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mile_engine.config import (
    FIELDS,
    Settings,
    SettingsError,
    load_settings,
    parse_ascii_float,
    parse_ascii_int,
    parse_override,
    render_toml,
)

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
