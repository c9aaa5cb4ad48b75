"""Write an ImageNet-shaped folder of full-size JPEGs, for loader and throughput benchmarks.

    python benchmarks/make_imagenet.py OUT [--classes 1000] [--per-class 20] [--val 2000]
        [--jobs N]

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
import os
from concurrent.futures import ProcessPoolExecutor
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


def write_images(paths: list[Path], seed: int) -> int:
    """Write one photo-like JPEG per path, from a generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    for path in paths:
        photo_like(generator).save(path, quality=90)
    return len(paths)


def make(out: Path, classes: int, per_class: int, val: int, jobs: int = 1,
         seed: int = 0) -> None:
    """Write the folder with `jobs` processes, printing progress."""
    generator = torch.Generator().manual_seed(seed)
    wnids = [f"n{10_000_000 + i:08d}" for i in range(classes)]
    chunks: list[list[Path]] = []
    for wnid in wnids:
        folder = out / "train" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        chunks.append([folder / f"{wnid}_{j}.JPEG" for j in range(per_class)])
    (out / "val").mkdir(parents=True, exist_ok=True)
    names = [out / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(val)]
    chunks += [names[i:i + per_class] for i in range(0, val, max(1, per_class))]
    total, written, shown = classes * per_class + val, 0, 0
    seeds = [seed * 100_003 + i for i in range(len(chunks))]
    with ProcessPoolExecutor(jobs) as pool:
        # Each chunk has its own seed, so the folder is the same whatever `jobs` is.
        for done in pool.map(write_images, chunks, seeds):
            written += done
            if written * 10 // total > shown:  # a line per tenth
                shown = written * 10 // total
                print(f"{written} of {total} images", flush=True)
    real: list[list[int]] = []
    for i in range(val):
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
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    make(args.out, args.classes, args.per_class, args.val, args.jobs)


if __name__ == "__main__":
    main()
