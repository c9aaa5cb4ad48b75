"""A comparison study: several schemas (and variants) x several seeds on one benchmark.

Every run takes the same number of optimizer steps. The study keeps each run's
evaluation history (every metric at every swept threshold), then summarises:
mean and standard deviation over seeds, at the end and at each run's best generation,
at the shared `rho` and at each variant's own best threshold, beside the benchmark's
reference F1s. It writes `study.json`, `study.md` and `study.svg`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mile_engine import events as ev
from mile_engine.config import Settings, build_settings, parse_override
from mile_engine.metrics import METRIC_NAMES
from mile_engine.runstore.records import MetricsWriter, create_run_dir
from mile_engine.trainer import Trainer

LABELS = {
    "top1": "top-1",
    "real_accuracy": "ReaL acc",
    "real_f1": "ReaL F1",
    "real_precision": "precision",
    "real_recall": "recall",
    "coverage": "coverage",
}


@dataclass(frozen=True)
class Variant:
    """One arm of the study: a schema and the settings it changes."""

    name: str
    changes: dict[str, Any]


@dataclass
class StudyResult:
    """Evaluation histories of every (variant, seed) run, and the reference F1s."""

    base: dict[str, Any]
    variants: list[Variant]
    seeds: list[int]
    reference: dict[str, float] = field(default_factory=dict)
    # histories[variant name][seed index] = list of evaluation records
    histories: dict[str, list[list[dict[str, Any]]]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready copy of the result."""
        data = dataclasses.asdict(self)
        return data


def make_variants(schemas: Sequence[str], vary: Sequence[str] = ()) -> list[Variant]:
    """Cross the schemas with `key=v1,v2` variations (applied to MILe only).

    The variations are MILe's own knobs (rho, k_t/k_s, gt_or): the baselines run once.
    """
    variants: list[Variant] = []
    grid: list[dict[str, Any]] = [{}]
    for spec in vary:
        key, _, values = spec.partition("=")
        options = [parse_override(f"{key}={v}")[1] for v in values.split(",") if v]
        grid = [{**g, key.strip(): o} for g in grid for o in options]
    for schema in schemas:
        if schema == "MILe" and vary:
            for changes in grid:
                label = " ".join(f"{k}={v}" for k, v in changes.items())
                variants.append(Variant(f"MILe {label}", {"schema": schema, **changes}))
        else:
            variants.append(Variant(schema, {"schema": schema}))
    return variants


def run_study(
    base: Settings,
    variants: Sequence[Variant],
    seeds: Sequence[int],
    out_dir: Path,
    progress: Callable[[str], None] = lambda line: None,
) -> StudyResult:
    """Train every (variant, seed) run in turn; keep each run's folder under `out_dir`."""
    result = StudyResult(base.to_dict(), list(variants), list(seeds))
    started = time.perf_counter()
    for variant in variants:
        result.histories[variant.name] = []
        for seed in seeds:
            settings = build_settings(
                {**variant.changes, "seed": seed,
                 "checkpoint_path": str(out_dir / "runs")},
                f"study variant {variant.name}",
                base=base,
            )
            run_dir = create_run_dir(settings)
            history: list[dict[str, Any]] = []

            def keep(event: ev.Event, history: list[dict[str, Any]] = history) -> None:
                if isinstance(event, ev.Evaluated):
                    history.append({"generation": event.generation, **event.metrics,
                                    "sweep": event.sweep})

            trainer = Trainer(settings, run_dir, sinks=[keep, MetricsWriter(run_dir)])
            t0 = time.perf_counter()
            ended = trainer.train()
            if ended.status != "finished":
                raise RuntimeError(f"{variant.name} seed {seed} {ended.status}: {ended.error}")
            result.reference = trainer.reference
            result.histories[variant.name].append(history)
            final = history[-1]
            progress(
                f"{variant.name} seed {seed}: ReaL F1 {final['real_f1']:.4f}, coverage "
                f"{final['coverage']:.2f} after {len(history)} generation"
                f"{'' if len(history) == 1 else 's'} "
                f"({time.perf_counter() - t0:.0f} s)"
            )
    result.seconds = time.perf_counter() - started
    return result


def mean_sd_text(values: Sequence[float]) -> str:
    """`mean ± sd` to three decimals; the mean alone for a single value."""
    mean = statistics.fmean(values)
    if len(values) < 2:  # one seed has no spread to report
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}"


def _at(record: dict[str, Any], rho: str | None) -> dict[str, float]:
    """A record's metrics at evaluation threshold `rho` (None: the run's own rho)."""
    if rho is None or rho not in record["sweep"]:
        return {k: record[k] for k in METRIC_NAMES}
    return dict(record["sweep"][rho])


def shared_rho(result: StudyResult) -> str:
    """The key of the shared evaluation threshold: the base settings' rho."""
    return str(round(float(result.base["rho"]), 6))


def best_rho(histories: list[list[dict[str, Any]]]) -> str:
    """The swept threshold with the highest mean final ReaL F1 over seeds."""
    rhos = list(histories[0][-1]["sweep"])
    return max(rhos, key=lambda r: statistics.fmean(h[-1]["sweep"][r]["real_f1"]
                                                     for h in histories))


def summary_rows(result: StudyResult, when: str) -> list[list[str]]:
    """Table rows for `when` = "final" or "best" (each seed's best generation at rho)."""
    rows = []
    shared = shared_rho(result)
    for variant in result.variants:
        histories = result.histories[variant.name]
        choices: list[tuple[str, str | None]] = [(f"{shared} (shared)", shared)]
        if variant.changes["schema"] != "softmax":
            choices.append((f"{best_rho(histories)} (best)", best_rho(histories)))
        else:
            choices = [("argmax", None)]
        for label, rho in choices:
            picked = []
            for history in histories:
                record = history[-1]
                if when == "best":
                    record = max(history, key=lambda r: _at(r, shared)["real_f1"])
                picked.append(_at(record, rho))
            rows.append([variant.name, label] + [
                mean_sd_text([m[name] for m in picked]) for name in METRIC_NAMES
            ])
    return rows


def markdown(result: StudyResult) -> str:
    """The study's tables in Markdown, with the reference F1s and the settings."""
    base = result.base
    header = "| schema | rho | " + " | ".join(LABELS[n] for n in METRIC_NAMES) + " |"
    rule = "|" + "---|" * (len(METRIC_NAMES) + 2)
    steps = base["epoch_num"] * (base["k_t"] + base["k_s"])
    lines = [
        f"Benchmark: `{base['dataset']}` grids with grid_objects = {base['grid_objects']}, "
        f"{base['val_size']} validation grids; {base['model']}, batch {base['batch_size']}, "
        f"lr {base['lr']}, {base['epoch_num']} generations of k_t = {base['k_t']} + "
        f"k_s = {base['k_s']} steps ({steps} optimizer steps per run); seeds "
        f"{', '.join(map(str, result.seeds))}; {result.seconds / 60:.1f} min in all.",
        "",
        f"Reference ReaL F1: predict every class {result.reference['ref_f1_all']:.3f}; "
        f"predict the single label {result.reference['ref_f1_label']:.3f}.",
        "",
        ("Mean ± standard deviation over seeds." if len(result.seeds) > 1
         else "One seed: single runs, no spread.")
        + " Every run is evaluated at several thresholds "
        "(prediction set: argmax plus the classes whose sigmoid exceeds rho). \"shared\": "
        "the base settings' rho for every schema, whatever rho a MILe variant trained "
        "with; \"best\": the swept threshold with the highest mean final ReaL F1 (chosen "
        "on the same validation grids, so an optimistic figure for every schema alike).",
        "",
    ]
    for when, title in (("final", "After the last generation"),
                        ("best", "At each run's best generation (by ReaL F1 at the shared "
                                 "rho)")):
        lines += [f"**{title}**", "", header, rule]
        lines += ["| " + " | ".join(row) + " |" for row in summary_rows(result, when)]
        lines.append("")
    return "\n".join(lines)


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


