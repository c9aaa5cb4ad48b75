"""Writing settings as a grouped TOML document (`mile.toml`), each key with its comment."""

from __future__ import annotations

import tomlkit

from mile_engine.config.schema import FIELDS, GROUPS, Settings
from mile_engine.config.validation import allowed_text


def _wrap(text: str, width: int = 88) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width - 2)


def render_toml(settings: Settings | None = None) -> str:
    """Render settings as a grouped TOML document, each table with its title and each
    key with its doc and allowed values (`Settings.to_toml` leaves the comments out)."""
    settings = settings or Settings()
    lines = [
        "# mile-tui settings. Every key may also sit at the top level; on the command line",
        "# use bare names: mile-tui run --headless --set k_t=200 --set schema=sigmoid",
        "",
    ]
    for group, title in GROUPS.items():
        lines += [f"# {title}", f"[{group}]"]
        for name, f in FIELDS.items():
            if f.metadata["group"] != group:
                continue
            lines += [f"# {line}" for line in _wrap(f.metadata["doc"])]
            lines.append(f"# Allowed: {allowed_text(name)}.")
            # tomlkit escapes what TOML needs (quotes, backslashes, newlines, controls).
            lines.append(f"{name} = {tomlkit.item(getattr(settings, name)).as_string()}")
        lines.append("")
    return "\n".join(lines)
