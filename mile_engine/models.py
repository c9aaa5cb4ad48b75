"""Backbones: any torchvision classification model, its head sized to the data's classes.

A model is built by its settings name (`resnet18-10` or a torchvision name), from scratch
or from weights on disk: a state dict file, or a torchvision weights enum whose file is
already in torch's hub cache. Nothing is ever downloaded here: a training run that
quietly fetches hundreds of megabytes, or hangs offline, is worse than a clear error.

The weights stay plain torchvision state dicts: a saved student loads straight into
`torchvision.models.get_model(name, num_classes=C)`.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mile_engine.config.schema import Settings, SettingsError
from mile_engine.config.validation import shown_path
from mile_engine.model_inputs import (
    DEFAULT_CROP,
    MEAN,
    STD,
    cache_file,
    check_input_side,
    is_enum_name,
    resolve_enum,
    torchvision_name,
)
from mile_engine.oserrors import NotRegularFileError, open_regular

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

# ImageNet's evaluation recipe: resize the short side to 256, centre-crop 224.
DEFAULT_RESIZE = 256
# Auxiliary classifiers (GoogLeNet, Inception v3) are off: MILe trains one head. A
# torchvision weights file holds them; they are skipped, not an error.
AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")
# Wrappers a saved state dict may sit in: this project's checkpoints ("student"), common
# training scripts ("state_dict", "model").
WRAPPER_KEYS = ("student", "state_dict", "model")
# Prefixes that DistributedDataParallel and torch.compile add to every key.
KEY_PREFIXES = ("module.", "_orig_mod.")
# DenseNet files from torchvision use pre-1.0 names ("norm.1"); torchvision renames them
# when it loads them, so must we.
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)

Report = Callable[[str], None]


@dataclass(frozen=True)
class InputSpec:
    """How images become model inputs: crop side, resize side (of the short edge), and
    the per-channel normalisation."""

    image_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# ---------------------------------------------------------------------------- weights
def _read_state_dict(path: Path, what: str) -> OrderedDict[str, torch.Tensor]:
    """A flat name -> tensor mapping from a weights file, unwrapped and de-prefixed."""
    try:
        # Opened as a regular file first: torch.load would wait for ever on a named pipe.
        with open_regular(path) as fh:
            raw = torch.load(fh, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SettingsError(f"{what}: no such file.") from None
    except IsADirectoryError:
        raise SettingsError(f"{what}: is a folder; give a state dict file.") from None
    except NotRegularFileError as exc:
        raise SettingsError(f"{what}: {exc.strerror}; give a state dict file.") from None
    except OSError as exc:
        raise SettingsError(f"{what}: cannot be read ({exc.strerror}).") from None
    except Exception as exc:  # pickle errors, unsafe globals, truncated zip archives
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SettingsError(f"{what}: not a readable state dict ({first[:160]}).") from None
    state: Any = raw
    for key in WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not state or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise SettingsError(f"{what}: holds no state dict (a mapping of names to tensors).")
    _refuse_non_finite(state, what)
    flat: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        match = _DENSENET_OLD_KEY.match(_unprefixed(key))
        flat[match.group(1) + match.group(2) if match else _unprefixed(key)] = value
    # Modules read their format version from the state dict's metadata (MNASNet refuses
    # to load without it); keep it, under the same unprefixed module names.
    metadata = getattr(state, "_metadata", None)
    if isinstance(metadata, Mapping):
        flat._metadata = OrderedDict(  # type: ignore[attr-defined]
            (_unprefixed(k + ".")[:-1], v) for k, v in metadata.items()
        )
    return flat


def _refuse_non_finite(state: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse weights holding NaN or infinity: a run would train on `loss nan` from its
    first step. One pass over the tensors, once per run, small beside loading them."""
    bad = [k for k, v in state.items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise SettingsError(
            f"{what}: tensor {bad[0]!r}{more} holds NaN or infinite values; these weights "
            "cannot train."
        )


def _unprefixed(key: str) -> str:
    """`key` without the prefixes DDP and torch.compile add."""
    for prefix in KEY_PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


# ---------------------------------------------------------------------------- the head
def find_head(model: nn.Module) -> tuple[str, nn.Module]:
    """The classifier head: the last Linear (or 1x1 Conv2d, SqueezeNet) of the network.

    torchvision registers every classification model's final layer last among its
    Linear and Conv2d modules (fc, classifier[-1], heads.head, head); auxiliary heads,
    which are registered before it, are turned off here anyway.
    """
    head: tuple[str, nn.Module] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) or (
            isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
        ):
            head = (name, module)
    if head is None:
        raise SettingsError(f"{type(model).__name__}: no classifier layer found.")
    return head


