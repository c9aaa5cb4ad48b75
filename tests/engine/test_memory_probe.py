"""A batch too large for the device fails before the run folder is made, naming the
setting; the probe itself leaves the run exactly as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mile_engine import events as ev
from mile_engine import session
from mile_engine.config.schema import SettingsError
from mile_engine.trainer import Trainer
from mile_tui.cli import app
from tests.helpers.settings import tiny


def losses_and_weights(probe: bool, tmp_path: Path) -> tuple[list[float], list[torch.Tensor]]:
    seen: list[ev.Event] = []
    trainer = Trainer(tiny(), tmp_path, sinks=[seen.append])
    if probe:
        trainer.check_memory()
    trainer.train()
    losses = [e.loss for e in seen if isinstance(e, ev.StepLogged)]
    return losses, [t.clone() for t in trainer.student.state_dict().values()]


def test_the_probe_changes_nothing_a_run_computes(tmp_path: Path) -> None:
    # The oracle is the same run without the probe: batch-norm statistics, gradients,
    # momentum and the random streams must all come out untouched.
    plain_losses, plain_weights = losses_and_weights(False, tmp_path / "a")
    probed_losses, probed_weights = losses_and_weights(True, tmp_path / "b")
    assert probed_losses == plain_losses
    for a, b in zip(plain_weights, probed_weights, strict=True):
        assert torch.equal(a, b)


def out_of_memory(*args: object, **kwargs: object) -> torch.Tensor:
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")


def test_an_allocation_failure_names_the_settings(tmp_path: Path) -> None:
    trainer = Trainer(tiny(batch_size=4096), tmp_path)
    trainer.student.forward = out_of_memory
    with pytest.raises(SettingsError, match=r"batch_size = 4096 does not fit .* 24x24"):
        trainer.check_memory()


def test_open_run_probes_before_making_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session, "probe_memory", lambda device: True)
    real_check = Trainer.check_memory

    def failing_check(self: Trainer) -> None:
        self.student.forward = out_of_memory
        real_check(self)

    monkeypatch.setattr(Trainer, "check_memory", failing_check)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, [
        "run", "--headless", "--set", "device=cpu", "--set", "val_size=16",
        "--set", "num_workers=0", "--set", f"checkpoint_path={runs}"])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: batch_size = 64 does not fit") and "Traceback" not in line
    assert not runs.exists() or not any(runs.iterdir())
