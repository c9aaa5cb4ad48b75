"""Pseudo-label precision and recall against the true label sets, recounted by hand.

As in test_pseudo_label_stats.py, the student's head is set at the end of the interactive
phase so that the teacher gives every image the same logits: with rho = 0.5 its
pseudo-labels are {1, 3, 5, 7}. The training batches carry random true sets; the
engine's records must equal a plain Python count over the images of each record's steps:
precision = sum |T & R| / sum |T|, recall = sum |T & R| / sum |R|, over the images whose
true set is known (non-empty).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mile_engine import events as ev
from mile_engine.config.schema import Settings
from mile_engine.data import Batch
from mile_engine.trainer import Trainer
from tests.helpers.sources import NUM_CLASSES, FixedSource, random_batches, val_set

BIAS = [0.0, 0.4, -0.3, 1.2, -2.0, 0.05, -0.05, 3.0, -5.0, 0.0]
TEACHER = {1, 3, 5, 7}


def true_sets(batches: int, size: int, seed: int) -> list[list[set[int]]]:
    """Random true sets holding each image's label; one image a batch has none."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        rows = (torch.rand(size, NUM_CLASSES, generator=gen) < 0.35).tolist()
        sets = [{c for c, on in enumerate(row) if on} for row in rows]
        sets[0] = set()  # unknown: leaves precision and recall alone
        out.append(sets)
    return out


def multi_hot(sets: list[set[int]]) -> torch.Tensor:
    table = torch.zeros(len(sets), NUM_CLASSES, dtype=torch.bool)
    for i, s in enumerate(sets):
        table[i, sorted(s)] = True
    return table


def brute_force(targets: list[set[int]], truths: list[set[int]]) -> tuple[float, float]:
    """Precision and recall of `targets` against `truths`, image by image."""
    hits = positives = true = 0
    for t, r in zip(targets, truths, strict=True):
        if not r:
            continue
        hits += len(t & r)
        positives += len(t)
        true += len(r)
    return hits / positives, hits / true


@pytest.mark.parametrize("gt_or", [False, True])
@pytest.mark.parametrize("known", [True, False])
def test_precision_and_recall_of_the_imitation_targets(gt_or: bool, known: bool,
                                                       tmp_path: Path) -> None:
    images = random_batches(4, seed=3)
    sets = true_sets(4, 8, seed=4)
    batches = [Batch(b.images, b.labels, multi_hot(s) if known else None)
               for b, s in zip(images, sets, strict=True)]
    settings = Settings(
        schema="MILe", k_t=1, k_s=3, epoch_num=1, rho=0.5, gt_or=gt_or, log_every=2,
        device="cpu", precision="fp32",
    )
    stats: list[ev.PseudoLabelStats] = []
    trainer: Trainer

    def record(event: ev.Event) -> None:
        if (isinstance(event, ev.StepLogged) and event.phase == "interactive"
                and event.step == event.steps):
            head = trainer.student.fc
            assert isinstance(head, torch.nn.Linear)
            with torch.no_grad():
                head.weight.zero_()
                head.bias.copy_(torch.tensor(BIAS))
        if isinstance(event, ev.PseudoLabelStats):
            stats.append(event)

    trainer = Trainer(settings, tmp_path, sinks=[record],
                      source=FixedSource(batches, [val_set()]))
    ended = trainer.train()
    assert ended.status == "finished", ended.error
    assert len(stats) == 2
    if not known:
        assert all(s.precision is None and s.recall is None for s in stats)
        return
    expected = []
    for window in ([1, 2], [3]):  # imitation steps 1-2, then 3: batches 1, 2, 3
        targets, truths = [], []
        for b in window:
            for label, truth in zip(images[b].labels.tolist(), sets[b], strict=True):
                targets.append(TEACHER | {label} if gt_or else set(TEACHER))
                truths.append(truth)
        expected.append(brute_force(targets, truths))
    assert [(s.precision, s.recall) for s in stats] == pytest.approx(expected, rel=1e-12)
    assert all(s.rejected_per_image is None and s.rejected_true is None for s in stats)
