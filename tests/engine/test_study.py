"""The comparison study on a tiny budget: a well-formed table and a plot."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch

from mile_engine import events as ev
from mile_engine.checkpoints import read_records
from mile_engine.config.schema import SettingsError
from mile_engine.control import Control
from mile_engine.data import build_source
from mile_engine.reports.study import (
    PLAN_FILE,
    StudyResult,
    StudyStopped,
    make_variants,
    run_study,
    schedule_caveat,
    schedule_text,
    summary_rows,
    write_study,
)
from tests.helpers.settings import tiny

# mAP first: it reads no threshold, so a record's own value serves every row.
METRICS = ("map", "top1", "real_accuracy", "real_f1", "real_precision", "real_recall",
           "coverage")


def mean_and_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


Row = tuple[str, str, list[tuple[float, float]]]  # variant, rho label, (mean, sd) per metric


def expected_rows(result: StudyResult, when: str) -> list[Row]:
    """The study table re-derived from the runs' evaluation records.

    Per variant: softmax one "argmax" row; the sigmoid schemas a row at the shared rho and
    one at the swept rho with the highest mean final ReaL F1. "final" takes each seed's
    last evaluation, "best" its evaluation with the highest ReaL F1 at the shared rho (the
    earliest on a tie).
    """
    shared = str(result.base["rho"])
    rows = []
    for variant in result.variants:
        runs = result.histories[variant.name]
        picked = []
        for history in runs:
            record = history[-1]
            if when == "best":
                record = history[0]
                for r in history[1:]:
                    if r["sweep"][shared]["real_f1"] > record["sweep"][shared]["real_f1"]:
                        record = r
            picked.append(record)
        if variant.changes["schema"] == "softmax":
            choices = [("argmax", [{k: r[k] for k in METRICS} for r in picked])]
        else:
            rhos = list(runs[0][-1]["sweep"])
            finals = [mean_and_sd([h[-1]["sweep"][rho]["real_f1"] for h in runs])[0]
                      for rho in rhos]
            best = rhos[finals.index(max(finals))]
            choices = [(f"{shared} (shared)",
                        [{**r["sweep"][shared], "map": r["map"]} for r in picked]),
                       (f"{best} (best)",
                        [{**r["sweep"][best], "map": r["map"]} for r in picked])]
        for label, metrics in choices:
            rows.append((variant.name, label,
                         [mean_and_sd([m[k] for m in metrics]) for k in METRICS]))
    return rows


def test_variants_cross_mile_knobs_and_keep_baselines_single() -> None:
    variants = make_variants(["softmax", "MILe"], ["rho=0.1,0.5", "gt_or=true"])
    assert [v.name for v in variants] == ["softmax", "MILe rho=0.1 gt_or=True",
                                          "MILe rho=0.5 gt_or=True"]
    assert variants[1].changes == {"schema": "MILe", "rho": 0.1, "gt_or": True}


def test_tiny_study_writes_table_plot_and_json(tmp_path: Path) -> None:
    base = tiny(epoch_num=2, k_t=2, k_s=1)
    lines: list[str] = []
    result = run_study(base, make_variants(["softmax", "sigmoid", "MILe"]), [0, 1],
                       tmp_path, lines.append)
    assert len(lines) == 6
    md_path, svg_path, json_path = (tmp_path / n for n in ("study.md", "study.svg",
                                                           "study.json"))
    assert write_study(result, tmp_path) == [json_path, md_path, svg_path]

    # Reference F1s equal a per-image computation on the validation grids.
    source = build_source(base, torch.device("cpu"))
    ref_all = ref_label = 0.0
    for batch in source.val_batches(64):
        assert batch.real is not None
        for labels, real in zip(batch.labels.tolist(), batch.real.tolist(), strict=True):
            r = {c for c, on in enumerate(real) if on}
            ref_all += 2 * len(r) / (10 + len(r))
            ref_label += 2 * (labels in r) / (1 + len(r))
    assert abs(result.reference["ref_f1_all"] - ref_all / 64) < 1e-9
    assert abs(result.reference["ref_f1_label"] - ref_label / 64) < 1e-9

    table = md_path.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "±" in line]
    # softmax: one row; sigmoid and MILe: shared rho and best rho; final and best tables.
    expected = expected_rows(result, "final") + expected_rows(result, "best")
    assert len(rows) == len(expected) == 2 * 5
    for row, (name, label, values) in zip(rows, expected, strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[:2] == [name, label]
        assert len(cells) == 2 + len(METRICS)
        for cell, (mean, sd) in zip(cells[2:], values, strict=True):
            shown_mean, shown_sd = (float(x) for x in re.findall(r"[\d.]+", cell))
            # Equal to the three decimals shown.
            assert abs(shown_mean - mean) <= 5e-4 + 1e-12, (row, cell)
            assert abs(shown_sd - sd) <= 5e-4 + 1e-12, (row, cell)
    assert "predict every class" in table and "(best)" in table
    # The schedule is part of the benchmark: the verdict moves with it (docs/study.md).
    assert f"lr {base.lr} (divided by 10 after {base.lr_patience} generations without a " \
        "better ReaL F1)" in table

    svg = svg_path.read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 6
    data = json.loads(json_path.read_text())
    assert len(data["histories"]["MILe"]) == 2 and len(data["histories"]["MILe"][0]) == 2


def test_shared_row_reads_the_base_rho_whatever_the_variant_trained_with(
    tmp_path: Path,
) -> None:
    base = tiny(epoch_num=1, k_t=2, k_s=1, rho=0.25)
    result = run_study(base, make_variants(["MILe"], ["rho=0.1"]), [0], tmp_path)
    final = result.histories["MILe rho=0.1"][0][-1]
    shared, best = summary_rows(result, "final")
    assert shared[1] == "0.25 (shared)"
    assert shared[5].startswith(f"{final['sweep']['0.25']['real_f1']:.3f}")
    assert shared[2] == best[2] == f"{final['map']:.3f}"  # mAP: the same at any rho
    assert final["rho"] == 0.1  # the run's own metrics are at its training rho


def test_one_seed_shows_no_spread() -> None:
    from mile_engine.reports.study import mean_sd_text

    assert mean_sd_text([0.5]) == "0.500"
    assert mean_sd_text([0.5, 0.7]) == "0.600 ± 0.141"


class Interrupted(Exception):
    """Raised from the progress callback: the study process dies between two runs."""


def test_a_stopped_study_continues_where_it_stopped(tmp_path: Path) -> None:
    """Sitting 1 dies after the first run; sitting 2 stops the second run mid-way (a
    save, then StudyStopped); sitting 3 finishes. The first run is never trained again
    (its metrics.jsonl is byte for byte what sitting 1 wrote), the second resumes from its
    stop save, and the tables are those of the same study run straight through."""
    base = tiny(epoch_num=2, k_t=2, k_s=1)
    variants = make_variants(["sigmoid", "MILe"])
    straight = run_study(base, variants, [0], tmp_path / "straight")

    out = tmp_path / "study"

    def die(line: str) -> None:
        raise Interrupted(line)

    with pytest.raises(Interrupted):
        run_study(base, variants, [0], out, die)
    plan = json.loads((out / PLAN_FILE).read_text())
    (first,) = plan["runs"].values()
    first_metrics = out / "runs" / first / "metrics.jsonl"
    written = first_metrics.read_bytes()

    control = Control()

    def stop_in_generation_two(event: ev.Event) -> None:
        if isinstance(event, ev.StepLogged) and event.global_step == 4:
            control.stop()

    lines: list[str] = []
    with pytest.raises(StudyStopped):
        run_study(base, variants, [0], out, lines.append, control=control,
                  sinks=[stop_in_generation_two])
    assert len(lines) == 1 and "read back" in lines[0]
    second = json.loads((out / PLAN_FILE).read_text())["runs"]["MILe | seed 0"]
    saves = read_records(out / "runs" / second)
    assert saves[-1].reason == "stop" and saves[-1].global_step == 4

    lines = []
    result = run_study(base, variants, [0], out, lines.append)
    assert "read back" in lines[0] and "resumed from" in lines[1]
    assert first_metrics.read_bytes() == written
    assert json.loads((out / PLAN_FILE).read_text())["runs"]["MILe | seed 0"] == second
    assert result.histories == straight.histories
    assert result.reference == straight.reference
    assert summary_rows(result, "final") == summary_rows(straight, "final")


@pytest.mark.parametrize("change", ["seeds", "variants", "settings"])
def test_a_study_folder_refuses_another_study(change: str, tmp_path: Path) -> None:
    base = tiny(epoch_num=1, k_t=1, k_s=1)
    variants = make_variants(["sigmoid"])

    def die(line: str) -> None:
        raise Interrupted(line)

    with pytest.raises(Interrupted):
        run_study(base, variants, [0, 1], tmp_path, die)
    other = {
        "seeds": (base, variants, [0, 2]),
        "variants": (base, make_variants(["softmax"]), [0, 1]),
        "settings": (dataclasses.replace(base, k_t=2), variants, [0, 1]),
    }[change]
    with pytest.raises(SettingsError, match=change if change != "settings" else "k_t"):
        run_study(*other, tmp_path)
    # What only says where and how fast the runs train may change between sittings.
    result = run_study(dataclasses.replace(base, log_every=5), variants, [0, 1], tmp_path)
    assert len(result.histories["sigmoid"]) == 2


def test_a_plateau_on_thresholded_f1_across_schemas_is_flagged() -> None:
    """ReaL F1 at rho falls as a single-label baseline learns, so a plateau on it would
    give the schemas different schedules; one schema, mAP or no plateau are fair."""
    baselines = make_variants(["sigmoid", "MILe"])
    assert "monitor=map" in (schedule_caveat(tiny(), baselines) or "")
    assert schedule_caveat(tiny(monitor="map"), baselines) is None
    assert schedule_caveat(tiny(scheduler="none"), baselines) is None
    assert schedule_caveat(tiny(), make_variants(["MILe"], ["rho=0.1,0.25"])) is None


def test_the_report_names_the_schedule_its_runs_trained_with() -> None:
    assert schedule_text({"scheduler": "plateau", "monitor": "map", "lr_patience": 5}) == \
        " (divided by 10 after 5 generations without a better mAP)"
    assert schedule_text({"scheduler": "none", "monitor": "map"}) == " (constant)"
