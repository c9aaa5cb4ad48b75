"""Where and in what arithmetic a network runs: one home for the trainer and inference.

The trainer's steps and evaluation and the inspection commands place networks, lay out
their inputs and pick the autocast the same way, so that a checkpoint scores in
`mile-tui inspect` exactly what its run recorded.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn


def channels_last(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether networks and inputs run in channels_last on `device` in `dtype`.

    cuDNN runs fastest in it; on the CPU, oneDNN's bf16 convolutions do (measured on an
    AVX-512 BF16 processor: benchmarks/precision_probe.py, docs/speed.md), fp32 ones not.
    """
    return device.type == "cuda" or dtype == torch.bfloat16


def place(model: nn.Module, device: torch.device, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Move a network to `device`, in the layout `channels_last` picks for `dtype` there."""
    model = model.to(device)
    if channels_last(device, dtype):
        model = model.to(memory_format=torch.channels_last)
    return model


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    """The autocast of a run: none in fp32, else `dtype` on `device`'s type."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def model_input(
    images: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A batch of model-ready images on `device`, in the layout `place` gives the network."""
    x = images.to(device)
    if channels_last(device, dtype):
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()


def run_model(
    model: nn.Module, images: torch.Tensor, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Float32 logits of `model` for a batch of model-ready images, without gradients."""
    with torch.inference_mode(), autocast(device, dtype):
        return model(model_input(images, device, dtype)).float()
