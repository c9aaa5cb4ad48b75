"""The precision of a run: `auto`'s rule on the CPU (injected flags), layouts, checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from mile_engine import device as dev
from mile_engine import events as ev
from mile_engine.checkpoints import find_resume
from mile_engine.runstore.records import describe
from mile_engine.session import open_run
from mile_engine.trainer import Trainer
from tests.helpers.settings import tiny

CPU = torch.device("cpu")
BF16_CPU = frozenset({"avx512_bf16"})


def with_flags(monkeypatch: pytest.MonkeyPatch, flags: frozenset[str]) -> None:
    """Make the processor report `flags` as its bf16 matrix units."""
    monkeypatch.setattr(dev, "cpu_bf16_flags", lambda: flags)


@pytest.mark.parametrize(
    ("flags", "side", "expected"),
    [
        (frozenset(), 224, torch.float32),  # no bf16 units: fp32 at any size
        (BF16_CPU, 24, torch.float32),  # digits: bf16 measured slower
        (BF16_CPU, 39, torch.float32),
        (BF16_CPU, 40, torch.bfloat16),  # the threshold, between 24 (slower) and 42 (faster)
        (BF16_CPU, 42, torch.bfloat16),
        (BF16_CPU, 84, torch.bfloat16),
        (frozenset({"amx_bf16"}), 224, torch.bfloat16),
        (BF16_CPU, None, torch.float32),  # an unknown size counts as small
    ],
)
def test_auto_on_the_cpu_needs_bf16_units_and_large_inputs(
    monkeypatch: pytest.MonkeyPatch, flags: frozenset[str], side: int | None,
    expected: torch.dtype,
) -> None:
    with_flags(monkeypatch, flags)
    choice = dev.choose_precision("auto", CPU, side)
    assert choice.dtype == expected
    assert choice.reason.startswith("auto: ")
    if expected == torch.bfloat16:
        assert choice.reason == f"auto: CPU has {next(iter(flags))}, {side} px inputs"


@pytest.mark.parametrize("flags", [frozenset(), BF16_CPU])
def test_fp32_and_bf16_force_their_dtype(
    monkeypatch: pytest.MonkeyPatch, flags: frozenset[str]
) -> None:
    with_flags(monkeypatch, flags)
    for side in (24, 224):
        assert dev.choose_precision("fp32", CPU, side) == dev.PrecisionChoice(
            torch.float32, "set")
        assert dev.choose_precision("bf16", CPU, side) == dev.PrecisionChoice(
            torch.bfloat16, "set")


def test_bf16_flags_come_from_the_flags_line(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: amx_bf16 in a name\n"
                       "flags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n")
    assert dev.cpu_bf16_flags(cpuinfo) == {"avx512_bf16"}
    older = tmp_path / "older"
    older.write_text("flags\t\t: fpu sse2 avx2 amx_tile\n")
    assert dev.cpu_bf16_flags(older) == set()
    assert dev.cpu_bf16_flags(tmp_path / "absent") == set()


def run_started(trainer: Trainer) -> ev.RunStarted:
    seen: list[ev.Event] = []
    trainer.sinks.append(seen.append)
    trainer.control.stop()
    trainer.train()
    return next(e for e in seen if isinstance(e, ev.RunStarted))


def test_auto_bf16_run_says_why_and_runs_channels_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_flags(monkeypatch, BF16_CPU)
    trainer = Trainer(tiny(precision="auto", image_size=64), Path())
    assert trainer.dtype == torch.bfloat16
    assert isinstance(trainer.student.conv1, nn.Conv2d)
    conv = trainer.student.conv1.weight
    assert conv.dtype == torch.float32  # autocast keeps fp32 weights
    assert conv.is_contiguous(memory_format=torch.channels_last)
    line = describe(run_started(trainer))
    assert line is not None and "in bf16 (auto: CPU has avx512_bf16, 64 px inputs)" in line


def test_auto_on_digits_stays_fp32_and_contiguous(monkeypatch: pytest.MonkeyPatch) -> None:
    with_flags(monkeypatch, BF16_CPU)
    trainer = Trainer(tiny(precision="auto"), Path())  # digits: 24 px
    assert trainer.dtype == torch.float32
    assert isinstance(trainer.student.conv1, nn.Conv2d)
    conv = trainer.student.conv1.weight
    assert not conv.is_contiguous(memory_format=torch.channels_last)
    line = describe(run_started(trainer))
    assert line is not None and "in fp32 (auto: CPU has avx512_bf16 but 24 px inputs" in line


def tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a nested checkpoint object."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from tensors(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from tensors(value)


@pytest.mark.parametrize(("first", "then"), [("bf16", "fp32"), ("fp32", "bf16")])
def test_checkpoints_hold_fp32_and_resume_in_the_other_precision(
    tmp_path: Path, first: str, then: str
) -> None:
    settings = tiny(precision=first, image_size=64, epoch_num=1, k_t=2, k_s=2, val_size=16,
                    checkpoint_path=str(tmp_path / "runs"))
    assert open_run(settings).train().status == "finished"
    point = find_resume("latest", tmp_path / "runs")
    floats = [t for t in tensors(point.state) if t.is_floating_point()]
    assert len(floats) > 2 * len(list(Trainer(settings, Path()).student.state_dict()))
    assert {t.dtype for t in floats} == {torch.float32}

    resumed = open_run(settings, resume="latest", overrides=[f"precision={then}", "epoch_num=2"])
    assert resumed.dtype == dev.DTYPES[then]  # type: ignore[index]
    for name, saved in point.state["student"].items():
        assert torch.equal(resumed.student.state_dict()[name], saved), name
    assert resumed.train().status == "finished"
    assert resumed.global_step == 2 * point.state["position"]["global_step"]
