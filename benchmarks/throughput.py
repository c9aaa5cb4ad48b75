"""Training and evaluation images/s of the engine against the model-only ceiling.

For the given settings (default: ./mile.toml), in one process and one run, measure:

- the engine's interactive and imitation steps (data composed by the engine's source,
  the trainer's own step functions);
- the model-only ceiling: the same network, precision, batch and input size, on one
  batch made beforehand and kept on the device, with the same loss and optimizer; its timed
  windows alternate with the engine's, so that drift on the machine hits both alike;
- evaluation images/s, the data source alone (batches delivered with no network to
  feed), and the metrics on 50,000 x 1,000 logits on the CPU;

then print a table with the ratio engine/ceiling and write JSON. The warm-up steps before
each measurement are left out of its images/s but timed and reported ("warmup_s"): with
`compile = true` they are where torch.compile compiles the step, which can take a minute.

    python benchmarks/throughput.py [--config mile.toml] [--set key=value ...]
        [--windows 5] [--steps 20] [--out benchmarks/results/throughput.json]
        [--precisions fp32,bf16]

With `--precisions`, one trainer is built per precision setting, the timed windows of all
of them (engine and ceiling, each precision) alternate, and the engine's and the
ceiling's gain over the first precision is printed: the median of per-window ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mile_engine.config.loader import load_settings
from mile_engine.config.schema import Settings
from mile_engine.data import Batch
from mile_engine.metrics import evaluate_logits
from mile_engine.schemas import multi_label_bce
from mile_engine.trainer import Trainer


def sync(device: torch.device) -> None:
    """Wait for queued device work, so that wall time measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], object], steps: int, device: torch.device) -> float:
    """Seconds that `steps` calls of `step` take, device work included."""
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return time.perf_counter() - start


def timed_rate(
    step: Callable[[], object], images_per_step: int, device: torch.device,
    windows: int, steps: int, warmup: int,
) -> float:
    """Median images/s over `windows` windows of `steps` steps, after `warmup` steps."""
    timed(step, warmup, device)
    return statistics.median(
        images_per_step * steps / timed(step, steps, device) for _ in range(windows)
    )


