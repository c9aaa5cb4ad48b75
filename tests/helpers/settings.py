"""Tiny settings for tests: as a `Settings`, as command-line flags, as a commented file."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mile_engine.config.schema import Settings

# The repository root, for a child process's PYTHONPATH.
REPO = Path(__file__).resolve().parents[2]

# `tiny()` as `--set` flags of `mile-tui run --headless`.
TINY = ["--set", "batch_size=8", "--set", "val_size=64", "--set", "k_t=3", "--set", "k_s=2",
        "--set", "log_every=1", "--set", "device=cpu"]


def tiny(**changes: Any) -> Settings:
    """Settings small enough for unit tests on a 2-core CPU.

    `changes` is typed `Any` because each field has its own type (dataclasses.replace
    checks the names at run time).
    """
    base = Settings(
        batch_size=8, val_size=64, k_t=3, k_s=2, epoch_num=2, log_every=1, device="cpu"
    )
    return dataclasses.replace(base, **changes)


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
