"""Pseudo-label statistics for a teacher whose logits are known, against hand counts.

At the end of the interactive phase the student's head is set to a zero weight and a
chosen bias, so the teacher copied from it at the switch gives every image the logits
BIAS. With rho = 0.5 its pseudo-labels are the classes with a positive bias: {1, 3, 5, 7}
(a zero bias sits exactly on the threshold and is out: the test is `>`, not `>=`;
thresholding raw logits at 0.5 would keep only {3, 7}).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mile_engine import events as ev
from mile_engine.config.schema import Settings
from mile_engine.data import Batch
from mile_engine.trainer import Trainer
from tests.helpers.sources import FixedSource, random_batches, val_set

BIAS = [0.0, 0.4, -0.3, 1.2, -2.0, 0.05, -0.05, 3.0, -5.0, 0.0]
# Single labels of the three imitation batches; * marks those in {1, 3, 5, 7}.
LABELS = [
    [1, 3, 0, 2, 5, 7, 9, 4],  # 1* 3* 5* 7*: 4 of 8
    [0, 0, 1, 8, 8, 6, 2, 2],  # 1*: 1 of 8
    [7, 7, 7, 3, 1, 5, 5, 0],  # all but the last: 7 of 8
]
# log_every = 2: one record over the first two imitation steps, one for the third.
EXPECTED = {
    # gt_or: (labels_per_image, contains_label) per record
    False: [(4.0, 5 / 16), (4.0, 7 / 8)],
    # the single label is added where the teacher missed it: 11 of 16, then 1 of 8
    True: [(4 + 11 / 16, 1.0), (4 + 1 / 8, 1.0)],
}


@pytest.mark.parametrize("gt_or", [False, True])
def test_pseudo_label_stats_of_a_known_teacher(gt_or: bool, tmp_path: Path) -> None:
    images = random_batches(4)
    batches = [images[0]] + [
        Batch(b.images, torch.tensor(labels)) for b, labels in zip(images[1:], LABELS, strict=True)
    ]
    settings = Settings(
        schema="MILe", k_t=1, k_s=3, epoch_num=1, rho=0.5, gt_or=gt_or, log_every=2,
        device="cpu", precision="fp32",
    )
    stats: list[ev.PseudoLabelStats] = []
    trainer: Trainer

    def record(event: ev.Event) -> None:
        interactive_over = (isinstance(event, ev.StepLogged) and event.phase == "interactive"
                            and event.step == event.steps)
        if interactive_over:
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

    assert [(s.generation, s.step, s.global_step) for s in stats] == [(1, 2, 3), (1, 3, 4)]
    measured = [(s.labels_per_image, s.contains_label) for s in stats]
    assert measured == pytest.approx(EXPECTED[gt_or])
