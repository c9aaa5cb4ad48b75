"""The documentation agrees with the code: generated pages and pictures are current, the
settings reference gives the defaults of the shipped `mile.toml`, the command-line
reference lists what `--help` shows, and the README keeps the project's two commands.

When a test here fails after an intended change, run: python docs/gen_reference.py
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from mile_tui.cli import app

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REGENERATE = "run python docs/gen_reference.py"

INSTALL_COMMAND = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install . && mile-tui run --headless"
)
TEST_COMMAND = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && "
    "ruff check . && mypy && mkdocs build --strict && pytest -n 2"
)


def load_generator() -> ModuleType:
    """docs/gen_reference.py as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = load_generator()


@pytest.mark.parametrize("page", ["settings", "cli"])
def test_reference_pages_are_current(page: str) -> None:
    path = DOCS / "reference" / f"{page}.md"
    fresh = {"settings": GEN.settings_reference, "cli": GEN.cli_reference}[page]()
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: {REGENERATE}"
    assert path.read_text(encoding="utf-8") == fresh, (
        f"{path.relative_to(ROOT)} differs from the code: {REGENERATE}"
    )


@pytest.mark.parametrize("name", sorted(GEN.IMAGES))
def test_pictures_are_copies_of_their_sources(name: str) -> None:
    copy, source = DOCS / "images" / name, GEN.IMAGES[name]
    assert copy.is_file() and copy.read_bytes() == source.read_bytes(), (
        f"docs/images/{name} is not {source.relative_to(ROOT)}: {REGENERATE}"
    )


def reference_rows() -> list[tuple[str, str, str]]:
    """(table, key, default) for each row of the committed settings reference."""
    rows, table = [], ""
    for line in (DOCS / "reference" / "settings.md").read_text(encoding="utf-8").splitlines():
        heading = re.match(r"## `\[(\w+)\]`", line)
        if heading:
            table = heading.group(1)
        row = re.match(r"\| `(\w+)` \| \w+ \| `(.*?)` \|", line)
        if row:
            rows.append((table, row.group(1), row.group(2)))
    return rows


def test_settings_reference_gives_the_defaults_of_the_shipped_mile_toml() -> None:
    # Read with tomllib, not the project's loader: the file as any TOML reader sees it.
    shipped = tomllib.loads((ROOT / "mile.toml").read_text(encoding="utf-8"))
    in_file = {(table, key): value for table, keys in shipped.items()
               for key, value in keys.items()}
    documented = {(table, key): tomllib.loads(f"v = {default}")["v"]
                  for table, key, default in reference_rows()}
    assert documented == in_file, f"docs/reference/settings.md and mile.toml differ: {REGENERATE}"
    for (_, key), value in documented.items():  # 1 == 1.0 == True: compare the types too
        assert type(value) is type(in_file[_, key]), key


def reference_sections() -> dict[str, str]:
    """The command-line reference's sections by command path ("mile-tui checkpoints list")."""
    text = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    parts = re.split(r"^## `([^`]+)`$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def help_output(command_path: str) -> str:
    """What `COMMAND --help` prints, on a wide terminal so that no row is wrapped."""
    args = command_path.split()[1:]
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def help_options(output: str) -> set[str]:
    """The long option names in the first column of a --help's option rows."""
    names: set[str] = set()
    for row in re.findall(r"^│ (--[\w-]+(?:,--[\w-]+)*)", output, flags=re.MULTILINE):
        names.update(row.split(","))
    return names - {"--help"}


def help_commands(output: str) -> set[str]:
    """The sub-command names a group's --help lists in its Commands box."""
    box = output.split("─ Commands ", 1)
    return set(re.findall(r"^│ (\w[\w-]*) ", box[1], flags=re.MULTILINE)) if len(box) > 1 else set()


def test_cli_reference_lists_every_command_and_option_that_help_shows() -> None:
    sections = reference_sections()
    assert "mile-tui" in sections
    for path, section in sections.items():
        output = help_output(path)
        options = section.split("**Options**", 1)[1].split("**Commands**")[0] \
            if "**Options**" in section else ""
        documented = {name for line in options.splitlines() if line.startswith("- `")
                      for name in re.findall(r"--[\w-]+", line.split("`")[1])}
        assert documented == help_options(output), f"{path}: {REGENERATE}"
        subcommands = {other.split()[-1] for other in sections
                       if other.rsplit(" ", 1)[0] == path and other != path}
        assert subcommands == help_commands(output), f"{path}: {REGENERATE}"


def bash_blocks(text: str) -> list[str]:
    """The contents of the ```bash blocks of a Markdown text, in order."""
    return [block.strip() for block in re.findall(r"^```bash\n(.*?)^```", text,
                                                  flags=re.MULTILINE | re.DOTALL)]


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_lines = readme.splitlines()[:15]
    assert INSTALL_COMMAND in first_lines and TEST_COMMAND in first_lines
    assert bash_blocks(readme)[:2] == [INSTALL_COMMAND, TEST_COMMAND]
    assert len(readme.splitlines()) <= 200, "the README is a front page; move details to docs/"


def test_ci_runs_the_readme_test_command_word_for_word() -> None:
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert lines[-1] == TEST_COMMAND


def test_readme_links_and_pictures_resolve() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t)]
    assert "docs/images/console-run.svg" in local
    missing = [t for t in local if not (ROOT / t).is_file()]
    assert missing == []


def test_the_settings_errors_shown_are_the_errors_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each `$ mile-tui ...` example of docs/settings.md's "Errors" block prints the line
    shown under it (a line ending in "..." is a prefix)."""
    text = (DOCS / "settings.md").read_text(encoding="utf-8")
    block = text.split("## Errors", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    lines = block.strip().splitlines()
    examples = [(lines[i], lines[i + 1]) for i in range(len(lines) - 1)
                if lines[i].startswith("$ mile-tui ")]
    assert len(examples) >= 3
    monkeypatch.chdir(tmp_path)  # no mile.toml: the defaults, as the examples assume
    # Should an example be accepted, no run starts: no run folder can be made there.
    (tmp_path / "a-file").write_text("")
    nowhere = ["--set", f"checkpoint_path={tmp_path / 'a-file' / 'runs'}"]
    for command, shown in examples:
        args = command.removeprefix("$ mile-tui ").split()
        result = CliRunner().invoke(app, [*args, *nowhere])
        assert result.exit_code == 2, (command, result.output)
        printed = result.output.strip().splitlines()[0]
        if shown.endswith("..."):
            assert printed.startswith(shown[:-3]), (command, printed)
        else:
            assert printed == shown, (command, printed)
