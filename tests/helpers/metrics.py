"""The plain per-image metric reference, written from DESIGN.md's metric table, and the
evaluation of a trainer's student recomputed with it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch

from mile_engine.trainer import EVAL_BATCH, Trainer

KEYS = ("top1", "real_accuracy", "real_f1", "real_precision", "real_recall", "coverage",
        "ref_f1_all", "ref_f1_label")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _mean(total: float, count: int) -> float:
    return total / count if count else math.nan


def reference_metrics(
    logits: Sequence[Sequence[float]],
    labels: Sequence[int],
    real: Sequence[set[int]],
    rho: float,
    sigmoid: bool,
) -> dict[str, float]:
    """DESIGN.md's metrics, one image at a time, in plain Python (no tensors).

    `P = {argmax}` (softmax) or `{argmax} | {c : sigmoid(logit_c) > rho}`; ReaL metrics
    and reference F1s average over images with a non-empty ReaL set `R`; top-1 over images
    whose single label is known (>= 0); coverage (mean |P|) over all images.
    """
    classes = len(logits[0])
    sums = dict.fromkeys(KEYS, 0.0)
    known = scored = scored_known = 0
    for row, label, r in zip(logits, labels, real, strict=True):
        top = max(range(classes), key=lambda j: row[j])
        p = {top} | ({j for j in range(classes) if _sigmoid(row[j]) > rho} if sigmoid else set())
        sums["coverage"] += len(p)
        if label >= 0:
            known += 1
            sums["top1"] += top == label
        if not r:
            continue
        scored += 1
        hit = len(p & r)
        sums["real_accuracy"] += top in r
        sums["real_f1"] += 2 * hit / (len(p) + len(r))
        sums["real_precision"] += hit / len(p)
        sums["real_recall"] += hit / len(r)
        sums["ref_f1_all"] += 2 * len(r) / (classes + len(r))  # P = every class
        if label >= 0:
            scored_known += 1
            sums["ref_f1_label"] += 2 * (label in r) / (1 + len(r))  # P = {label}
    counts = {"top1": known, "coverage": len(labels), "ref_f1_label": scored_known}
    return {k: _mean(sums[k], counts.get(k, scored)) for k in KEYS}


def as_python(
    logits: torch.Tensor, labels: torch.Tensor, real: torch.Tensor
) -> tuple[list[list[float]], list[int], list[set[int]]]:
    """Tensors as the reference takes them."""
    sets = [{j for j, on in enumerate(row) if on} for row in real.tolist()]
    return logits.double().tolist(), labels.tolist(), sets


def assert_metrics_equal(got: dict[str, float], expected: dict[str, float]) -> None:
    """Every metric equal within float tolerance; NaN (nothing to score) where expected."""
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, abs=1e-9), key


def evaluation_reference(trainer: Trainer, rhos: list[str]) -> dict[str, dict[str, float]]:
    """The metrics at each threshold, recomputed image by image from the student's logits
    on the validation set (the plain reference above, not the engine's)."""
    student, was_training = trainer.student, trainer.student.training
    student.eval()
    logits: list[list[float]] = []
    labels: list[int] = []
    real: list[set[int]] = []
    with torch.no_grad():
        for batch in trainer.source.val_batches(EVAL_BATCH):
            assert batch.real is not None
            rows = as_python(student(batch.images), batch.labels, batch.real)
            logits, labels, real = logits + rows[0], labels + rows[1], real + rows[2]
    student.train(was_training)
    sigmoid = trainer.settings.schema != "softmax"
    return {rho: reference_metrics(logits, labels, real, float(rho), sigmoid) for rho in rhos}


