"""Shared fixtures: tiny CPU settings that train in a second."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from mile_engine.config import Settings

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def tiny(**changes: Any) -> Settings:
    """Settings small enough for unit tests on a 2-core CPU.

    `changes` is typed `Any` because each field has its own type (dataclasses.replace
    checks the names at run time).
    """
    base = Settings(
        batch_size=8, val_size=64, k_t=3, k_s=2, epoch_num=2, log_every=1, device="cpu"
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def tiny_settings(tmp_path: Path) -> Settings:
    """Tiny settings whose runs land in a temporary folder."""
    return tiny(checkpoint_path=str(tmp_path / "runs"))
