"""The `--config` and `--set` options every command shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[
    Path | None,
    # readable=False: the settings loader reports an unreadable file in the tool's own
    # one-line format (Click's check would print a boxed usage error instead).
    typer.Option("--config", "-c", help="Settings file (default: ./mile.toml if present).",
                 readable=False),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one setting: --set k_t=200 (repeatable)."),
]
