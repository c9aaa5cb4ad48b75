"""The `--config` and `--set` options every command shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Settings file (default: ./mile.toml if present)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one setting: --set k_t=200 (repeatable)."),
]