def svg_plot(result: StudyResult) -> str:
    """ReaL F1 and label coverage per generation (mean over seeds), one line per variant,
    with the reference F1s as dashed horizontal lines; a self-contained SVG."""
    width, height, pad = 900, 380, 50
    panel_w = (width - 3 * pad) / 2
    generations = max(len(h) for hs in result.histories.values() for h in hs)

    shared = shared_rho(result)

    def mean_curve(name: str, key: str) -> list[float]:
        histories = result.histories[name]
        return [statistics.fmean(_at(h[g], shared)[key] for h in histories if len(h) > g)
                for g in range(generations)]

    coverage_max = max(
        [max(mean_curve(v.name, "coverage")) for v in result.variants] + [1.0]
    )
    # Whole-number ticks: the top is a multiple of 4 (four intervals).
    coverage_top = max(4, math.ceil(coverage_max * 1.1 / 4) * 4)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]

    dashes = {"predict every class": "8,4", "single label": "2,3"}

    def panel(x0: float, title: str, key: str, top: float, refs: dict[str, float]) -> None:
        y0, h = pad, height - 2 * pad - 60

        def px(g: int) -> float:
            return x0 + (g / max(generations - 1, 1)) * panel_w

        def py(v: float) -> float:
            return y0 + h - (v / top) * h

        parts.append(f'<text x="{x0 + panel_w / 2}" y="{y0 - 15}" text-anchor="middle" '
                     f'font-weight="bold">{title}</text>')
        parts.append(f'<rect x="{x0}" y="{y0}" width="{panel_w}" height="{h}" fill="none" '
                     'stroke="#444"/>')
        for i in range(5):
            v = top * i / 4
            parts.append(f'<line x1="{x0}" x2="{x0 + panel_w}" y1="{py(v):.1f}" '
                         f'y2="{py(v):.1f}" stroke="#ddd"/>')
            parts.append(f'<text x="{x0 - 5}" y="{py(v) + 4:.1f}" text-anchor="end">'
                         f'{v:g}</text>')
        for g in range(generations):
            parts.append(f'<text x="{px(g):.1f}" y="{y0 + h + 15}" text-anchor="middle">'
                         f'{g + 1}</text>')
        parts.append(f'<text x="{x0 + panel_w / 2}" y="{y0 + h + 30}" '
                     'text-anchor="middle">generation</text>')
        for label, value in refs.items():
            parts.append(f'<line x1="{x0}" x2="{x0 + panel_w}" y1="{py(value):.1f}" '
                         f'y2="{py(value):.1f}" stroke="#555" '
                         f'stroke-dasharray="{dashes[label]}"/>')
        for i, variant in enumerate(result.variants):
            curve = mean_curve(variant.name, key)
            points = " ".join(f"{px(g):.1f},{py(v):.1f}" for g, v in enumerate(curve))
            colour = COLOURS[i % len(COLOURS)]
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                         'stroke-width="2"/>')

    refs = {"predict every class": result.reference["ref_f1_all"],
            "single label": result.reference["ref_f1_label"]}
    panel(pad, f"ReaL F1 at rho = {result.base['rho']}", "real_f1", 1.0, refs)
    panel(2 * pad + panel_w, "Label coverage (labels per image)", "coverage", coverage_top, {})
    for i, variant in enumerate(result.variants):
        x = pad + i * 150
        colour = COLOURS[i % len(COLOURS)]
        parts.append(f'<line x1="{x}" x2="{x + 20}" y1="{height - 34}" y2="{height - 34}" '
                     f'stroke="{colour}" stroke-width="3"/>')
        parts.append(f'<text x="{x + 25}" y="{height - 30}">{variant.name}</text>')
    ref_x = float(pad)
    for label, value in refs.items():
        parts.append(f'<line x1="{ref_x}" x2="{ref_x + 24}" y1="{height - 12}" '
                     f'y2="{height - 12}" stroke="#555" stroke-width="2" '
                     f'stroke-dasharray="{dashes[label]}"/>')
        text = f"{label} (reference) {value:.3f}"
        parts.append(f'<text x="{ref_x + 29}" y="{height - 8}">{text}</text>')
        ref_x += 40 + 6.5 * len(text)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_study(result: StudyResult, out_dir: Path) -> list[Path]:
    """Write study.json, study.md and study.svg into `out_dir`; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "study.json", out_dir / "study.md", out_dir / "study.svg"]
    paths[0].write_text(json.dumps(result.to_json(), indent=1) + "\n")
    paths[1].write_text(markdown(result))
    paths[2].write_text(svg_plot(result))
    return paths
