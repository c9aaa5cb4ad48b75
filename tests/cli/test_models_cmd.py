"""`mile-tui models`: the names `model` accepts and the weights in torch's cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torchvision
from typer.testing import CliRunner

from mile_tui.cli import app


def test_lists_every_torchvision_classifier_and_the_legacy_name() -> None:
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    listed = result.output.split()
    expected = torchvision.models.list_models(module=torchvision.models)
    assert set(listed) == {"resnet18-10", *expected}
    assert listed[0] == "resnet18-10"


def test_weights_say_which_files_are_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet18-f37072fd.pth").write_bytes(b"")  # ResNet18_Weights.IMAGENET1K_V1
    result = CliRunner().invoke(app, ["models", "resnet18", "--weights"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "resnet18-10" and "resnet18" in lines
    (line,) = [x for x in lines if "ResNet18_Weights.IMAGENET1K_V1" in x]
    assert f"cached: {cache / 'resnet18-f37072fd.pth'}" in line and "crop 224" in line


def test_no_match_is_a_one_line_error() -> None:
    result = CliRunner().invoke(app, ["models", "convnxt"])
    assert result.exit_code == 2
    assert "convnext" in result.output and "Traceback" not in result.output
