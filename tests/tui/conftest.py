"""Fixtures for the console's tests: a commented settings file with tiny CPU settings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.settings import SETTINGS_TEXT


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A commented mile.toml with tiny settings in a fresh working folder."""
    monkeypatch.chdir(tmp_path)
    path = Path("mile.toml")
    path.write_text(SETTINGS_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Clock times in UTC, whatever the machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
