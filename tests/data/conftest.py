"""Data tests never touch the network or the user's cache folder."""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any

import pytest

from mile_engine.data import idx


def _offline(url: str, *args: Any, **kwargs: Any) -> Any:
    raise urllib.error.URLError("network disabled in tests")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every download attempt fails as if the machine were offline."""
    monkeypatch.setattr(idx, "_urlopen", _offline)


@pytest.fixture(autouse=True)
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Downloads and file indexes go to a temporary cache folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache
