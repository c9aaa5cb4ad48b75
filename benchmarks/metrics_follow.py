"""How fast a long run opens: load_history, summarize_run and MetricsFollower on a 100 MB
metrics.jsonl, and list_runs over 200 run folders.

Writes, into a temporary folder, a run whose metrics.jsonl holds realistic records as the
trainer writes them (a progress record, pseudo-label statistics and system statistics at
every log interval, an evaluation with its threshold sweep and a save per generation,
a few pauses and steering acknowledgements), until the file reaches --size-mb. Then it
times, each --repeat times (the best and the median are printed):

- load_history: the whole file as events (what opening a finished run does);
- summarize_run, cold (the search for the best evaluation of a run that did not end is
  not cached yet) and warm;
- MetricsFollower: its first read (the whole file), then one read of 1 MB appended;
- the console opening the run (`mile_tui.sources.fold_history`: the first read thinned to
  the progress records the screen keeps, folded into the run screen's state);
- list_runs over --runs small run folders (the Runs screen's opening).

    python benchmarks/metrics_follow.py --size-mb 100 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mile_engine import events as ev
from mile_engine.config.schema import Settings
from mile_engine.runstore import catalog as run_catalog
from mile_engine.runstore.catalog import list_runs, summarize_run
from mile_engine.runstore.history import MetricsFollower, load_history
from mile_engine.runstore.layout import METRICS_FILE, SETTINGS_FILE
from mile_engine.runstore.records import event_record

K_T, K_S, LOG_EVERY = 1000, 500, 10


def _line(event: ev.Event, t: float) -> str:
    record = event_record(event)
    record["time"] = round(t, 3)
    record.pop("settings", None)
    return json.dumps(record) + "\n"


def generation_lines(g: int, generations: int, t0: float) -> list[str]:
    """The records of one generation, as the trainer writes them."""
    out: list[str] = []
    step0 = (g - 1) * (K_T + K_S)
    total = generations * (K_T + K_S)
    t = t0
    for phase, steps in (("interactive", K_T), ("imitation", K_S)):
        out.append(_line(ev.PhaseStarted(g, generations, phase, steps), t))
        for step in range(LOG_EVERY, steps + 1, LOG_EVERY):
            gs = step0 + step + (K_T if phase == "imitation" else 0)
            t += 0.8
            out.append(_line(ev.StepLogged(g, phase, step, steps, gs, total,
                                           2.5 / (1 + gs / 1000), 0.1, 2850.5, t - t0), t))
            if phase == "imitation":
                out.append(_line(ev.PseudoLabelStats(g, step, gs, 1.73, 0.912), t))
            out.append(_line(ev.SystemStats(gs, 412.3, 3_221_225_472, 97.0, 21_474_836_480,
                                            85_899_345_920), t))
        if g % 7 == 0 and phase == "interactive":
            out += [_line(ev.Steered("pause", gs), t), _line(ev.Paused(gs), t),
                    _line(ev.Steered("resume", gs), t), _line(ev.Resumed(gs), t)]
    metrics = {"rho": 0.25, "top1": 0.7 + g / 1e4, "real_accuracy": 0.75, "real_f1": 0.5 + g / 1e5,
               "real_precision": 0.6, "real_recall": 0.55, "coverage": 1.8,
               "ref_f1_all": 0.01, "ref_f1_label": 0.62}
    sweep = {str(r): dict(metrics, rho=r) for r in (0.05, 0.1, 0.25, 0.5, 0.75)}
    gs = g * (K_T + K_S)
    out.append(_line(ev.Evaluated(g, gs, metrics, g == 3, 9000.0, sweep), t))
    out.append(_line(ev.CheckpointSaved(f"/runs/x/step-{gs:08d}-generation.pt", g,
                                        "evaluated", gs, "generation",
                                        [f"step-{gs:08d}-generation.pt"]), t))
    return out


def write_run(run_dir: Path, size_mb: float) -> int:
    """A run folder whose metrics.jsonl is `size_mb` MB and has no end record (a live or
    killed run: the slowest case for the summary, whose best comes from the file)."""
    run_dir.mkdir(parents=True)
    generations = 10_000
    settings = Settings(k_t=K_T, k_s=K_S, epoch_num=generations, log_every=LOG_EVERY)
    (run_dir / SETTINGS_FILE).write_text(settings.to_toml())
    limit = int(size_mb * 1e6)
    written = 0
    with (run_dir / METRICS_FILE).open("w") as fh:
        started = ev.RunStarted(str(run_dir), {}, "cuda:0", "bf16", 11_689_512,
                                generations * (K_T + K_S), 0,
                                {"ref_f1_all": 0.01, "ref_f1_label": 0.62})
        written += fh.write(_line(started, 0.0))
        g = 1
        while written < limit:
            for line in generation_lines(g, generations, g * 1300.0):
                written += fh.write(line)
            g += 1
    return written


CPU: list[float] = []  # the process's CPU seconds of the calls last timed


def timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    """Wall seconds of `repeat` calls of `fn`, and its last result; their CPU seconds go
    to CPU (on a machine shared with other work, the CPU time is what the call would
    take alone: the work is single-threaded)."""
    seconds, result = [], None
    CPU.clear()
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        result = fn()
        seconds.append(time.perf_counter() - t)
        CPU.append(time.process_time() - c)
    return seconds, result


def report(name: str, seconds: list[float], note: str = "") -> None:
    cpu = f"   cpu {min(CPU):7.3f} s" if CPU else ""
    print(f"{name:42s} best {min(seconds):7.3f} s   median {statistics.median(seconds):7.3f} s"
          f"{cpu}{'   ' + note if note else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=100.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "big-run"
        size = write_run(run_dir, args.size_mb)
        lines = sum(1 for _ in (run_dir / METRICS_FILE).open("rb"))
        print(f"metrics.jsonl: {size / 1e6:.1f} MB, {lines:,} records")

        seconds, history = timed(lambda: load_history(run_dir), args.repeat)
        report("load_history", seconds, f"{len(history):,} events")

        def cold() -> run_catalog.RunSummary:
            run_catalog._best_cache.clear()
            return summarize_run(run_dir)

        seconds, summary = timed(cold, args.repeat)
        report("summarize_run (cold: best searched)", seconds,
               f"best F1 {summary.best_f1} at gen {summary.best_generation}")
        seconds, _ = timed(lambda: summarize_run(run_dir), args.repeat)
        report("summarize_run (warm)", seconds)

        def first_read() -> int:
            return len(MetricsFollower(run_dir).read_new())

        seconds, count = timed(first_read, args.repeat)
        report("MetricsFollower first read", seconds, f"{count:,} events")

        # What the console does when a run is opened: the follower's first read, passing
        # over all but the newest progress records, folded into the run screen's state.
        from mile_tui.sources import fold_history

        seconds, view = timed(lambda: fold_history(run_dir), args.repeat)
        report("console opens the run (fold_history)", seconds,
               f"{len(view.evals)} evaluations, {len(view.losses)} loss points")
        follower = MetricsFollower(run_dir)
        follower.read_new()
        extra = "".join(generation_lines(99_999, 10_000, 0.0))
        chunk = (extra * (1_000_000 // len(extra) + 1))[:1_000_000]
        chunk = chunk[: chunk.rfind("\n") + 1]
        new_seconds = []
        CPU.clear()
        for _ in range(args.repeat):
            with (run_dir / METRICS_FILE).open("a") as fh:
                fh.write(chunk)
            t, c = time.perf_counter(), time.process_time()
            follower.read_new()
            new_seconds.append(time.perf_counter() - t)
            CPU.append(time.process_time() - c)
        report("MetricsFollower read of 1 MB appended", new_seconds)

        root = Path(tmp) / "many"
        for i in range(args.runs):
            small = root / f"run-{i:03d}"
            small.mkdir(parents=True)
            (small / SETTINGS_FILE).write_text(Settings().to_toml())
            text = "".join(generation_lines(1, 3, 0.0)) + _line(
                ev.RunEnded("finished", 1500, 1300.0, {"real_f1": 0.5, "generation": 1}), 1.0)
            (small / METRICS_FILE).write_text(text)

        def listed() -> int:
            run_catalog._best_cache.clear()
            return len(list_runs([root]))

        seconds, n = timed(listed, args.repeat)
        report(f"list_runs over {n} run folders", seconds)


if __name__ == "__main__":
    main()
