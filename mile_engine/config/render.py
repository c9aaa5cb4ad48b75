"""Writing settings as a grouped TOML document (`mile.toml`), each key with its comment."""

from __future__ import annotations

from typing import Any

import tomlkit

from mile_engine.config.schema import FIELDS, GROUPS, Settings
from mile_engine.config.validation import allowed_text


def _toml_value(value: Any) -> str:
    # tomlkit escapes what TOML needs (quotes, backslashes, newlines, control characters).
    return tomlkit.item(value).as_string()


def _wrap(text: str, width: int = 88) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width - 2)


def render_toml(settings: Settings | None = None, comments: bool = True) -> str:
    """Render settings as a grouped TOML document, each key with its comment."""
    settings = settings or Settings()
    lines: list[str] = []
    if comments:
        lines += [
            "# mile-tui settings. Every key may also sit at the top level; on the command line",
            "# use bare names: mile-tui run --headless --set k_t=200 --set schema=sigmoid",
            "",
        ]
    for group, title in GROUPS.items():
        if comments:
            lines.append(f"# {title}")
        lines.append(f"[{group}]")
        for name, f in FIELDS.items():
            if f.metadata["group"] != group:
                continue
            if comments:
                lines += [f"# {line}" for line in _wrap(f.metadata["doc"])]
                lines.append(f"# Allowed: {allowed_text(name)}.")
            lines.append(f"{name} = {_toml_value(getattr(settings, name))}")
        lines.append("")
    return "\n".join(lines)
