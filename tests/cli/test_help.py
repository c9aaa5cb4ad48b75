"""Every command's --help: placeholders only where an option takes a value."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from mile_tui.cli import app


def command_paths() -> list[list[str]]:
    """Every command and subcommand of `mile-tui`, as argument lists."""
    paths: list[list[str]] = [[]]

    def walk(command: object, prefix: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_every_command_is_found() -> None:
    names = {" ".join(p) for p in command_paths()}
    assert {"run", "eval", "predict", "inspect", "compare", "checkpoints",
            "checkpoints prune", "checkpoints export"} <= names
    assert "checkpoints inspect" not in names  # one name, one meaning


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "mile-tui")
def test_help_shows_no_python_types_for_flags_or_lists(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "<bool>" not in text  # a flag takes no value
    assert "<list[str]>" not in text and "[[" not in text
    # A repeatable --set says what it takes.
    if "--set" in text:
        assert re.search(r"--set\s+-s\s+KEY=VALUE", text), text
