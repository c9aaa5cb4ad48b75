"""Choosing the device and the arithmetic precision of a run."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

import torch

from mile_engine.config import Precision, SettingsError, allowed_text, shown, valid_device

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


def resolve_precision(setting: Precision, device: torch.device) -> torch.dtype:
    """The autocast dtype: `auto` is bf16 on CUDA devices that support it, else fp32."""
    if setting == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if setting == "fp16" and device.type != "cuda":
        raise SettingsError("precision 'fp16' needs a CUDA device; use bf16 or fp32 on the CPU.")
    return DTYPES[setting]


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
