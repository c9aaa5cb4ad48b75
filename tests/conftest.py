"""Shared fixtures: tiny CPU settings that train in a second, and console preferences kept
apart from the user's and from other tests'."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mile_engine.config.schema import Settings
from mile_tui.preferences import CONFIG_DIR_ENV
from tests.helpers.settings import tiny


@pytest.fixture
def tiny_settings(tmp_path: Path) -> Settings:
    """Tiny settings whose runs land in a temporary folder."""
    return tiny(checkpoint_path=str(tmp_path / "runs"))


@pytest.fixture(autouse=True)
def private_preferences(tmp_path_factory: pytest.TempPathFactory,
                        monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every console a test opens (in this process or a child) remembers its theme and
    settings file in a folder of its own: one test's last settings file is never
    another's, whichever worker process ran it first, and the user's own preferences
    are left alone."""
    folder = tmp_path_factory.mktemp("preferences")
    monkeypatch.setenv(CONFIG_DIR_ENV, str(folder))
    return folder


@pytest.fixture(autouse=True)
def no_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """No inherited COLUMNS or LINES: pytest-xdist's workers get COLUMNS=80, which would
    make the command-line tables fit 80 columns there and print every column whole in a
    plain `pytest`. A test that wants a width sets it."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`pytest -n 2`) each worker trains on one thread: two workers
    of two threads each on two cores wait on one another in OpenMP and run several times
    slower than one thread each (child processes get OMP_NUM_THREADS=1 the same way)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
