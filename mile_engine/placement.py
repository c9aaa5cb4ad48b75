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


def place(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a network to `device`; on CUDA in channels_last, the layout cuDNN runs fastest."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    """The autocast of a run: none in fp32, else `dtype` on `device`'s type."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def model_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch of model-ready images on `device`, in the layout `place` gives the network."""
    x = images.to(device)
    if device.type == "cuda":
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()


def run_model(
    model: nn.Module, images: torch.Tensor, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Float32 logits of `model` for a batch of model-ready images, without gradients."""
    with torch.inference_mode(), autocast(device, dtype):
        return model(model_input(images, device)).float()
