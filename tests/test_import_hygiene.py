"""The engine runs without the UI: no `mile_engine` module may load Textual, Typer or mile_tui.

Every module is found with `pkgutil.walk_packages`, so a new module is covered the day it
is added. One fresh interpreter imports them one by one and reports, after each, which UI
modules `sys.modules` holds; the first module that pulls one in is named.
"""

from __future__ import annotations

import json
import subprocess
import sys

# The UI side of the boundary (DESIGN.md): the console's toolkit, the CLI's (Typer and
# the Click it is built on), and the UI package itself. Rich is not on the list: the
# engine does not use it today, but DESIGN.md does not forbid it (it only prints).
FORBIDDEN = ("textual", "typer", "click", "mile_tui")

PROBE = """
import importlib, json, pkgutil, sys
import mile_engine

forbidden = {forbidden!r}
def loaded_ui():
    return sorted(m for m in sys.modules if m.split(".")[0] in forbidden)

report = {{"start": loaded_ui(), "modules": {{}}}}
for info in pkgutil.walk_packages(mile_engine.__path__, "mile_engine."):
    importlib.import_module(info.name)
    report["modules"][info.name] = loaded_ui()
print(json.dumps(report))
"""


def probe_engine() -> dict[str, object]:
    """Import every mile_engine module in a fresh interpreter; what UI modules each added."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(forbidden=FORBIDDEN)],
        capture_output=True, text=True, timeout=600,  # a hang guard only
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return report


def test_no_engine_module_imports_the_ui() -> None:
    report = probe_engine()
    modules = report["modules"]
    assert isinstance(modules, dict)
    # The walk found the engine: its core modules and the data sub-package.
    for name in ("mile_engine.trainer", "mile_engine.checkpoints", "mile_engine.data.grids"):
        assert name in modules
    assert report["start"] == []
    offenders = {name: ui for name, ui in modules.items() if ui}
    assert offenders == {}, f"first to load the UI: {next(iter(offenders))}"
