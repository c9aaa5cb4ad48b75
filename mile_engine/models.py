"""Backbones: torchvision's ResNet definitions, trained from scratch (no weight download)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision import models as tv_models

from mile_engine.config import MODEL_CLASSES


def build_model(name: str, sigmoid_head: bool) -> nn.Module:
    """Build a backbone by its settings name.

    The weights are a plain torchvision state_dict: a saved model loads straight into
    `torchvision.models.resnet18(num_classes=10)` (or the matching model).

    Args:
        name: "resnet18-10", "resnet18" or "resnet50".
        sigmoid_head: start the classifier bias at -log(C), so that binary
            cross-entropy over many classes starts near its stable point.
    """
    num_classes = MODEL_CLASSES.get(name, 1000)  # interim, until build_model sizes heads
    factory = tv_models.resnet50 if name == "resnet50" else tv_models.resnet18
    model = factory(weights=None, num_classes=num_classes)
    if sigmoid_head:
        with torch.no_grad():
            model.fc.bias.fill_(-math.log(num_classes))
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
