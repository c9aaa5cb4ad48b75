"""How fast mAP is computed: `mile_engine.metrics.mean_average_precision` on random
scores of ImageNet's validation size (50,000 images x 1,000 classes by default).

The label sets hold --labels positives per image on average (ReaL: about 1.2), drawn at
random; --ties rounds the scores to that many distinct values (0: continuous scores).
Each of --repeat timings is printed, then the best and the median. With --check, the
result is compared with scikit-learn's `average_precision_score` (slow: one class at a
time).

    python benchmarks/map_speed.py --images 50000 --classes 1000 --repeat 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from mile_engine.metrics import mean_average_precision


def main() -> None:
    """Parse the options, build the scores, time mAP and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--labels", type=float, default=1.2,
                        help="Mean positives per image.")
    parser.add_argument("--ties", type=int, default=0,
                        help="Round scores to this many distinct values (0: continuous).")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default).")
    parser.add_argument("--check", action="store_true",
                        help="Compare with scikit-learn's average_precision_score.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(args.images, args.classes, generator=gen)
    if args.ties:
        scores = (scores * args.ties).floor() / args.ties
    targets = torch.rand(args.images, args.classes, generator=gen) < args.labels / args.classes
    print(f"{args.images:,} x {args.classes:,} float32 scores, "
          f"{int(targets.sum()):,} positives; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    times = []
    value, left_out = float("nan"), 0
    for i in range(args.repeat):
        started = time.perf_counter()
        value, left_out = mean_average_precision(scores, targets)
        times.append(time.perf_counter() - started)
        print(f"  run {i + 1}: {times[-1]:.3f} s")
    print(f"mAP {value:.6f} ({left_out} classes left out); best {min(times):.3f} s, "
          f"median {statistics.median(times):.3f} s")
    if args.check:
        from sklearn.metrics import average_precision_score

        kept = targets.any(dim=0)
        reference = average_precision_score(targets[:, kept].numpy(),
                                            scores[:, kept].numpy(), average="macro")
        print(f"scikit-learn: {reference:.6f} (difference {abs(reference - value):.2e})")


if __name__ == "__main__":
    main()
