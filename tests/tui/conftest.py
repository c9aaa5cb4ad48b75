"""Fixtures for the console's tests: a commented settings file with tiny CPU settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

SETTINGS_TEXT = """\
# my experiment: tiny digits run
[run]
model = "resnet18-10"  # the 10-class backbone
schema = "MILe"

[data]
dataset = "digits"
val_size = 64

[optim]
# small batches for a 2-core CPU
batch_size = 8
epoch_num = 2

[mile]
k_t = 3
k_s = 2

[checkpoints]
log_every = 1
checkpoint_path = "runs"

[device]
device = "cpu"
"""


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A commented mile.toml with tiny settings in a fresh working folder."""
    monkeypatch.chdir(tmp_path)
    path = Path("mile.toml")
    path.write_text(SETTINGS_TEXT, encoding="utf-8")
    return path


async def wait_for(pilot: Pilot[None], condition: Callable[[], bool],
                   timeout: float = 120.0) -> None:
    """Let the app run until `condition` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(0.05)
