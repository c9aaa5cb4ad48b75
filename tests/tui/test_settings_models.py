"""The settings screen's model, weights and path fields (issue #17)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torchvision
from textual.widgets import Input, Select, Static

from mile_tui.app import MileApp, create_app
from mile_tui.screens.settings_form import SettingsForm
from tests.helpers.pilot import wait_for

SIZE = (100, 30)


def error_text(app: MileApp, name: str) -> str:
    """The error line the settings screen shows under field `name`."""
    return str(app.settings_screen.query_one(f"#error-{name}", Static).render())


async def test_model_select_offers_every_model_and_finds_one_by_typing(
    settings_file: Path,
) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SIZE) as pilot:
        select = app.settings_screen.query_one("#field-model", Select)
        # The names arrive from a worker (torchvision is imported off the UI thread).
        await wait_for(pilot, lambda: len(select._options) > 3)
        offered = {value for _, value in select._options}
        assert offered == {"resnet18-10", *torchvision.models.list_models(
            module=torchvision.models)}
        select.focus()
        await pilot.press("enter")  # open the list, then type the start of a name
        await pilot.press(*"convnext_t", "enter")
        await pilot.pause()
        assert select.value == "convnext_tiny"
        assert app.settings_screen.form.values["model"] == "convnext_tiny"


async def test_missing_paths_and_unloadable_weights_are_flagged(
    settings_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    real = tmp_path / "start.pth"
    real.write_bytes(b"")
    app = create_app(settings_file)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.settings_screen
        for name in ("data_path", "val_path", "val_labels_path", "weights"):
            editor = screen.query_one(f"#field-{name}", Input)
            editor.value = f"no/such/{name}"
            await pilot.pause()
            assert "no such file" in error_text(app, name), name
        editor = screen.query_one("#field-weights", Input)
        editor.value = str(real)
        await pilot.pause()
        assert error_text(app, "weights") == ""
        editor.value = "DEFAULT"  # resnet18-10 -> ResNet18_Weights, not in this cache
        await pilot.pause()
        assert "not in torch's cache" in error_text(app, "weights")
        assert str(tmp_path / "torch-home") in error_text(app, "weights")
        editor.value = "ResNet50_Weights.IMAGENET1K_V2"
        await pilot.pause()
        assert "for another model" in error_text(app, "weights")


async def test_weights_input_completes_the_chosen_models_weights(settings_file: Path) -> None:
    app = create_app(settings_file)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.settings_screen
        screen.query_one("#field-model", Select).value = "efficientnet_b0"
        await pilot.pause()
        editor = screen.query_one("#field-weights", Input)
        editor.focus()
        await pilot.press(*"Eff", "right")  # right arrow accepts the suggestion
        await pilot.pause()
        assert editor.value == "EfficientNet_B0_Weights.IMAGENET1K_V1"


def test_folder_without_its_folders_cannot_start(settings_file: Path) -> None:
    form = SettingsForm(settings_file)
    form.set_value("dataset", "folder")
    problem = form.consistency_error()
    assert problem is not None and "needs data_path, val_path" in problem


def test_a_model_that_cannot_take_the_input_side_cannot_start(settings_file: Path) -> None:
    form = SettingsForm(settings_file)
    form.set_value("model", "alexnet")  # the digit grids are 24 px
    problem = form.consistency_error()
    assert problem is not None and "at least 63x63 pixels, got 24" in problem
    form.set_value("image_size", 72)
    assert form.consistency_error() is None
    form.set_value("model", "vit_b_16")
    problem = form.consistency_error()
    assert problem is not None and "multiple of its 16-pixel patches" in problem


def test_the_settings_screen_opens_before_torch_is_imported(tmp_path: Path) -> None:
    # The console shows its settings at once; torchvision's model list (and torch) are
    # read in a worker afterwards, and the select offers them when they arrive.
    code = """
import asyncio, sys, threading
from pathlib import Path
from mile_tui.app import create_app
from mile_tui.screens.settings import SettingsScreen

go = threading.Event()
read = SettingsScreen._read_model_names

def held(self):
    go.wait()  # the worker imports torchvision only once the test lets it
    read(self)

SettingsScreen._read_model_names = held

async def main():
    app = create_app(Path("mile.toml"))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        shown = app.settings_screen.query_one("#field-model").value == "resnet18-10"
        seen = "torch" in sys.modules
        go.set()
        select = app.settings_screen.query_one("#field-model")
        for _ in range(1200):
            if len(select._options) > 3:
                break
            await pilot.pause(0.05)
        print(shown, seen, len(select._options), select.value)

asyncio.run(main())
"""
    (tmp_path / "mile.toml").write_text("")  # the defaults
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    shown, seen, count, value = out.stdout.split()
    assert (shown, seen, value) == ("True", "False", "resnet18-10") and int(count) > 80
