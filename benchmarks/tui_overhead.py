"""How much training throughput the console costs: the same run headless and under the TUI.

    python benchmarks/tui_overhead.py [--repeats 2] [--set key=value ...]

Runs the settings alternately with no UI (`open_run(...).train()`, as `run --headless`
does without its terminal renderer) and inside the console (a headless Textual app
driven by Pilot: the trainer in its thread worker, every panel redrawn live), and prints
the training images/s of both and their ratio. Images/s counts optimizer steps only
(the harmonic mean of the progress records, i.e. total images over total step time), so
evaluation time does not blur it. A benchmark, not a test: it takes a minute or more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Both kinds must train with the same number of CPU threads: --threads=N sets it (before
# torch is imported, so every thread gets it); without it torch uses every core.
if __name__ == "__main__":
    _threads = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")), "")
    if _threads:
        os.environ["OMP_NUM_THREADS"] = _threads

import torch  # noqa: E402

from mile_engine.config.loader import load_settings
from mile_engine.config.render import render_toml  # noqa: E402
from mile_engine.control import Control  # noqa: E402
from mile_engine.runstore.layout import METRICS_FILE  # noqa: E402
from mile_engine.session import open_run  # noqa: E402
from mile_tui.app import create_app  # noqa: E402

# Small enough for a 2-core CPU, long enough (steps of tens of milliseconds, many
# progress records) that the UI's share of the GIL would show.
DEFAULTS = [
    "dataset=digits", "batch_size=32", "val_size=256", "k_t=20", "k_s=10",
    "epoch_num=3", "log_every=2", "device=cpu", "max_checkpoint_num=1",
]


def train_images_per_s(run_dir: Path) -> float:
    """Total training images over total step time, from a run's metrics.jsonl."""
    rates = [
        record["images_per_s"]
        for line in (run_dir / METRICS_FILE).read_text().splitlines()
        if (record := json.loads(line))["event"] == "StepLogged" and record["images_per_s"]
    ]
    # Each record covers the same number of steps (log_every), so the harmonic mean is
    # images / seconds over the whole run.
    return statistics.harmonic_mean(rates)


def run_headless(overrides: list[str], root: Path) -> float:
    """Train with no UI; return training images/s."""
    settings = load_settings(None, [*overrides, f"checkpoint_path={root}"])
    trainer = open_run(settings, [], Control())
    ended = trainer.train()
    assert ended.status == "finished", ended
    return train_images_per_s(trainer.run_dir)


async def _run_tui(config: Path) -> Path:
    app = create_app(config)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f5")
        while app.worker is None or app.running:
            await pilot.pause(0.2)
        await pilot.pause(0.3)
        view = app.run_screen.view
        assert view.status == "finished", (view.status, view.error)
        return Path(view.run_dir)


def run_tui(overrides: list[str], root: Path) -> float:
    """Train inside the console (headless Textual app); return training images/s."""
    settings = load_settings(None, [*overrides, f"checkpoint_path={root}"])
    root.mkdir(parents=True, exist_ok=True)
    config = root / "mile.toml"
    config.write_text(render_toml(settings), encoding="utf-8")
    return train_images_per_s(asyncio.run(_run_tui(config)))


def main() -> None:
    """Alternate headless and TUI runs and print images/s for both and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs of each kind")
    parser.add_argument("--threads", default="",
                        help="CPU threads for torch in both kinds (default: every core); "
                             "write --threads=N")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="override a setting, key=value (repeatable)")
    parser.add_argument("--one", choices=("headless", "tui"), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    overrides = [*DEFAULTS, *args.overrides]
    if args.one:  # one measurement, in this fresh process; print images/s
        measure = run_headless if args.one == "headless" else run_tui
        print(measure(overrides, args.root))
        return
    headless, tui = [], []
    with tempfile.TemporaryDirectory() as tmp:
        # Alternating (ABAB...) spreads a shared machine's load over both kinds. Each
        # measurement runs in a fresh process: once the main thread has run torch's
        # CPU kernels, its OpenMP team slows every other thread's kernels (a worker
        # thread then trained 30% slower here), which would bill the console for it.
        def one(kind: str, i: int) -> float:
            command = [sys.executable, __file__, "--one", kind, "--root",
                       str(Path(tmp) / f"{kind}-{i}"), *(f"--set={o}" for o in args.overrides)]
            if args.threads:
                command.append(f"--threads={args.threads}")
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            return float(out.stdout.strip().splitlines()[-1])

        for i in range(args.repeats):
            started = time.perf_counter()
            headless.append(one("headless", i))
            middle = time.perf_counter()
            tui.append(one("tui", i))
            print(f"repeat {i + 1}: headless {headless[-1]:,.0f} img/s ({middle - started:.0f} s),"
                  f" tui {tui[-1]:,.0f} img/s ({time.perf_counter() - middle:.0f} s)",
                  flush=True)
    h, t = statistics.median(headless), statistics.median(tui)
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, python {sys.version.split()[0]}, "
          f"torch {torch.__version__}")
    print(f"settings: {' '.join(overrides)}")
    print(f"headless: {h:,.1f} img/s (median of {len(headless)})")
    print(f"tui:      {t:,.1f} img/s (median of {len(tui)})")
    print(f"ratio:    {t / h:.1%} (target >= 95%)")


if __name__ == "__main__":
    main()
