"""A comparison study: several schemas (and variants) x several seeds on one benchmark.

Every run takes the same number of optimizer steps. The study keeps each run's
evaluation history (every metric at every swept threshold), then summarises:
mean and standard deviation over seeds, at the end and at each run's best generation,
at the shared `rho` and at each variant's own best threshold, beside the benchmark's
reference F1s. It writes `study.json`, `study.md` and `study.svg`.

Each run is a run folder under `OUT/runs` (checkpoints, metrics.jsonl, run.log), and
`OUT/study-plan.json` names them: the same study started again continues where it
stopped, finished runs read back from their metrics.jsonl.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mile_engine import events as ev
from mile_engine.config.loader import parse_override
from mile_engine.config.schema import Settings, SettingsError
from mile_engine.config.validation import build_settings
from mile_engine.control import Control
from mile_engine.metrics import METRIC_NAMES
from mile_engine.reports.comparison import current_events, evaluations
from mile_engine.runstore.files import NoCheckpointError, atomic_write_text
from mile_engine.runstore.history import load_history
from mile_engine.session import RESUMABLE, open_run
from mile_engine.trainer import Trainer

LABELS = {
    "map": "mAP",
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


PLAN_FILE = "study-plan.json"
"""In a study's `--out` folder: what it compares (base settings, variants, seeds) and the
run folder of each (variant, seed), written before the run trains, so that the same
command continues the study where it stopped."""
RUNS_FOLDER = "runs"

# Settings that may differ between two sittings of one study: where the data and the
# runs are and how fast they train, not what they compute (those a resume may change).
SITTING_KEYS = RESUMABLE - {"epoch_num"}


class StudyFailed(RuntimeError):
    """A run of the study failed; its run.log says why, and the same command retries it
    from its newest save."""


class StudyStopped(Exception):
    """A run of the study was stopped (Ctrl-C, `mile-tui runs stop`): it saved where it
    was, and the same command continues the study."""


def _plan_of(base: Settings, variants: Sequence[Variant], seeds: Sequence[int]) -> dict[str, Any]:
    """What a study compares, JSON-normalised (for comparing with a plan on disk)."""
    plan = {
        "base": {k: v for k, v in base.to_dict().items() if k not in SITTING_KEYS},
        "variants": [{"name": v.name, "changes": v.changes} for v in variants],
        "seeds": list(seeds),
    }
    normalised: dict[str, Any] = json.loads(json.dumps(plan))
    return normalised


def _read_plan(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / PLAN_FILE
    if not path.exists():
        return None
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{path}: not a readable study plan ({exc}); use another --out "
                            "folder.") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("runs"), dict):
        raise SettingsError(f"{path}: not a study plan; use another --out folder.")
    return plan


def _check_same_study(path: Path, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuse to continue a study with other settings, variants or seeds: its tables
    would mix runs of two studies."""
    differ = [k for k in ("variants", "seeds") if saved.get(k) != wanted[k]]
    base = saved.get("base", {})
    differ += sorted(k for k in {*base, *wanted["base"]}
                     if base.get(k) != wanted["base"].get(k))
    if differ:
        raise SettingsError(
            f"{path.parent} holds a study with other {', '.join(differ)}; continue it with "
            f"the same --schemas, --seeds, --vary and settings, or give another --out."
        )


def _run_key(variant: Variant, seed: int) -> str:
    return f"{variant.name} | seed {seed}"


def _as_float(value: Any) -> Any:
    """metrics.jsonl writes NaN as null: read it back as NaN (at any depth)."""
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: _as_float(v) for k, v in value.items()}
    return value


def recorded_run(run_dir: Path) -> tuple[str | None, list[dict[str, Any]], ev.RunStarted | None,
                                          ev.RunEnded | None]:
    """A study run as its metrics.jsonl tells it: the status its last session ended with
    (None: none ended, e.g. killed), its evaluation history (one record per generation, of
    the state the run has now: a resume rewinds what came after its save), its last
    `RunStarted` and its last `RunEnded`."""
    events = current_events(load_history(run_dir))
    history = [{"generation": e.generation, **_as_float(dict(e.metrics)),
                "sweep": _as_float(dict(e.sweep))} for e in evaluations(events)]
    started = next((e for e in reversed(events) if isinstance(e, ev.RunStarted)), None)
    ended = None
    for event in events:
        if isinstance(event, ev.RunStarted):
            ended = None
        elif isinstance(event, ev.RunEnded):
            ended = event
    return (ended.status if ended else None), history, started, ended


