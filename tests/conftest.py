"""Shared fixtures: tiny CPU settings that train in a second."""

from __future__ import annotations

from pathlib import Path

import pytest

from mile_engine.config import Settings
from tests.helpers.settings import tiny


@pytest.fixture
def tiny_settings(tmp_path: Path) -> Settings:
    """Tiny settings whose runs land in a temporary folder."""
    return tiny(checkpoint_path=str(tmp_path / "runs"))
