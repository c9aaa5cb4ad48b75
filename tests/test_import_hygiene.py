"""The engine runs without the UI: importing it must not load Textual, Typer or mile_tui."""

import subprocess
import sys


def test_engine_imports_no_ui() -> None:
    code = (
        "import sys, mile_engine, mile_engine.trainer, mile_engine.session, "
        "mile_engine.metrics, mile_engine.data\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'typer', 'mile_tui')]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
