"""The engine runs without the UI: no `mile_engine` module may load Textual, Typer or mile_tui.

Every module is found with `pkgutil.walk_packages`, so a new module is covered the day it
is added. One fresh interpreter imports them one by one and reports, after each, which UI
modules `sys.modules` holds; the first module that pulls one in is named.

And no two modules of `mile_engine` and `mile_tui` import each other, directly or round a
loop: the import graph is read from the source files (imports inside functions and
imports for the type checker too).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mile_engine", "mile_tui")


def source_modules() -> dict[str, Path]:
    """Every module of the two packages, by dotted name, found from the files."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: Collection[str]) -> set[str]:
    """The modules of `modules` that `name` imports (not itself): at module level, inside
    functions, and for the type checker only (a loop through those is still two modules
    that need each other)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            # `from package import x` imports module `package.x` where there is one,
            # else takes the name `x` from `package`.
            found.update(f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules
                         else module for alias in node.names)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of the two packages it imports."""
    modules = source_modules()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop as [a, b, ..., a], or None: a depth-first search for a back edge."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (loop := visit(nxt)):
                return loop
        stack.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (loop := visit(start)):
            return loop
    return None


def test_import_graph_is_read_from_the_source() -> None:
    graph = import_graph()
    # Known edges, one of each kind: module level, inside a function, `from pkg import mod`.
    assert "mile_engine.config.schema" in graph["mile_engine.trainer"]
    assert "mile_tui.app" in graph["mile_tui.cli"]  # imported inside `_open_console`
    assert "mile_engine.events" in graph["mile_engine.trainer"]
    assert "mile_engine.trainer" in graph["mile_engine.checkpoints"]  # for the type checker
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    loop = find_cycle(import_graph())
    assert loop is None, "import cycle: " + " -> ".join(loop or [])


def test_only_the_entry_point_imports_the_cli() -> None:
    # The sub-commands share their helpers through `mile_tui.options`, not the entry point.
    graph = import_graph()
    assert sorted(m for m, targets in graph.items() if "mile_tui.cli" in targets) == [
        "mile_tui.__main__"]


# ------------------------------------------------------------------ the tests' own imports
TESTS = ROOT / "tests"


def imports_of_tests(source: str, package: str) -> set[str]:
    """The `tests` modules that `source`, a file of package `package`, imports by name.

    `from tests import x` counts as importing `tests.x`; relative imports are resolved
    against `package`; `import conftest` (pytest's rootdir-style import) counts too.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[:len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found
            if m.split(".")[0] == "conftest" or m == "tests" or m.startswith("tests.")}


def test_imports_of_tests_finds_every_spelling() -> None:
    pkg = "tests.engine"
    assert imports_of_tests("from tests.conftest import tiny", pkg) == {
        "tests.conftest.tiny"}
    assert imports_of_tests("from ..tui.test_runs import write_run", pkg) == {
        "tests.tui.test_runs.write_run"}
    assert imports_of_tests("from . import test_metrics", pkg) == {
        "tests.engine.test_metrics"}
    assert imports_of_tests("def f():\n    import tests.engine.test_x as t", pkg) == {
        "tests.engine.test_x"}
    assert imports_of_tests("import conftest\nimport torch", pkg) == {"conftest"}
    assert imports_of_tests("from mile_engine import trainer", pkg) == set()


def test_no_test_module_imports_another() -> None:
    # Builders that several test files share live in tests/helpers; a test file (or a
    # conftest.py) that imports another test file runs that file's module-level code and
    # ties the two together, so a move or a rename of one breaks the other.
    offenders = {}
    for path in sorted(TESTS.rglob("*.py")):
        package = ".".join(path.relative_to(ROOT).parent.parts)
        bad = sorted(m for m in imports_of_tests(path.read_text(encoding="utf-8"), package)
                     if not m.startswith("tests.helpers."))
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}