def head_classes(module: nn.Module) -> int:
    """The number of outputs of a head layer."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    raise TypeError(f"not a head layer: {type(module).__name__}")


# ---------------------------------------------------------------------------- building
def _architecture_kwargs(
    arch: str, image_size: int, member: WeightsEnum | None
) -> dict[str, Any]:
    """Constructor arguments beyond num_classes: those torchvision sets for its weights,
    and the input side of the models whose shape depends on it."""
    kwargs: dict[str, Any] = {}
    if arch in ("googlenet", "inception_v3"):
        # init_weights=True: torchvision's future default, stated to silence its warning.
        kwargs.update(aux_logits=False, init_weights=member is None)
        if member is not None:
            # torchvision's weights expect the inputs re-normalised inside the network.
            kwargs["transform_input"] = True
    if image_size:
        check_input_side(arch, image_size)
    # ViT and MaxViT are built for the run's side: ViT's position embeddings are
    # interpolated from the weights' grid when it differs (`_fit_position_embeddings`);
    # MaxViT's weights do not depend on the side.
    side = image_size or (member.meta["min_size"][0] if member is not None else DEFAULT_CROP)
    if arch.startswith("vit_"):
        kwargs["image_size"] = side
    elif arch == "maxvit_t":
        kwargs["input_size"] = (side, side)
    return kwargs


def build_model(
    name: str,
    num_classes: int,
    sigmoid_head: bool,
    weights: str = "",
    report: Report | None = None,
    image_size: int = 0,
) -> nn.Module:
    """Build a backbone by its settings name, its head sized to `num_classes`.

    `resnet18-10`, `resnet18` and `resnet50` from scratch are exactly
    `torchvision.models.<net>(weights=None, num_classes=C)` (same random draws), with the
    sigmoid bias below.

    Args:
        name: a settings model name (`resnet18-10` or any torchvision classifier).
        num_classes: C, the classes of the data source.
        sigmoid_head: start a fresh head's bias at -log(C), so that binary cross-entropy
            over many classes starts near its stable point.
        weights: "" (from scratch), a state dict file, or a torchvision weights enum name
            whose file is in torch's hub cache. A head of another class count starts
            fresh; every other tensor must fit.
        report: receives one line per fact worth a run's first lines (what was loaded
            and from where, which layers start fresh).
        image_size: the input side, for the models whose layers depend on it (ViT,
            MaxViT); 0 takes their default (the weights' size, else 224).

    Raises:
        SettingsError: unknown model, missing or unfitting weights, an input side the
            model cannot take.
    """
    from torchvision import models as tv_models

    if num_classes < 1:
        raise SettingsError(f"model {name!r}: needs at least one class, got {num_classes}.")
    arch = torchvision_name(name)
    member = resolve_enum(weights, name) if weights and is_enum_name(weights) else None
    kwargs = _architecture_kwargs(arch, image_size, member)
    model = tv_models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    head_name, head = find_head(model)
    if head_classes(head) != num_classes:  # a torchvision change this code does not know
        raise SettingsError(f"{arch}: its last layer {head_name!r} is not the classifier.")
    fresh_head = True
    if weights:
        if member is not None:
            path = cache_file(member)
            if not path.is_file():
                raise SettingsError(
                    f"weights {weights!r}: {shown_path(path)} is not in torch's cache, and "
                    "runs never download; fetch it first (python -c \"import torchvision; "
                    f"torchvision.models.get_model('{arch}', weights='{member}')\") or set "
                    "TORCH_HOME to the cache that holds it."
                )
            what = f"weights {member} ({shown_path(path)})"
        else:
            path = Path(weights).expanduser()
            what = f"weights {shown_path(path)}"
        state = _fit_position_embeddings(model, _read_state_dict(path, what), what, report)
        fresh_head = _load_weights(model, state, head_name, what, report)
    if sigmoid_head and fresh_head:
        bias = getattr(head, "bias", None)
        if isinstance(bias, torch.Tensor):
            with torch.no_grad():
                bias.fill_(-math.log(num_classes))
        elif report is not None:
            # MaxViT's head has no bias; adding one would stop its weights loading into
            # torchvision's own model, so the sigmoids start at 0.5 instead.
            report(f"{arch}: its head {head_name!r} has no bias, so the sigmoid "
                   f"initialisation (bias -log {num_classes}) does not apply.")
    return model


def _fit_position_embeddings(
    model: nn.Module, state: OrderedDict[str, torch.Tensor], what: str,
    report: Report | None,
) -> OrderedDict[str, torch.Tensor]:
    """A ViT state whose position embeddings fit `model`'s input side: interpolated
    (bicubic, the class token kept) from the grid they were trained at, as torchvision's
    `interpolate_embeddings` does. Other models' states are returned unchanged."""
    from torchvision.models.vision_transformer import (
        VisionTransformer,
        interpolate_embeddings,
    )

    key = "encoder.pos_embedding"
    if not isinstance(model, VisionTransformer) or key not in state:
        return state
    theirs, ours = state[key].shape, model.state_dict()[key].shape
    if theirs == ours or theirs[-1] != ours[-1]:  # a width mismatch is reported later
        return state
    try:
        fitted = interpolate_embeddings(model.image_size, model.patch_size, state)
    except ValueError as exc:
        raise SettingsError(f"{what}: its position embeddings cannot be resized "
                            f"({exc}).") from None
    if report is not None:
        before = math.isqrt(theirs[1] - 1)
        after = model.image_size // model.patch_size
        report(f"position embeddings interpolated from {before}x{before} to {after}x{after} "
               f"patches for {model.image_size}x{model.image_size} inputs.")
    return fitted


def _load_weights(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    head_name: str,
    what: str,
    report: Report | None,
) -> bool:
    """Load `state` into `model`; every tensor must fit but the head's and aux heads'.

    Returns:
        Whether the head starts fresh (its tensors were absent or of another shape).

    Raises:
        SettingsError: tensors of the model missing from the file, or file tensors the
            model has no place for, named (the first three) and counted.
    """
    own = model.state_dict()
    # Files saved without metadata take the model's own (the current module versions).
    metadata = getattr(state, "_metadata", None) or getattr(own, "_metadata", None)
    head_keys = {k for k in own if k.startswith(head_name + ".")}
    loaded: OrderedDict[str, torch.Tensor] = OrderedDict()
    head_file_shape: tuple[int, ...] | None = None
    aux = unexpected = 0
    misfits: list[str] = []
    for key, value in state.items():
        if key in own and own[key].shape == value.shape:
            loaded[key] = value
        elif key in head_keys:
            head_file_shape = tuple(value.shape) if key.endswith("weight") else head_file_shape
        elif key.startswith(AUX_PREFIXES) and key not in own:
            aux += 1
        else:
            unexpected += 1
            misfits.append(key if key not in own else
                           f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
    # Batch-norm step counters are absent from older files; they only matter with
    # momentum=None, which torchvision never uses.
    missing = [k for k in own if k not in loaded and k not in head_keys
               and not k.endswith("num_batches_tracked")]
    if missing or misfits:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of the model's tensors missing ({_first(missing)})")
        if misfits:
            parts.append(f"{unexpected} tensors that fit nowhere ({_first(misfits)})")
        raise SettingsError(f"{what} do not fit model {type(model).__name__}: "
                            + "; ".join(parts) + ".")
    if metadata is not None:
        loaded._metadata = metadata  # type: ignore[attr-defined]
    model.load_state_dict(loaded, strict=False)
    fresh = any(k not in loaded for k in head_keys)
    if report is not None:
        body = sum(1 for k in loaded if k not in head_keys)
        report(f"{what}: {body} tensors loaded"
               + (f", {aux} of auxiliary heads skipped" if aux else "") + ".")
        classes = head_classes(dict(model.named_modules())[head_name])
        if fresh and head_file_shape is not None:
            report(f"head {head_name!r} starts fresh for {classes} classes (the file's head "
                   f"has {head_file_shape[0]}).")
        elif fresh:
            report(f"head {head_name!r} starts fresh for {classes} classes (the file has none).")
        else:
            report(f"head {head_name!r} loaded too ({classes} classes).")
    return fresh


def _first(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


# ---------------------------------------------------------------------------- inputs
def input_spec(settings: Settings) -> InputSpec:
    """How a run's images are sized and normalised: from the weights' metadata when
    they are a torchvision enum, else ImageNet's (224 crop of a 256 resize, ImageNet
    mean and std); `image_size` > 0 sets the crop, the resize keeping its ratio.

    Raises:
        SettingsError: `weights` names an unknown enum member.
    """
    crop, resize = DEFAULT_CROP, DEFAULT_RESIZE
    mean, std = MEAN, STD
    if settings.weights and is_enum_name(settings.weights):
        preset = resolve_enum(settings.weights, settings.model).transforms()
        crop, resize = int(preset.crop_size[0]), int(preset.resize_size[0])
        mean = (float(preset.mean[0]), float(preset.mean[1]), float(preset.mean[2]))
        std = (float(preset.std[0]), float(preset.std[1]), float(preset.std[2]))
    if settings.image_size:
        resize = max(settings.image_size, round(settings.image_size * resize / crop))
        crop = settings.image_size
    return InputSpec(image_size=crop, resize_size=resize, mean=mean, std=std)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