def alternating_rates(
    steps: dict[str, Callable[[], object]], images_per_step: int, device: torch.device,
    windows: int, steps_per_window: int, warmup: int,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Images/s of each step function in each window, their timed windows alternating.

    Alternating puts slow drift (clock speed, caches, other load on the machine) on all of
    them alike, so the per-window ratios between them are what to compare. Returns the
    rates per window and the warm-up seconds of each.
    """
    warmup_s = {name: timed(step, warmup, device) for name, step in steps.items()}
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(windows):
        for name, step in steps.items():
            rates[name].append(images_per_step * steps_per_window
                               / timed(step, steps_per_window, device))
    return rates, warmup_s


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median of the per-window ratios of two alternating measurements."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


class Subject:
    """One trainer to measure: its engine and ceiling step functions for both phases."""

    def __init__(self, settings: Settings) -> None:
        torch.manual_seed(0)
        self.settings = settings
        self.trainer = trainer = Trainer(settings, Path("."))
        self.source = source = trainer.source
        # The engine takes fresh batches from its source and runs the trainer's own step
        # functions; the ceiling runs the same steps on one batch made beforehand and kept
        # on the device. It is a copy of a real batch, not random noise: on the CPU a step
        # on normal-distributed inputs ran 2-3% slower than on the same-shaped grids,
        # which read as an engine "faster than its ceiling".
        fixed = source.train_batch()
        self.input_size = list(fixed.images.shape[1:])
        synthetic = Batch(fixed.images.clone(memory_format=torch.contiguous_format),
                          fixed.labels.clone(), fixed.real)
        self.steps: dict[str, dict[str, Callable[[], object]]] = {
            "interactive": {
                "engine": lambda: trainer.interactive_step(source.train_batch()),
                "ceiling": lambda: trainer.interactive_step(synthetic),
            },
            "imitation": {
                "engine": lambda: trainer.imitation_step(source.train_batch()),
                "ceiling": lambda: _bare_imitation(trainer, synthetic),
            },
        }


def measure_steps(
    subjects: dict[str, Subject], args: argparse.Namespace
) -> dict[str, dict[str, dict[str, Any]]]:
    """Engine against ceiling for each subject and step, all their windows alternating.

    Returns, per subject and step: engine and ceiling images/s (medians), their ratio (the
    median of the per-window ratios), the warm-up seconds, and the per-window rates.
    """
    first = next(iter(subjects.values()))
    device, bs = first.trainer.device, first.settings.batch_size
    out: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in subjects}
    for step in ("interactive", "imitation"):
        functions = {(name, side): fn for name, subject in subjects.items()
                     for side, fn in subject.steps[step].items()}
        rates, warmup_s = alternating_rates(
            {f"{name}/{side}": fn for (name, side), fn in functions.items()}, bs, device,
            args.windows, args.steps, args.warmup,
        )
        for name in subjects:
            engine, ceiling = rates[f"{name}/engine"], rates[f"{name}/ceiling"]
            out[name][step] = {
                "engine": statistics.median(engine),
                "ceiling": statistics.median(ceiling),
                "ratio": median_ratio(engine, ceiling),
                "warmup_s": {"engine": warmup_s[f"{name}/engine"],
                             "ceiling": warmup_s[f"{name}/ceiling"]},
                "windows": {"engine": engine, "ceiling": ceiling},
            }
    return out


def measure_rest(subject: Subject, steps: dict[str, dict[str, Any]],
                 args: argparse.Namespace) -> dict[str, Any]:
    """Evaluation, the data source alone and the metrics for one subject; the result."""
    trainer, source, settings, device = (subject.trainer, subject.source, subject.settings,
                                         subject.trainer.device)
    val_images = len(source.val_targets()[0])
    start = time.perf_counter()
    trainer.evaluate()
    sync(device)
    eval_rate = val_images / (time.perf_counter() - start)

    # -- the data alone: what the source delivers with no network to feed
    data_rate = timed_rate(source.train_batch, settings.batch_size, device,
                           windows=args.windows, steps=args.steps, warmup=args.warmup)

    # -- metrics alone on ImageNet-sized logits
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(50_000, 1000, generator=gen)
    labels = torch.randint(1000, (50_000,), generator=gen)
    real = torch.rand(50_000, 1000, generator=gen) < 0.0012
    start = time.perf_counter()
    evaluate_logits(logits, labels, real, 0.25, True)
    metrics_s = time.perf_counter() - start

    return {
        "settings": {k: v for k, v in settings.to_dict().items()
                     if k in ("dataset", "model", "schema", "batch_size", "image_size",
                              "grid_objects", "precision", "compile", "decode",
                              "num_workers")},
        "input_size": subject.input_size,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "precision": str(trainer.dtype),
        "precision_reason": trainer.precision_reason,
        "interactive": steps["interactive"],
        "imitation": steps["imitation"],
        "data_images_per_s": data_rate,
        "evaluation_images_per_s": eval_rate,
        "metrics_50k_x_1000_s": metrics_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "date": time.strftime("%Y-%m-%d"),
    }


def _bare_imitation(trainer: Trainer, batch: Batch) -> None:
    """The imitation step with nothing but the networks: teacher forward, student step.

    It calls the networks the trainer's steps call (compiled ones with `compile = true`),
    so that the ceiling runs the same kernels as the engine.
    """
    x = batch.images
    with torch.inference_mode(), trainer.autocast():
        targets = torch.sigmoid(trainer.teacher_forward(x).float()) > trainer.settings.rho
    targets = targets.clone()  # an inference-mode tensor cannot be saved for backward
    trainer.model.train()
    with trainer.autocast():
        loss = multi_label_bce(trainer.model(x), targets)
    trainer.optimize(loss)


def print_result(result: dict[str, Any], warmup: int) -> None:
    """The table of one measurement: engine against ceiling per step, then the rest."""
    rows = [("interactive", result["interactive"]), ("imitation", result["imitation"])]
    print(f"{result['settings']} on {result['device']} ({result['device_name']}, "
          f"{result['threads']} threads, {result['precision']}), input {result['input_size']}")
    print(f"{'step':12} {'engine img/s':>13} {'ceiling img/s':>14} {'ratio':>6} "
          f"{'engine warm-up':>15} {'ceiling warm-up':>16}")
    for name, r in rows:
        warm = r["warmup_s"]
        print(f"{name:12} {r['engine']:13,.0f} {r['ceiling']:14,.0f} {r['ratio']:6.1%} "
              f"{warm['engine']:13.2f} s {warm['ceiling']:14.2f} s")
    print(f"warm-up: the first {warmup} steps of each measurement, excluded from img/s")
    print(f"data alone: {result['data_images_per_s']:,.0f} img/s; "
          f"evaluation: {result['evaluation_images_per_s']:,.0f} img/s; metrics on 50,000 x "
          f"1,000 logits: {result['metrics_50k_x_1000_s']:.3f} s; peak RSS "
          f"{result['peak_rss_mib']:,.0f} MiB")


def precision_gains(by_precision: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each precision's engine and ceiling images/s over the first precision's, per step.

    The windows of all precisions alternated, so each gain is the median of per-window
    ratios, as free of the machine's drift as the engine/ceiling ratio.
    """
    first = next(iter(by_precision.values()))
    return {
        name: {f"{step}_{side}": median_ratio(result[step]["windows"][side],
                                              first[step]["windows"][side])
               for step in ("interactive", "imitation") for side in ("engine", "ceiling")}
        for name, result in by_precision.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("mile.toml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--precisions", default="", metavar="P1,P2",
                        help="measure each precision setting in turn (e.g. fp32,bf16) and "
                             "report the gain of each over the first")
    args = parser.parse_args()
    names = args.precisions.split(",") if args.precisions else [""]
    # Every precision's trainer is built first, so that their timed windows alternate.
    subjects = {
        name: Subject(load_settings(args.config, [*args.set, *([f"precision={name}"]
                                                              if name else [])],
                                    missing_ok=True))
        for name in names
    }
    steps = measure_steps(subjects, args)
    by_precision = {name: measure_rest(subjects[name], steps[name], args) for name in names}
    for name in names:
        print_result(by_precision[name], args.warmup)
    if args.precisions:
        gains = precision_gains(by_precision)
        for name, gain in gains.items():
            print(f"{name} over {names[0]}: " + ", ".join(
                f"{key} x{value:.2f}" for key, value in gain.items()))
        result: dict[str, Any] = {"by_precision": by_precision, "gain": gains}
    else:
        result = by_precision[""]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
