"""What a backbone can take as input and which weights it names, known without
importing torch (torchvision is imported only to read a weights enum).

The console checks the settings on screen as they are typed; importing torch and
torchvision for that would cost it seconds at every start. Everything here reads the
model's name and the settings only; `mile_engine.models` builds the networks with it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from mile_engine.config.schema import MODELS, Settings, SettingsError

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

# Settings names that are not torchvision's own: the network they stand for.
ALIASES = {"resnet18-10": "resnet18"}
# Native side of a grid image (3 tiles of 8 or 28 px).
GRID_SIDE = {"digits": 24, "mnist": 84, "fashion-mnist": 84}
# ImageNet's evaluation crop, the side of image files when nothing else decides.
DEFAULT_CROP = 224
# ImageNet's channel statistics, which torchvision's pretrained weights expect.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# Validation images are resized to 256/224 of the crop side, then centre-cropped.
VAL_RESIZE = 256 / 224
# The smallest input side each family takes (measured: one image, eval mode); below it a
# pooling or convolution has nothing left to work on. Families absent take any side.
MIN_SIDE = {
    "alexnet": 63, "convnext": 32, "densenet": 29, "googlenet": 15, "inception_v3": 75,
    "squeezenet1_0": 21, "squeezenet1_1": 17, "swin": 4, "vgg": 32,
}
# MaxViT partitions its four stages' maps (side / 4 ... side / 32) into 7x7 windows.
MAXVIT_MULTIPLE = 224
# torchvision weights enum names: "ResNet50_Weights.IMAGENET1K_V2", or a member name
# alone ("DEFAULT", "IMAGENET1K_V1") for the model's own enum.
_ENUM_NAME = re.compile(r"(?:[A-Za-z][A-Za-z0-9_]*_Weights\.)?[A-Z][A-Z0-9_]*")


def architecture(name: str) -> str:
    """The torchvision model a settings name stands for (`resnet18-10` -> `resnet18`)."""
    return ALIASES.get(name, name)


def torchvision_name(name: str) -> str:
    """The torchvision model a settings name builds (`resnet18-10` -> `resnet18`).

    Raises:
        SettingsError: not a torchvision classification model, with the nearest names.
    """
    if name not in MODELS:
        near = MODELS.nearest(name)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise SettingsError(f"model {name!r} is not a torchvision classification model.{hint}")
    return architecture(name)


def resolve_enum(weights: str, model: str) -> WeightsEnum:
    """The torchvision weights enum member `weights` names, for model `model`.

    Raises:
        SettingsError: unknown enum or member, or weights of another model.
    """
    from torchvision import models as tv_models

    arch = torchvision_name(model)
    own = tv_models.get_model_weights(arch)
    if "." not in weights:
        member = own.__members__.get(weights)  # DEFAULT is an alias member
        if member is None:
            names = ", ".join(["DEFAULT", *(m.name for m in own)])
            raise SettingsError(
                f"weights {weights!r}: {own.__name__} has no such member; known: {names}."
            )
        return member
    try:
        member = tv_models.get_weight(weights)
    except (ValueError, KeyError, AttributeError):
        raise SettingsError(
            f"weights {weights!r}: not a torchvision weights name (for {arch}: "
            f"{', '.join(f'{own.__name__}.{m.name}' for m in own)})."
        ) from None
    if type(member) is not own:
        raise SettingsError(
            f"weights {weights!r} are for another model; {arch} takes "
            f"{', '.join(f'{own.__name__}.{m.name}' for m in own)}."
        )
    return member


def cache_file(member: WeightsEnum) -> Path:
    """Where torch's hub cache keeps the file of a weights enum member ($TORCH_HOME)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(member.url).path)


def is_enum_name(weights: str) -> bool:
    """Whether `weights` names a torchvision weights enum rather than a file."""
    return bool(_ENUM_NAME.fullmatch(weights)) and not os.path.exists(weights)


def min_side(arch: str) -> int:
    """The smallest input side a torchvision model takes (1 when any side works)."""
    for prefix, side in MIN_SIDE.items():
        if arch.startswith(prefix):
            return side
    return 1


def vit_patch(arch: str) -> int:
    """The patch side of a ViT (`vit_b_16` -> 16); 0 for other models."""
    return int(arch.rsplit("_", 1)[1]) if arch.startswith("vit_") else 0


def check_input_side(name: str, side: int) -> None:
    """Refuse an input side model `name` cannot take, before anything is built.

    Raises:
        SettingsError: the side is below the family's smallest, or not a multiple of a
            ViT's patches or of MaxViT's 224, with the value to set.
    """
    arch = architecture(name)
    patch = vit_patch(arch)
    if patch and side % patch:
        raise SettingsError(
            f"{arch}: the input side must be a multiple of its {patch}-pixel patches "
            f"(got {side}); set image_size to a multiple of {patch}, e.g. "
            f"{max(patch, side // patch * patch)}."
        )
    if arch == "maxvit_t" and side % MAXVIT_MULTIPLE:
        raise SettingsError(
            f"{arch}: the input side must be a multiple of {MAXVIT_MULTIPLE} (its 7x7 "
            f"windows at 1/32 scale), got {side}; set image_size = 224."
        )
    minimum = min_side(arch)
    if side < minimum:
        raise SettingsError(
            f"{arch} needs inputs of at least {minimum}x{minimum} pixels, got {side}; "
            f"set image_size = {minimum} or more."
        )


def input_side(settings: Settings) -> int:
    """The side of the model's inputs: `image_size`, else the dataset's own (the grids'
    native side; for image files the weights' crop, else 224).

    Imports torchvision only to read a weights enum's crop size.
    """
    if settings.dataset in GRID_SIDE:
        return settings.image_size or GRID_SIDE[settings.dataset]
    if settings.image_size:
        return settings.image_size
    if settings.weights and is_enum_name(settings.weights):
        preset = resolve_enum(settings.weights, settings.model).transforms()
        return int(preset.crop_size[0])
    return DEFAULT_CROP
