"""Choosing the device and the arithmetic precision of a run."""

from __future__ import annotations

import functools
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

from mile_engine.config.schema import Precision, SettingsError
from mile_engine.config.validation import allowed_text, shown, valid_device

DTYPES: dict[Precision, torch.dtype] = {
    "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
}


def resolve_device(setting: str) -> torch.device:
    """Turn `auto`, `cpu`, `cuda` or `cuda:N` into a device that exists here.

    Raises:
        SettingsError: a string that is not a device setting (checked here, not by torch,
            which fails with a RuntimeError), or CUDA asked for on a machine without it.
    """
    if not valid_device(setting):
        raise SettingsError(f"device {shown(setting)}: must be {allowed_text('device')}.")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(
                f"device '{setting}': CUDA is not available on this machine "
                f"(torch {torch.__version__}); use device = \"cpu\" or \"auto\"."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingsError(
                f"device '{setting}': this machine has {torch.cuda.device_count()} CUDA "
                "device(s)."
            )
    return device


BF16_MIN_SIDE = 40
"""The smallest input side at which `auto` takes bf16 on a CPU with bf16 matrix units.

Below it, bf16 autocast with channels_last is no faster than fp32 for a ResNet step,
since small images leave the matrix units too little work; from it up, it is faster
(benchmarks/precision_probe.py; the numbers and the sides measured are in docs/speed.md).
"""


@dataclass(frozen=True)
class PrecisionChoice:
    """The autocast dtype of a run and why it was chosen, for the run's first lines."""

    dtype: torch.dtype
    reason: str


def choose_precision(
    setting: Precision, device: torch.device, input_side: int | None = None
) -> PrecisionChoice:
    """The autocast dtype for a precision setting on `device`, and the reason.

    `fp32`, `bf16` and `fp16` force their dtype. `auto` is bf16 on CUDA devices that
    support it; on the CPU, bf16 where the processor has bf16 matrix units (its flags, read
    through `cpu_bf16_flags`, which tests replace) and the inputs are at least
    `BF16_MIN_SIDE` pixels on a side (`input_side`; unknown counts as small), else fp32.

    Raises:
        SettingsError: fp16 asked for on a device other than CUDA.
    """
    if setting != "auto":
        if setting == "fp16" and device.type != "cuda":
            raise SettingsError(
                "precision 'fp16' needs a CUDA device; use bf16 or fp32 on the CPU."
            )
        return PrecisionChoice(DTYPES[setting], "set")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice(torch.bfloat16, "auto: the CUDA device supports bf16")
        return PrecisionChoice(torch.float32, "auto: the CUDA device has no bf16")
    flags = cpu_bf16_flags()
    if not flags:
        return PrecisionChoice(torch.float32, "auto: the CPU has no bf16 matrix units")
    has = f"CPU has {', '.join(sorted(flags))}"
    if input_side is None or input_side < BF16_MIN_SIDE:
        size = "input size unknown" if input_side is None else f"{input_side} px inputs"
        return PrecisionChoice(
            torch.float32, f"auto: {has} but {size}, below {BF16_MIN_SIDE} px bf16 is slower"
        )
    return PrecisionChoice(torch.bfloat16, f"auto: {has}, {input_side} px inputs")


def resolve_precision(
    setting: Precision, device: torch.device, input_side: int | None = None
) -> torch.dtype:
    """The autocast dtype `choose_precision` picks, without the reason."""
    return choose_precision(setting, device, input_side).dtype


BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU flags of bf16 matrix units: with one of them, bf16 autocast can beat fp32."""


@functools.cache
def cpu_bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The bf16 matrix flags this processor reports (none where `cpuinfo` is unreadable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return frozenset(flag for flag in BF16_FLAGS if flag in flags)


def precision_name(dtype: torch.dtype) -> Precision:
    """The settings name of an autocast dtype."""
    return {v: k for k, v in DTYPES.items()}[dtype]


def check_compile(device: torch.device) -> None:
    """Refuse `compile = true` where torch.compile would fail at the first step.

    On the CPU, Inductor builds its kernels as Python extensions with `$CXX` (g++ by
    default), so it needs that compiler and the Python headers; finding out before the
    run folder exists beats a run that fails at step one. CUDA kernels come from Triton.

    Raises:
        SettingsError: the compiler or the headers are missing.
    """
    if device.type != "cpu":
        return
    compiler = os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    missing = [what for what, found in (
        (f"a C++ compiler ({compiler})", shutil.which(compiler) is not None),
        (f"the Python headers ({headers})", headers.is_file()),
    ) if not found]
    if missing:
        raise SettingsError(
            f"compile = true on the CPU needs {' and '.join(missing)}; install them "
            "(Debian: g++ python3-dev) or set compile = false."
        )
