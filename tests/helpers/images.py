"""Image files the data tests generate: a class-per-folder tree of awkward files, and a
smooth picture whose crops are easy to tell apart."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from PIL import Image

CLASSES = ["ant", "bee", "cow"]


# Training images per class, relative to the class folder, with how each is written.
TRAIN = {
    "ant": {"a.png": "png", "deep/er/b.jpg": "jpeg", "c.JPEG": "cmyk"},
    "bee": {"a.jpg": "grey", "b.png": "rgba", "sub/c.png": "png", "d.jpeg": "corrupt"},
    "cow": {"x/a.webp": "png", "b.bmp": "png"},  # a PNG named .webp: the content decides
}


# Validation images: class -> names; image k (in index order) has red level 20k + 15.
VAL = {"ant": ["v0.png", "n/v1.png"], "bee": ["v2.jpg"], "cow": ["v3.png", "v4.png"]}


VAL_ORDER = ["ant/n/v1.png", "ant/v0.png", "bee/v2.jpg", "cow/v3.png", "cow/v4.png"]


SETS = {"ant/v0.png": ["ant", "cow"], "v1.png": [1], "v2.jpg": [], "cow/v3.png": ["cow"]}


def write_image(path: Path, kind: str, colour: tuple[int, int, int] = (90, 160, 30),
                size: tuple[int, int] = (37, 23)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "corrupt":
        path.write_bytes(b"\xff\xd8\xff\xe0 not a JPEG at all")
        return
    image = Image.new("RGB", size, colour)
    if kind == "cmyk":
        image.convert("CMYK").save(path, format="JPEG")
    elif kind == "grey":
        image.convert("L").save(path, format="JPEG")
    elif kind == "rgba":
        image.convert("RGBA").save(path, format="PNG")
    else:
        image.save(path, format="JPEG" if kind == "jpeg" else "PNG", quality=95)


def red(k: int) -> int:
    return 20 * k + 15


@dataclasses.dataclass(frozen=True)
class Tree:
    train: Path
    val: Path
    labels: Path


def make_tree(root: Path) -> Tree:
    train, val = root / "train", root / "val"
    for c, files in TRAIN.items():
        for name, kind in files.items():
            write_image(train / c / name, kind, size=(29 + len(name), 41))
    (train / "ant" / "notes.txt").write_text("not an image")
    write_image(train / "bee" / ".hidden.png", "png")
    for c, names in VAL.items():
        for name in names:
            k = VAL_ORDER.index(f"{c}/{name}")
            write_image(val / c / name, "jpeg" if name.endswith(".jpg") else "png",
                        (red(k), 128, 64), size=(40, 30))
    labels = root / "labels.json"
    labels.write_text(json.dumps(SETS))
    return Tree(train, val, labels)


def picture(height: int, width: int) -> Image.Image:
    """A smooth, structured RGB picture: a misplaced crop changes its pixels a lot."""
    y = torch.linspace(0, 1, height).view(height, 1)
    x = torch.linspace(0, 1, width).view(1, width)
    red = 128 + 100 * torch.sin(x * 12 + y * 3)
    green = (128 + 100 * torch.cos(y * 9)).expand(height, width)
    blue = (255 * x * y).expand(height, width)
    pixels = torch.stack([red, green, blue], -1).round().clamp(0, 255).to(torch.uint8)
    return Image.fromarray(pixels.numpy())


