"""Training-step images/s of the bare network in fp32, bf16 autocast and bf16 + channels_last.

The probe behind `precision = "auto"` on the CPU: ResNet-18 (10 classes), SGD, one batch
made beforehand, at each input side asked for. The three arithmetic variants' timed windows
alternate in one process, so that drift on the machine hits them alike; each rate is the
median over windows, each gain the median of the per-window ratios to fp32.

    python benchmarks/precision_probe.py [--sides 24:64,84:64,224:16] [--windows 5]
        [--steps 3] [--out benchmarks/results/precision-probe-cpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mile_engine.device import cpu_bf16_flags
from mile_engine.models import build_model

VARIANTS = ("fp32", "bf16", "bf16_channels_last")


def step_fn(variant: str, side: int, batch: int) -> Callable[[], None]:
    """One SGD step of a fresh ResNet-18 in `variant` arithmetic on a fixed batch."""
    torch.manual_seed(0)
    model = build_model("resnet18-10", 10, sigmoid_head=False)
    x = torch.randn(batch, 3, side, side)
    y = torch.randint(10, (batch,))
    if variant == "bf16_channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dtype = torch.float32 if variant == "fp32" else torch.bfloat16
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_fn(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def probe(side: int, batch: int, windows: int, steps: int, warmup: int) -> dict[str, Any]:
    """Median images/s of each variant and median gain over fp32, at one input side."""
    steps_of = {v: step_fn(v, side, batch) for v in VARIANTS}
    for step in steps_of.values():
        for _ in range(warmup):
            step()
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(windows):
        for v, step in steps_of.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            rates[v].append(batch * steps / (time.perf_counter() - start))
    return {
        "side": side, "batch": batch,
        "images_per_s": {v: statistics.median(r) for v, r in rates.items()},
        "gain_over_fp32": {
            v: statistics.median(a / b for a, b in zip(rates[v], rates["fp32"], strict=True))
            for v in VARIANTS[1:]
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="24:64,84:64,224:16", metavar="SIDE:BATCH,...")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for item in args.sides.split(","):
        side, batch = (int(part) for part in item.split(":"))
        rows.append(probe(side, batch, args.windows, args.steps, args.warmup))
        r = rows[-1]
        rate, gain = r["images_per_s"], r["gain_over_fp32"]
        print(f"{side:4} px, batch {batch:3}: fp32 {rate['fp32']:7.1f} img/s, bf16 "
              f"{rate['bf16']:7.1f} (x{gain['bf16']:.2f}), bf16+channels_last "
              f"{rate['bf16_channels_last']:7.1f} (x{gain['bf16_channels_last']:.2f})",
              flush=True)
    result = {
        "processor": platform.processor() or platform.machine(),
        "bf16_flags": sorted(cpu_bf16_flags()),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "windows": args.windows, "steps": args.steps,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
