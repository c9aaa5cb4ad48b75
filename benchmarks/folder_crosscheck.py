"""Cross-check `dataset = "folder"` against the built-in grids it was written from.

Writes 3-object grids of a grid benchmark (Fashion-MNIST by default, the embedded digits
with --dataset digits) as an image folder: training grids in the folder of their single
label, the built-in source's own fixed validation grids in the folder of theirs, with
their full label sets (ReaL's role) in a JSON label file. Then trains the same settings
and seeds on the built-in grids and on the folder, and prints the final ReaL F1 of each
run and its mean and standard deviation per source.

The two sources differ where a folder must: the folder's training grids are a fixed set
(as many as the runs draw, so each is seen about once) where the built-in source draws
fresh ones; the folder's images go through the image-file pipeline (random resized crops
and flips in training, a resize and centre crop in validation, ImageNet normalisation)
where the grids go in as they are.

    python benchmarks/folder_crosscheck.py --seeds 0,1,2 --epochs 3 --k-t 40 --k-s 20 \
        --image-size 42 --val-size 500 --out /tmp/crosscheck
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mile_engine import events as ev
from mile_engine.config.schema import CROPS, Settings
from mile_engine.config.validation import build_settings
from mile_engine.data import load_tiles
from mile_engine.data.grids import compose_grids
from mile_engine.data.tiles import GridSource
from mile_engine.runstore.records import create_run_dir
from mile_engine.trainer import Trainer

TRAIN_SEED = 7  # the written training grids' own seed, apart from the runs' seeds


def folder_name(name: str) -> str:
    """A class name usable as a folder name ("T-shirt/top" -> "T-shirt_top")."""
    return name.replace("/", "_").replace("\\", "_")


def write_folder(base: Settings, out: Path, train_grids: int) -> dict[str, str]:
    """Write the training and validation grids of `base` under `out`; the folder settings."""
    train, val = load_tiles(base)
    names = [folder_name(n) for n in train.class_names]
    generator = torch.Generator().manual_seed(TRAIN_SEED)
    grids = compose_grids(train.tiles, train.labels, len(names), train_grids,
                          base.grid_objects, generator)
    for i, (image, label) in enumerate(zip(grids.images, grids.labels.tolist(), strict=True)):
        path = out / "train" / names[label] / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.numpy(), mode="L").save(path)
    # The built-in source's validation grids, exactly: both sources score the same images.
    source = GridSource(train, val, base.grid_objects, base.batch_size, base.val_size,
                        base.image_size, torch.device("cpu"), base.seed)
    sets: dict[str, list[str]] = {}
    for i in range(source.val_size):
        image, label, real = source.val_sample(i)
        rel = f"{names[label]}/{i:06d}.png"
        path = out / "val" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.numpy(), mode="L").save(path)
        sets[rel] = [names[c] for c in real]
    labels = out / "val_labels.json"
    labels.write_text(json.dumps(sets, indent=0), encoding="utf-8")
    return {"dataset": "folder", "data_path": str(out / "train"),
            "val_path": str(out / "val"), "val_labels_path": str(labels)}


def final_f1(settings: Settings) -> float:
    """Train one run; its last evaluation's ReaL F1."""
    f1: list[float] = []

    def keep(event: ev.Event) -> None:
        if isinstance(event, ev.Evaluated):
            f1.append(float(event.metrics["real_f1"]))
            print(f"  generation {event.generation}: ReaL F1 {f1[-1]:.4f}", flush=True)

    trainer = Trainer(settings, create_run_dir(settings), sinks=[keep])
    ended = trainer.train()
    if ended.status != "finished":
        raise RuntimeError(f"run {ended.status}: {ended.error}")
    return f1[-1]


def main(argv: list[str] | None = None) -> int:
    """Write the folder, train both sources per seed, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist",
                        choices=["fashion-mnist", "mnist", "digits"])
    parser.add_argument("--schema", default="MILe")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--k-t", type=int, default=60)
    parser.add_argument("--k-s", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--val-size", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=0,
                        help="Side both sources feed the model (0: the grids' native side).")
    parser.add_argument("--out", type=Path, default=Path("crosscheck"))
    parser.add_argument("--sources", default="built-in,folder",
                        help="Which sources to train, comma-separated.")
    parser.add_argument("--crop", default="random-resized", choices=list(CROPS),
                        help="The folder source's `crop` setting (whole: the whole grid "
                        "resized, no random or centre crop).")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    base = build_settings({
        "dataset": args.dataset, "model": "resnet18-10", "schema": args.schema,
        "grid_objects": 3, "batch_size": args.batch_size, "val_size": args.val_size,
        "epoch_num": args.epochs, "k_t": args.k_t, "k_s": args.k_s, "device": "cpu",
        "num_workers": 0, "log_every": 10_000, "checkpoint_path": str(args.out / "runs"),
        "max_checkpoint_num": 1,
    })
    tiles, _ = load_tiles(base)
    native = 3 * tiles.tile_size  # the grids are written at their native side
    side = args.image_size or native  # and both sources feed the model this side
    steps = args.epochs * (args.k_t + args.k_s)
    started = time.perf_counter()
    folder = write_folder(base, args.out / "data", steps * args.batch_size)
    print(f"wrote {steps * args.batch_size} training and {args.val_size} validation grids "
          f"({native} px) to {args.out / 'data'} in {time.perf_counter() - started:.0f} s",
          flush=True)
    chosen = [name.strip() for name in args.sources.split(",")]
    sources: dict[str, dict[str, Any]] = {
        name: changes for name, changes in (
            ("built-in", {}), ("folder", {**folder, "crop": args.crop}))
        if name in chosen}
    results: dict[str, list[float]] = {name: [] for name in sources}
    for seed in seeds:
        for name, changes in sources.items():
            settings = build_settings({**changes, "seed": seed, "image_size": side},
                                      "crosscheck", base=base)
            t0 = time.perf_counter()
            results[name].append(final_f1(settings))
            print(f"{name:8s} seed {seed}: ReaL F1 {results[name][-1]:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\n{args.dataset}, {args.schema}, 3-object grids, {args.epochs} generations of "
          f"k_t={args.k_t} + k_s={args.k_s} steps, batch {args.batch_size}, {side} px, "
          f"{args.val_size} validation grids, seeds {args.seeds}, folder crop "
          f"{args.crop}:")
    for name, values in results.items():
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"  {name:8s} ReaL F1 {statistics.mean(values):.4f} +- {sd:.4f} (sd)  "
              f"[{', '.join(f'{v:.4f}' for v in values)}]")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
