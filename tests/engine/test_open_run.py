"""open_run: a run folder is made only once the trainer is built and checked, and what
was said before it existed reaches its run.log."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from mile_engine import events as ev
from mile_engine import session
from mile_engine.config.schema import SettingsError
from mile_engine.runstore.layout import LOG_FILE
from mile_engine.session import open_run
from tests.helpers.settings import tiny


def test_a_file_as_checkpoint_path_is_refused_before_the_trainer_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    built: list[object] = []
    monkeypatch.setattr(session, "Trainer", lambda *a, **k: built.append(a))
    for path in (blocker, blocker / "below"):
        with pytest.raises(SettingsError, match="checkpoint_path"):
            open_run(tiny(checkpoint_path=str(path)))
    assert built == [] and sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_a_run_started_from_weights_resumes_after_the_weights_file_has_gone(
    tmp_path: Path,
) -> None:
    import torch
    import torchvision

    weights = tmp_path / "start.pt"
    start = torchvision.models.resnet18(num_classes=10)
    torch.nn.init.constant_(start.conv1.weight, 0.01)  # unlike any random initialisation
    torch.save(start.state_dict(), weights)
    settings = tiny(checkpoint_path=str(tmp_path / "runs"), epoch_num=1, weights=str(weights))
    trainer = open_run(settings)
    # The student started from the file (before any step).
    assert isinstance(trainer.student.conv1, torch.nn.Conv2d)
    assert torch.equal(trainer.student.conv1.weight, start.conv1.weight)
    trainer.train()
    trained = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    trainer.checkpointer.close()  # type: ignore[union-attr]
    weights.unlink()

    resumed = open_run(settings, resume=trainer.run_dir, overrides=["epoch_num=2"])
    # The checkpoint's weights, not a fresh start and not the (missing) file.
    for name, value in resumed.student.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert resumed.train().status == "finished"


def test_a_resume_with_fewer_generations_than_done_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    settings = tiny(checkpoint_path=str(tmp_path / "runs"), epoch_num=2)
    trainer = open_run(settings)
    assert trainer.train().status == "finished"
    trainer.checkpointer.close()  # type: ignore[union-attr]
    run_dir = trainer.run_dir
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    with pytest.raises(SettingsError, match="epoch_num = 1 is fewer than the 2 generations"):
        open_run(settings, resume=run_dir, overrides=["epoch_num=1"])
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert after == before
    # As many as done is allowed: the run is finished at once, nothing trained.
    again = open_run(settings, resume=run_dir, overrides=["epoch_num=2"])
    ended = again.train()
    assert ended.status == "finished" and ended.global_step == trainer.global_step


def test_what_is_said_while_the_trainer_is_built_is_logged_once_the_folder_exists(
    tmp_path: Path,
) -> None:
    weights = tmp_path / "start.pt"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), weights)
    runs = tmp_path / "runs"
    said: list[tuple[str, bool]] = []  # each message, and whether a run folder existed

    def sink(event: ev.Event) -> None:
        if isinstance(event, ev.Message):
            said.append((event.text, runs.exists() and any(runs.iterdir())))

    trainer = open_run(tiny(checkpoint_path=str(runs), weights=str(weights)), sinks=[sink])
    trainer.checkpointer.close()  # type: ignore[union-attr]
    # The weights notes came while the trainer was built, before the folder was made ...
    assert [made for _, made in said] == [False, False]
    assert "120 tensors loaded" in said[0][0]
    # ... and run.log holds them all the same, in the order they were said.
    logged = [line.split(" info: ", 1)[1]
              for line in (trainer.run_dir / LOG_FILE).read_text().splitlines()]
    assert logged == [text for text, _ in said]
