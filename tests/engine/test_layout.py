"""The run folder's file names live in `mile_engine.runstore.layout` alone, and reading them
(or the runs list) loads no torch.

The runs list and the console's screens name a run's files without writing them; if the
names lived in the modules that write checkpoints, each reader would pay torch's import.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from mile_engine.runstore import layout

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import mile_engine.runstore.layout
import mile_engine.runstore.catalog
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "torch")))
"""


def test_layout_and_catalog_load_no_torch() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)  # a hang guard only
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_layout_imports_nothing() -> None:
    tree = ast.parse(Path(layout.__file__).read_text(encoding="utf-8"))
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert all(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in imports)


def test_no_other_module_spells_a_file_name() -> None:
    # A name spelt out again elsewhere is the duplicate that drifts: every string constant
    # of the two packages (docstrings and messages hold longer text) is checked.
    names = {getattr(layout, n) for n in layout.__all__}
    assert "checkpoints.json" in names and ".pt" in names
    found = []
    for package in ("mile_engine", "mile_tui"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "layout.py" and path.parent.name == "runstore":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and node.value in names:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert found == []
