"""Exact resume: N steps straight equal k steps, a stop, a resume and N-k more steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mile_engine import events as ev
from mile_engine.checkpoints import RunCheckpointer
from mile_engine.config import Settings, SettingsError
from mile_engine.control import Control
from mile_engine.runstore.manifest import read_records
from mile_engine.runstore.records import create_run_dir
from mile_engine.session import open_run, resume_settings
from mile_engine.trainer import Trainer
from tests.helpers.settings import tiny

# digits, batch 8, val 64, k_t 3, k_s 2, 2 generations, a record per step: 10 steps;
# steps 4-5 and 9-10 are imitation steps.
TOTAL = 10


class Recorder:
    """Collects the loss of every step, and stops the run after step `stop_at`."""

    def __init__(self, control: Control | None = None, stop_at: int | None = None) -> None:
        self.control, self.stop_at = control, stop_at
        self.losses: dict[int, float] = {}
        self.events: list[ev.Event] = []

    def __call__(self, event: ev.Event) -> None:
        self.events.append(event)
        if isinstance(event, ev.StepLogged):
            self.losses[event.global_step] = event.loss
            if self.control is not None and event.global_step == self.stop_at:
                self.control.stop()


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[int, float], Trainer]:
    """The reference: the whole run in one go."""
    recorder = Recorder()
    trainer = Trainer(tiny(), tmp_path_factory.mktemp("straight"), sinks=[recorder])
    assert trainer.train().status == "finished"
    return recorder.losses, trainer


def _stopped_run(settings: Settings, stop_at: int) -> Path:
    run_dir = create_run_dir(settings)
    control = Control()
    checkpointer = RunCheckpointer(run_dir, settings.max_checkpoint_num)
    trainer = Trainer(settings, run_dir, sinks=[Recorder(control, stop_at)], control=control,
                      checkpointer=checkpointer)
    assert trainer.train().status == "stopped"
    checkpointer.close()
    return run_dir


def test_resume_is_exact(straight: tuple[dict[int, float], Trainer], tmp_path: Path) -> None:
    # One run stopped and resumed three times (one full run of compute): at the end of
    # an interactive phase (the teacher copy comes after the resume), in the middle of
    # an imitation phase, and past a generation boundary (evaluation, scheduler, best).
    settings = tiny(checkpoint_path=str(tmp_path / "runs"))
    run_dir = _stopped_run(settings, 3)
    losses: dict[int, float] = {}
    for stop_at in (4, 7, None):
        newest = read_records(run_dir)[-1]
        assert newest.reason == "stop"
        control = Control()
        recorder = Recorder(control, stop_at)
        trainer = open_run(settings, [recorder], control, resume=run_dir)
        assert trainer.resumed_from == str(run_dir / newest.file)
        assert trainer.global_step == newest.global_step
        status = trainer.train().status
        assert status == ("finished" if stop_at is None else "stopped")
        assert sorted(recorder.losses) == list(
            range(newest.global_step + 1, (stop_at or TOTAL) + 1))
        losses.update(recorder.losses)

    reference_losses, reference = straight
    for step, loss in losses.items():
        assert loss == reference_losses[step], f"step {step}"
    for (name, a), (_, b) in zip(trainer.student.state_dict().items(),
                                 reference.student.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    for a, b in zip(trainer.teacher.state_dict().values(),
                    reference.teacher.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert trainer.history == reference.history
    assert trainer.best_metrics == reference.best_metrics
    assert trainer.optimizer.param_groups[0]["lr"] == reference.optimizer.param_groups[0]["lr"]


def test_resumed_run_continues_its_folder_and_metrics(tmp_path: Path) -> None:
    settings = tiny(checkpoint_path=str(tmp_path / "runs"))
    run_dir = _stopped_run(settings, 7)
    trainer = open_run(settings, resume="latest", overrides=["log_every=2"])
    assert trainer.run_dir == run_dir and trainer.settings.log_every == 2
    assert trainer.train().status == "finished"
    assert list((tmp_path / "runs").iterdir()) == [run_dir]
    assert "log_every = 2" in (run_dir / "settings.toml").read_text()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    started = [r for r in records if r["event"] == "RunStarted"]
    assert started[-1]["resumed_from"] and started[-1]["global_step"] == 7
    steps = [r["global_step"] for r in records if r["event"] == "StepLogged"]
    assert steps == [8, 10]  # every 2nd step of a phase, and each phase's last
    assert records[-1]["event"] == "RunEnded" and records[-1]["global_step"] == TOTAL
    saves = read_records(run_dir)
    assert saves[-1].global_step == TOTAL and len(saves) <= settings.max_checkpoint_num + 1


def test_resume_refuses_changes_that_alter_the_run() -> None:
    saved = tiny().to_dict()
    assert resume_settings(saved, ["epoch_num=5", "device=cpu"]).epoch_num == 5
    assert resume_settings(saved, ["k_t=3"]).k_t == 3  # unchanged values are fine
    with pytest.raises(SettingsError, match="'k_t' belongs to the resumed run"):
        resume_settings(saved, ["k_t=4"])
    with pytest.raises(SettingsError, match="'lr' belongs to the resumed run"):
        resume_settings(saved, ["lr=0.1"])


def test_a_failed_save_fails_the_run_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mile_engine.runstore import files as checkpoint_files

    def disk_full(obj: object, fh: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_files, "_write_payload", disk_full)
    settings = tiny(epoch_num=1, checkpoint_path=str(tmp_path / "runs"))
    recorder = Recorder()
    trainer = open_run(settings, [recorder])
    ended = trainer.train()
    assert ended.status == "failed" and "no space left on device" in (ended.error or "")
    assert isinstance(recorder.events[-1], ev.RunEnded)
    assert not list(trainer.run_dir.glob("*.pt")) and not list(trainer.run_dir.glob(".tmp-*"))