def run_study(
    base: Settings,
    variants: Sequence[Variant],
    seeds: Sequence[int],
    out_dir: Path,
    progress: Callable[[str], None] = lambda line: None,
    control: Control | None = None,
    sinks: Sequence[ev.Sink] = (),
) -> StudyResult:
    """Train every (variant, seed) run in turn, seed by seed, each in its run folder under
    `out_dir/runs`, with its checkpoints; or continue the study that `out_dir` holds.

    A study continues where it stopped: a run that finished is not trained again (its
    history is read back from its metrics.jsonl), a run that was stopped or killed
    resumes from its newest good save (as `run --headless --resume` does), a run killed
    before its first save starts again in a new folder.

    Args:
        progress: told one line per run (finished, read back, resumed).
        control: stops the run in progress between two steps (it saves, then
            `StudyStopped` is raised); the caller keeps it.
        sinks: receivers of every run's events (a progress display).

    Raises:
        SettingsError: `out_dir` holds a study of other settings, variants or seeds, or
            a run's settings are invalid.
        StudyStopped: a run was stopped; the same call continues the study.
        StudyFailed: a run failed.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = _plan_of(base, variants, seeds)
    saved = _read_plan(out_dir)
    if saved is not None:
        _check_same_study(out_dir / PLAN_FILE, saved, plan)
    runs: dict[str, str] = dict(saved["runs"]) if saved else {}

    def write_plan() -> None:
        atomic_write_text(out_dir / PLAN_FILE, json.dumps({**plan, "runs": runs}, indent=1)
                          + "\n")

    write_plan()
    result = StudyResult(base.to_dict(), list(variants), list(seeds))
    result.histories = {variant.name: [] for variant in variants}
    # Seed by seed, every variant within a seed: a study stopped part-way has compared
    # every variant on the seeds it finished, rather than some variants on all seeds.
    for seed in seeds:
        for variant in variants:
            settings = build_settings(
                {**variant.changes, "seed": seed,
                 "checkpoint_path": str(out_dir / RUNS_FOLDER)},
                f"study variant {variant.name}",
                base=base,
            )
            key = _run_key(variant, seed)
            run_dir = out_dir / RUNS_FOLDER / runs[key] if key in runs else None
            label = f"{variant.name} seed {seed}"
            status = recorded_run(run_dir)[0] if run_dir is not None else None
            if status == "finished":
                note = "read back from its metrics.jsonl"
            else:
                trainer, note = _open(settings, run_dir, control, sinks)
                if str(trainer.run_dir.name) != runs.get(key):
                    runs[key] = trainer.run_dir.name
                    write_plan()  # before it trains: a later sitting finds its folder
                ended = trainer.train()
                if ended.status == "stopped":
                    raise StudyStopped(f"{label} stopped at step {ended.global_step}, saved "
                                       f"in {trainer.run_dir}")
                if ended.status != "finished":
                    raise StudyFailed(f"{label} {ended.status}: {ended.error}")
                run_dir = trainer.run_dir
            assert run_dir is not None
            _, history, started, ended_record = recorded_run(run_dir)
            if started is not None and started.reference:
                result.reference = _as_float(dict(started.reference))
            if ended_record is not None:
                result.seconds += ended_record.elapsed_s
            result.histories[variant.name].append(history)
            final = history[-1]
            progress(
                f"{label}: mAP {final.get('map', math.nan):.4f}, ReaL F1 "
                f"{final['real_f1']:.4f}, coverage {final['coverage']:.2f} after "
                f"{len(history)} generation{'' if len(history) == 1 else 's'} ({note})"
            )
    return result


def _open(settings: Settings, run_dir: Path | None, control: Control | None,
          sinks: Sequence[ev.Sink]) -> tuple[Trainer, str]:
    """The trainer of a run to train: resumed from its folder's newest good save, or new
    (no folder yet, or one without a save)."""
    if run_dir is not None:
        try:
            trainer = open_run(settings, sinks, control, resume=run_dir)
        except NoCheckpointError:
            pass  # killed before its first save: nothing to continue
        else:
            return trainer, f"resumed from {trainer.resumed_from}"
    return open_run(settings, sinks, control), "trained"


def mean_sd_text(values: Sequence[float]) -> str:
    """`mean ± sd` to three decimals; the mean alone for a single value."""
    mean = statistics.fmean(values)
    if len(values) < 2:  # one seed has no spread to report
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}"


TABLE_NAMES = ("map", *METRIC_NAMES)
"""The tables' metric columns: mAP first (it reads no threshold, so every row of a run
shows the same), then the metrics at the row's threshold."""


