"""mile_engine: MILe training without any user interface.

Settings (`config`), data (`data`), backbones (`models`), schemas (`schemas`), metrics
(`metrics`), the trainer and its events, and the run folder (`runstore`). Nothing here
imports Textual, Typer or mile_tui.

The public API, for programs that embed the engine (docs/embedding.md)::

    from mile_engine import Control, Settings, load_settings, open_run

    trainer = open_run(Settings(epoch_num=1), sinks=[print], model=my_net, source=my_data)
    trainer.train()

The names load on first use: `import mile_engine` alone (as every engine module's import
does) loads no torch, so the console's light modules stay light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "Control", "Settings", "SettingsError", "Trainer", "__version__",
    "events", "load_settings", "open_run",
]

# Each public name and the module that defines it.
_HOMES = {
    "CheckpointError": "mile_engine.runstore.files",
    "Control": "mile_engine.control",
    "Settings": "mile_engine.config.schema",
    "SettingsError": "mile_engine.config.schema",
    "Trainer": "mile_engine.trainer",
    "load_settings": "mile_engine.config.loader",
    "open_run": "mile_engine.session",
}

if TYPE_CHECKING:
    from mile_engine import events
    from mile_engine.config.loader import load_settings
    from mile_engine.config.schema import Settings, SettingsError
    from mile_engine.control import Control
    from mile_engine.runstore.files import CheckpointError
    from mile_engine.session import open_run
    from mile_engine.trainer import Trainer


def __getattr__(name: str) -> Any:
    """Load a public name from its module the first time it is asked for."""
    if name == "events":
        return importlib.import_module("mile_engine.events")
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'mile_engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
