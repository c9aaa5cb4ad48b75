"""Weight snapshots through the control: taken by the trainer between two steps, never
from another thread in the middle of one.

The oracle is the trainer's own thread: a step is held open while the snapshot is asked
for, and the weights the trainer has right after that step (copied on its thread, where
nothing moves) are what the snapshot must hold.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from mile_engine.control import Control, Snapshot
from mile_engine.trainer import Trainer
from tests.helpers.settings import tiny

WAIT = 120.0  # a hang guard only


def _copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}


def test_a_snapshot_asked_for_mid_step_is_taken_after_that_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    control = Control()
    trainer = Trainer(tiny(checkpoint_path=str(tmp_path), epoch_num=1, k_t=3, k_s=3),
                      tmp_path, control=control)
    in_step, release = threading.Event(), threading.Event()
    after: dict[str, Any] = {}
    real = trainer._train_step

    def held_step(phase: Any, batch: Any) -> None:
        held = trainer.global_step == 1  # the second step
        if held:
            in_step.set()
            assert release.wait(WAIT)
        real(phase, batch)
        if held:  # the weights the step left, read on the trainer's own thread
            after.update(student=_copy(trainer.student), step=trainer.global_step + 1)

    monkeypatch.setattr(trainer, "_train_step", held_step)
    worker = threading.Thread(target=trainer.train)
    worker.start()
    try:
        assert in_step.wait(WAIT)
        future = control.request_snapshot()
        assert not future.done()  # the step is under way: nothing is copied from here
    finally:
        release.set()
    snap = future.result(WAIT)
    worker.join(WAIT)
    assert snap.global_step == after["step"] == 2
    assert snap.student.keys() == after["student"].keys()
    assert all(torch.equal(snap.student[k], v) for k, v in after["student"].items())
    assert all(v.device.type == "cpu" for v in snap.student.values())
    # A copy: the run went on training (4 more steps), the snapshot did not move.
    assert any(not torch.equal(snap.student[k], v) for k, v in _copy(trainer.student).items())


def test_an_idle_trainer_is_copied_at_once(tmp_path: Path) -> None:
    control = Control()
    trainer = Trainer(tiny(checkpoint_path=str(tmp_path)), tmp_path, control=control)
    future = control.request_snapshot()
    assert future.done()  # not training: its weights are still
    snap = future.result()
    assert snap.global_step == 0
    student = _copy(trainer.student)
    assert all(torch.equal(snap.student[k], v) for k, v in student.items())
    assert all(torch.equal(snap.teacher[k], v) for k, v in _copy(trainer.teacher).items())


def test_requests_wait_for_a_trainer_and_can_be_withdrawn() -> None:
    control = Control()
    early, withdrawn = control.request_snapshot(), control.request_snapshot()
    assert not early.done() and withdrawn.cancel()
    taken: list[int] = []

    def take() -> Snapshot:
        taken.append(1)
        return Snapshot({}, {}, 7)

    control.attach_snapshots(take)
    with control.training():
        assert not early.done()  # inside the loop: only between steps
        control.serve_snapshots()
    assert early.result(0).global_step == 7 and taken == [1]  # the withdrawn one is skipped


def test_a_failed_copy_reaches_the_asker_not_the_trainer() -> None:
    control = Control()

    def broken() -> Snapshot:
        raise RuntimeError("out of memory")

    control.attach_snapshots(broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        control.request_snapshot().result(0)
