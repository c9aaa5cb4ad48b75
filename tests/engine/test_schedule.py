"""The plateau schedule's behaviour through real evaluations: the learning rate drops
tenfold once ReaL F1 has gone `lr_patience` evaluations without a gain and the next one
brings none either (PyTorch's ReduceLROnPlateau convention), and never after a gain.

The F1 of each evaluation is scripted through the validation set, whatever the weights:
twenty copies of one image (so one argmax) whose ReaL sets are the ten cyclic windows of
`a` classes and the ten of `b` classes. The argmax falls in `a` windows of the first
kind, each scoring 2/(1 + a), and in `b` of the second, so a softmax model's ReaL F1 is
the mean of a/(5(1 + a)) and b/(5(1 + b)), while with a + b = 10 its ReaL accuracy stays
0.5: a schedule fed another metric than F1 would act differently.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mile_engine import events as ev
from mile_engine.config.schema import Settings
from mile_engine.data import Batch
from mile_engine.trainer import Trainer
from tests.helpers.sources import NUM_CLASSES, FixedSource, random_batches

LR = 0.01
PATIENCE = 2
# (a, b, learning rate after that evaluation), worked out by hand with patience 2.
SCRIPT = [
    (2, 8, LR),  # F1 0.1556: the first evaluation is a gain
    (3, 7, LR),  # 0.1625: gain
    (3, 7, LR),  # 0.1625: equal is no gain (1 evaluation without)
    (1, 9, LR),  # 0.1400: 2 without
    (2, 8, LR / 10),  # 0.1556: 3 without, more than the patience: drop
    (4, 6, LR / 10),  # 0.1657: gain
    (4, 6, LR / 10),  # 1 without
    (3, 7, LR / 10),  # 2 without
    (3, 7, LR / 100),  # 3 without: drop
    (5, 5, LR / 100),  # 0.1667: gain
    (5, 5, LR / 100),  # 1 without
]


def scripted_f1(a: int, b: int) -> float:
    """ReaL F1 of a one-label prediction over the windows of `windows_val_set(a, b)`."""
    return (a / (5 * (1 + a)) + b / (5 * (1 + b))) / 2


def windows_val_set(a: int, b: int) -> Batch:
    """Twenty copies of one image: copy i's ReaL set is {i, ..., i + a - 1} (mod 10),
    copy 10 + i's is {i, ..., i + b - 1}."""
    image = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    starts = torch.arange(NUM_CLASSES)[:, None]
    real = torch.zeros(2 * NUM_CLASSES, NUM_CLASSES, dtype=torch.bool)
    real[starts, (starts + torch.arange(a)) % NUM_CLASSES] = True
    real[NUM_CLASSES + starts, (starts + torch.arange(b)) % NUM_CLASSES] = True
    labels = torch.full((2 * NUM_CLASSES,), -1)  # no single label: top-1 plays no part
    return Batch(image.expand(2 * NUM_CLASSES, -1, -1, -1).clone(), labels, real)


def test_lr_drops_after_patience_evaluations_without_a_gain(tmp_path: Path) -> None:
    settings = Settings(
        schema="softmax", k_t=1, k_s=1, epoch_num=len(SCRIPT), lr=LR, scheduler="plateau",
        lr_patience=PATIENCE, log_every=1, device="cpu", precision="fp32",
    )
    source = FixedSource(random_batches(2), [windows_val_set(a, b) for a, b, _ in SCRIPT])
    evaluations: list[dict[str, float]] = []
    lr_at_generation_start: dict[int, float] = {}

    def record(event: ev.Event) -> None:
        if isinstance(event, ev.Evaluated):
            evaluations.append(event.metrics)
        if isinstance(event, ev.StepLogged):
            lr_at_generation_start.setdefault(event.generation, event.lr)

    trainer = Trainer(settings, tmp_path, sinks=[record], source=source)
    ended = trainer.train()
    assert ended.status == "finished", ended.error

    f1s = [m["real_f1"] for m in evaluations]
    assert f1s == pytest.approx([scripted_f1(a, b) for a, b, _ in SCRIPT], abs=1e-6)
    assert [m["real_accuracy"] for m in evaluations] == pytest.approx([0.5] * len(SCRIPT))
    # The rate after evaluation g is the one generation g + 1 trains with.
    lr_after = [lr_at_generation_start[g] for g in range(2, len(SCRIPT) + 1)]
    lr_after.append(trainer.optimizer.param_groups[0]["lr"])
    assert lr_at_generation_start[1] == LR
    assert lr_after == pytest.approx([lr for _, _, lr in SCRIPT], rel=1e-9)
