"""Exact resume: N steps straight equal k steps, a stop, a resume and N-k more steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from mile_engine import events as ev
from mile_engine.checkpoints import RunCheckpointer
from mile_engine.config.schema import Settings, SettingsError
from mile_engine.control import Control
from mile_engine.data import build_source
from mile_engine.data.batch import Batch
from mile_engine.data.tiles import PHILOX_STATE_BYTES, GridSource
from mile_engine.runstore.manifest import load_checkpoint, read_records
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


# -------------------------------------------------------------------------- on another device type
# Resuming a grid data stream on another device type (a CUDA checkpoint on the CPU).
CPU = torch.device("cpu")


def _source(warned: list[str] | None = None, seed: int = 0) -> GridSource:
    sink = warned.append if warned is not None else None
    source = build_source(tiny(seed=seed), CPU, warn=sink)
    assert isinstance(source, GridSource)
    return source


def _philox_state(seed: int = 1234, offset: int = 40) -> torch.Tensor:
    """A CUDA generator's state as `get_state` returns it: (seed, offset), 16 bytes."""
    state = torch.tensor([seed, offset], dtype=torch.int64).view(torch.uint8)
    assert state.numel() == PHILOX_STATE_BYTES
    return state


def _cuda_data_state(with_device: bool = True) -> dict[str, Any]:
    """The data state a CUDA run saves after 5 batches (or only its generator, if old)."""
    if not with_device:
        return {"generator": _philox_state()}
    return {"generator": _philox_state(), "device": "cuda", "draws": 5, "seed": 0}


def _same(a: Batch, b: Batch) -> bool:
    assert a.real is not None and b.real is not None
    return (torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
            and torch.equal(a.real, b.real))


@pytest.mark.parametrize("with_device", [True, False], ids=["recorded", "by-length"])
def test_cuda_stream_resumes_on_cpu_deterministically(with_device: bool) -> None:
    warned_a: list[str] = []
    warned_b: list[str] = []
    a, b = _source(warned_a), _source(warned_b)
    a.load_state_dict(_cuda_data_state(with_device))
    b.load_state_dict(_cuda_data_state(with_device))
    assert warned_a == a.notes and len(a.notes) == 1
    assert "drawn on cuda" in a.notes[0] and "on cpu" in a.notes[0]
    assert "not bit-identical" in a.notes[0]
    assert warned_b == b.notes
    # Two resumes of one checkpoint draw the same stream ...
    first = a.train_batch()
    assert _same(first, b.train_batch())
    assert _same(a.train_batch(), b.train_batch())
    assert a.draws == (5 if with_device else 0) + 2
    # ... which is not the run's fresh-seed stream.
    assert not _same(first, _source().train_batch())


def test_cross_device_reseed_depends_on_batches_drawn() -> None:
    a, b = _source([]), _source([])
    a.load_state_dict(_cuda_data_state())
    b.load_state_dict({**_cuda_data_state(), "draws": 6})
    assert not _same(a.train_batch(), b.train_batch())


def test_same_device_round_trip_is_exact() -> None:
    warned: list[str] = []
    a, b = _source(), _source(warned)
    for _ in range(3):
        a.train_batch()
    state = a.state_dict()
    assert state["device"] == "cpu" and state["draws"] == 3 and state["seed"] == 0
    b.load_state_dict(state)
    assert warned == [] and b.notes == [] and b.draws == 3
    for _ in range(2):
        assert _same(a.train_batch(), b.train_batch())


def test_resumed_cross_device_stream_then_resumes_exactly() -> None:
    # After the one-off reseed the stream is a CPU stream: later CPU resumes are exact.
    a = _source([])
    a.load_state_dict(_cuda_data_state())
    a.train_batch()
    b = _source([])
    b.load_state_dict(a.state_dict())
    assert b.notes == []
    assert _same(a.train_batch(), b.train_batch())


def test_old_format_cpu_state_still_loads_exactly() -> None:
    warned: list[str] = []
    a, b = _source(), _source(warned)
    a.train_batch()
    b.load_state_dict({"generator": a.generator.get_state()})
    assert warned == [] and b.draws == 0
    assert _same(a.train_batch(), b.train_batch())


def test_trainer_resumes_a_cuda_checkpoint_on_cpu(tmp_path: Path) -> None:
    # A whole trainer state as a CUDA run writes it (CUDA data stream and CUDA RNG
    # states), saved and read back through the checkpoint loader, onto a CPU trainer.
    saved = Trainer(tiny(), tmp_path).state_dict()
    saved["data"] = _cuda_data_state()
    saved["rng"]["cuda"] = [_philox_state()]
    saved["meta"] = {}  # the loader checks that the key is there
    torch.save(saved, tmp_path / "cuda.pt")
    state = load_checkpoint(tmp_path / "cuda.pt")
    events: list[ev.Event] = []
    trainer = Trainer(tiny(), tmp_path, sinks=[events.append])
    trainer.load_state_dict(state)
    warnings = [e.text for e in events if isinstance(e, ev.Message) and e.level == "warning"]
    assert len(warnings) == 1 and "drawn on cuda" in warnings[0]


def test_an_unfused_optimizer_state_resumes_with_this_devices_fused_kernel(
    tmp_path: Path,
) -> None:
    # Saves from before the fused kernel, or from a device without one, record
    # fused=None; loading them must not switch this CPU back to the slow per-parameter loop,
    # and must keep the saved momentum.
    trainer = Trainer(tiny(), tmp_path)
    assert all(group["fused"] for group in trainer.optimizer.param_groups)
    trainer.interactive_step(trainer.source.train_batch())
    saved = trainer.state_dict()
    for group in saved["optimizer"]["param_groups"]:
        group["fused"] = None
    resumed = Trainer(tiny(), tmp_path)
    resumed.load_state_dict(saved)
    assert all(group["fused"] for group in resumed.optimizer.param_groups)
    for kept, loaded in zip(trainer.student.parameters(), resumed.student.parameters(),
                            strict=True):
        assert torch.equal(trainer.optimizer.state[kept]["momentum_buffer"],
                           resumed.optimizer.state[loaded]["momentum_buffer"])
