"""Resuming a grid data stream on another device type (a CUDA checkpoint on the CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mile_engine import events as ev
from mile_engine.data import build_source
from mile_engine.data.batch import Batch
from mile_engine.data.tiles import PHILOX_STATE_BYTES, GridSource
from mile_engine.runstore.manifest import load_checkpoint
from mile_engine.trainer import Trainer
from tests.helpers.settings import tiny

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
