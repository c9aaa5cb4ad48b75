"""Write an ImageNet-shaped folder of full-size JPEGs, for loader and throughput benchmarks.

    python benchmarks/make_imagenet.py OUT [--classes 1000] [--per-class 20] [--val 2000]

OUT/train/<wnid>/*.JPEG (one folder a class, named like WordNet ids), OUT/val/ flat
with ILSVRC names, OUT/real.json with one label list per validation file (a few empty,
a few with two labels, like ReaL). Images are 500x375 RGB, ImageNet's typical size,
with smooth colour fields and noise so that JPEG decoding costs what a photo costs.
Then, for example:

    python benchmarks/throughput.py --set dataset=imagenet --set model=resnet50 \\
        --set data_path=OUT/train --set val_path=OUT/val --set real_path=OUT/real.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image


def photo_like(generator: torch.Generator, width: int = 500, height: int = 375) -> Image.Image:
    """A 500x375 RGB image: a blurred colour field plus fine noise (photo-like entropy)."""
    coarse = torch.rand(3, height // 25, width // 25, generator=generator)
    field = torch.nn.functional.interpolate(coarse[None], size=(height, width),
                                            mode="bicubic", align_corners=False)[0]
    noise = torch.rand(3, height, width, generator=generator) * 0.15
    pixels = ((field + noise).clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0)
    return Image.fromarray(pixels.numpy(), "RGB")


def make(out: Path, classes: int, per_class: int, val: int, seed: int = 0) -> None:
    """Write the folder; prints a line per hundred images."""
    generator = torch.Generator().manual_seed(seed)
    wnids = [f"n{10_000_000 + i:08d}" for i in range(classes)]
    written = 0
    for wnid in wnids:
        folder = out / "train" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            photo_like(generator).save(folder / f"{wnid}_{j}.JPEG", quality=90)
            written += 1
            if written % 100 == 0:
                print(f"{written} training images", flush=True)
    (out / "val").mkdir(parents=True, exist_ok=True)
    real: list[list[int]] = []
    for i in range(val):
        photo_like(generator).save(out / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG", quality=90)
        label = int(torch.randint(classes, (1,), generator=generator))
        kind = i % 10
        real.append([] if kind == 0 else [label, (label + 1) % classes] if kind == 1
                    else [label])
    (out / "real.json").write_text(json.dumps(real))
    print(f"wrote {classes * per_class} training and {val} validation images under {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--val", type=int, default=2000)
    args = parser.parse_args()
    make(args.out, args.classes, args.per_class, args.val)


if __name__ == "__main__":
    main()
