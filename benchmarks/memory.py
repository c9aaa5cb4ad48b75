"""Resident memory of a headless run, generation by generation.

Runs the given settings (default: ./mile.toml) in this process, reads the resident set
size after every evaluation, and prints it with the peak; growth from the second
generation on would mean a leak (the first one allocates the optimizer state and the
allocator's pools).

    python benchmarks/memory.py [--config mile.toml] [--set key=value ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from mile_engine import events as ev
from mile_engine.config.loader import load_settings
from mile_engine.trainer import Trainer


def rss_mib() -> float:
    """The current resident set size of this process, in MiB (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("mile.toml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    settings = load_settings(args.config, args.set, missing_ok=True)
    samples: list[dict[str, float]] = []

    def sample(event: ev.Event) -> None:
        if isinstance(event, ev.Evaluated):
            samples.append({"generation": event.generation, "rss_mib": rss_mib()})
            print(f"generation {event.generation}: RSS {samples[-1]['rss_mib']:,.0f} MiB",
                  flush=True)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(settings, Path(tmp), sinks=[sample]).train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    growth = samples[-1]["rss_mib"] - samples[1]["rss_mib"] if len(samples) > 1 else 0.0
    print(f"peak RSS {peak:,.0f} MiB; change from generation 2 to the last: "
          f"{growth:+,.1f} MiB; {time.perf_counter() - started:.0f} s")
    if args.out:
        args.out.write_text(json.dumps({"samples": samples, "peak_rss_mib": peak,
                                        "growth_after_first_mib": growth}, indent=1) + "\n")


if __name__ == "__main__":
    main()