def _at(record: dict[str, Any], rho: str | None) -> dict[str, float]:
    """A record's metrics at evaluation threshold `rho` (None: the run's own rho), with
    its mAP (NaN in records written before mAP existed)."""
    ranking = {"map": record.get("map", math.nan)}
    if rho is None or rho not in record["sweep"]:
        return {**ranking, **{k: record[k] for k in METRIC_NAMES}}
    return {**ranking, **record["sweep"][rho]}


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
                mean_sd_text([m[name] for m in picked]) for name in TABLE_NAMES
            ])
    return rows


def schedule_text(base: dict[str, Any]) -> str:
    """How the learning rate moved, for the report's benchmark line: a study's verdict
    depends on it (docs/study.md, the long study)."""
    if base["scheduler"] != "plateau":
        return " (constant)"
    return (f" (divided by 10 after {base['lr_patience']} generations without a "
            f"better {LABELS[base['monitor']]})")


def schedule_caveat(base: Settings, variants: Sequence[Variant]) -> str | None:
    """A warning when the plateau schedule would follow ReaL F1 across schemas, else None.

    ReaL F1 at the shared rho falls as a single-label baseline learns (its scores for the
    unlabelled objects sink under rho) while MILe's holds, so a plateau on it cuts the
    baselines' learning rate within a few generations and MILe's later or never: the
    schemas would then differ in their schedules, not only in their losses. mAP reads no
    threshold.
    """
    schemas = {variant.changes.get("schema", base.schema) for variant in variants}
    if base.scheduler != "plateau" or base.monitor != "real_f1" or len(schemas) < 2:
        return None
    return ("note: the learning-rate plateau follows ReaL F1 at rho, which falls for the "
            "single-label baselines as they learn, so it cuts their learning rate early "
            "and MILe's late; --set monitor=map (or --set scheduler=none) gives every "
            "schema a schedule that does not depend on the threshold (docs/study.md).")


def markdown(result: StudyResult) -> str:
    """The study's tables in Markdown, with the reference F1s and the settings."""
    base = result.base
    header = "| schema | rho | " + " | ".join(LABELS[n] for n in TABLE_NAMES) + " |"
    rule = "|" + "---|" * (len(TABLE_NAMES) + 2)
    steps = base["epoch_num"] * (base["k_t"] + base["k_s"])
    lines = [
        f"Benchmark: `{base['dataset']}` grids with grid_objects = {base['grid_objects']}, "
        f"{base['val_size']} validation grids; {base['model']}, batch {base['batch_size']}, "
        f"lr {base['lr']}{schedule_text(base)}, {base['epoch_num']} generations of "
        f"k_t = {base['k_t']} + k_s = {base['k_s']} steps ({steps} optimizer steps per run); seeds "
        f"{', '.join(map(str, result.seeds))}; {result.seconds / 60:.1f} min of training in "
        "all.",
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
        "on the same validation grids, so an optimistic figure for every schema alike). "
        "mAP (mean average precision over the classes with a positive in the validation "
        "label sets) reads the scores without a threshold: the same in every row of a "
        "schema.",
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
