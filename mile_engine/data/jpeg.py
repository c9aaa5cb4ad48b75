"""JPEG decoding on the training device (`decode = "device"`).

DataLoader workers no longer decode (`mile_engine.data.image_files.JpegFiles`): each reads
a file's bytes and its JPEG header (size and colour mode, no pixels), draws the crop box
(`random_resized_box`, `centre_box`, or `whole_box` for `crop = "whole"`) and the
flip, and hands the bytes on.
The main process decodes the whole batch with one call to torchvision's batched
`decode_jpeg` on the training device (nvjpeg on CUDA), then crops, resizes (bilinear,
antialiased) and flips each image there. On a GPU this moves the costliest part of
ImageNet loading, Huffman and IDCT decoding of full-size JPEGs, off the CPU cores.

Files that are not plain RGB or greyscale JPEGs (ImageNet has PNGs and CMYK files named
`.JPEG`) are decoded by PIL in the worker, as in `decode = "workers"`; a JPEG whose header
reads but whose data the device decoder refuses is decoded by PIL in the main process;
a file neither can decode is reported back as failed, never silently kept.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

# torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec, which is
# not a dependency here; they remain torchvision's batched nvjpeg decoder. (Python hides
# a library's DeprecationWarning by default; the test configuration mutes this one.)
from torchvision.io import ImageReadMode, decode_jpeg

from mile_engine.model_inputs import VAL_RESIZE

# RandomResizedCrop's usual ranges (Szegedy et al., "Going deeper with convolutions"):
# 8% to 100% of the area, aspect ratio 3/4 to 4/3, ten tries before a centre crop.
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_TRIES = 10

Box = tuple[int, int, int, int]
"""A crop in source pixels: (top, left, height, width)."""


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(1).uniform_(low, high))


def random_resized_box(height: int, width: int) -> Box:
    """A random crop of 8-100% of the area with aspect 3/4-4/3 (RandomResizedCrop's).

    Draws from torch's global generator, which the DataLoader seeds per worker, so the
    crops follow the run's seed as those of `decode = "workers"` do.
    """
    area = height * width
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(CROP_TRIES):
        target = area * _uniform(*CROP_SCALE)
        aspect = math.exp(_uniform(log_low, log_high))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,)))
            left = int(torch.randint(0, width - w + 1, (1,)))
            return top, left, h, w
    # Every try fell outside the image (very elongated images): the whole image, trimmed
    # to the nearest allowed aspect ratio, centred.
    aspect = width / height
    if aspect < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif aspect > CROP_RATIO[1]:
        w, h = round(height * CROP_RATIO[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def whole_box(height: int, width: int) -> Box:
    """The whole image (`crop = "whole"`): resized to the crop side as it is, so no
    labelled object near an edge is cut off."""
    return 0, 0, height, width


def centre_box(height: int, width: int, size: int) -> Box:
    """The region that "resize the shorter side to 256/224 x size, centre-crop size" keeps."""
    side = round(min(height, width) * size / round(size * VAL_RESIZE))
    side = max(1, min(side, height, width))
    return (height - side) // 2, (width - side) // 2, side, side


def decode_batch(
    payloads: Sequence[torch.Tensor], boxes: torch.Tensor, flips: torch.Tensor, size: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, dict[int, str]]:
    """Decode, crop, resize and flip one batch on `device`.

    Returns:
        images: float32 [B, 3, size, size] in 0..255 on `device` (zeros where failed);
        ok: bool [B], False for rows no decoder could read;
        failures: row -> reason, for those rows.
    """
    images = torch.zeros(len(payloads), 3, size, size, device=device)
    ok = torch.ones(len(payloads), dtype=torch.bool)
    failures: dict[int, str] = {}
    box_list = boxes.tolist()
    jpeg_rows = [i for i, box in enumerate(box_list) if box[2] > 0]
    decoded = _decode_rows([payloads[i] for i in jpeg_rows], device)
    for row, result in zip(jpeg_rows, decoded, strict=True):
        if isinstance(result, str):
            ok[row] = False
            failures[row] = result
            continue
        top, left, h, w = box_list[row]
        crop = result[:, top:top + h, left:left + w].unsqueeze(0).float()
        images[row] = F.interpolate(
            crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0]
    for row, box in enumerate(box_list):
        if box[2] == 0:  # decoded by PIL in the worker: already the final image
            images[row] = payloads[row].to(device, non_blocking=True).float()
    flip = flips.to(device)
    if bool(flips.any()):
        images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    return images.clamp_(0, 255), ok, failures


def _decode_rows(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | str]:
    """uint8 [3, H, W] per JPEG, or the reason it could not be decoded."""
    if not data:
        return []
    try:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        pass  # the batched call fails whole; find the culprits one by one
    results: list[torch.Tensor | str] = []
    for one in data:
        try:
            results.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
        except RuntimeError as exc:
            results.append(_pil_decode(one, device, exc))
    return results


def _pil_decode(data: torch.Tensor, device: torch.device, cause: Exception) -> torch.Tensor | str:
    """PIL's reading of a JPEG the device decoder refused, or why neither could read it."""
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # palette transparency
                rgb = image.convert("RGB")
            pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
            width, height = image.size
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        first = str(cause).splitlines()[0].rsplit(", ", 1)[-1]
        return f"{type(exc).__name__}: {exc} (device decoder: {first})"
    return pixels.view(height, width, 3).permute(2, 0, 1).to(device)


def probe_device_decode(device: torch.device) -> str | None:
    """None when `decode_jpeg` works on `device`, else the reason in words."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 60)).save(buffer, format="JPEG")
    data = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    try:
        decode_jpeg([data], mode=ImageReadMode.RGB, device=device)
    except (RuntimeError, NotImplementedError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None
