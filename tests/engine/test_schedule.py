"""The plateau schedule's behaviour through real evaluations: the learning rate drops
tenfold once ReaL F1 has gone `lr_patience` evaluations without a gain and the next one
brings none either (PyTorch's ReduceLROnPlateau convention), and never after a gain.

The F1 of each evaluation is scripted through the validation set, not the engine: ten
copies of one image (so one argmax, whatever the network) whose ReaL sets are the ten
cyclic windows of k classes. The argmax falls in exactly k of them, so a softmax
model's ReaL F1 is (k/10) * 2/(1 + k), for any weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mile_engine import events as ev
from mile_engine.config import Settings
from mile_engine.data import Batch
from mile_engine.trainer import Trainer
from tests.engine.fixed_source import NUM_CLASSES, FixedSource, random_batches

LR = 0.01
PATIENCE = 2
# (k, learning rate after that evaluation), worked out by hand with patience 2.
SCRIPT = [
    (1, LR),  # F1 0.100: the first evaluation is a gain
    (3, LR),  # 0.150: gain
    (3, LR),  # 0.150: equal is no gain (1 without)
    (2, LR),  # 0.133: 2 without
    (2, LR / 10),  # 0.133: 3 without, more than the patience: drop
    (5, LR / 10),  # 0.167: gain
    (4, LR / 10),  # 0.160: 1 without
    (4, LR / 10),  # 0.160: 2 without
    (4, LR / 100),  # 0.160: 3 without: drop
    (8, LR / 100),  # 0.178: gain
    (8, LR / 100),  # 0.178: 1 without
]


def scripted_f1(k: int) -> float:
    """ReaL F1 of a one-label prediction over ten sets of k classes that it hits k times."""
    return k / NUM_CLASSES * 2 / (1 + k)


def windows_val_set(k: int) -> Batch:
    """Ten copies of one image; copy i's ReaL set is {i, ..., i + k - 1} (mod 10)."""
    image = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    rows = torch.arange(NUM_CLASSES)[:, None]
    real = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.bool)
    real[rows, (rows + torch.arange(k)) % NUM_CLASSES] = True
    labels = torch.full((NUM_CLASSES,), -1)  # no single label: top-1 plays no part
    return Batch(image.expand(NUM_CLASSES, -1, -1, -1).clone(), labels, real)


def test_lr_drops_after_patience_evaluations_without_a_gain(tmp_path: Path) -> None:
    settings = Settings(
        schema="softmax", k_t=1, k_s=1, epoch_num=len(SCRIPT), lr=LR, scheduler="plateau",
        lr_patience=PATIENCE, log_every=1, device="cpu", precision="fp32",
    )
    source = FixedSource(random_batches(2), [windows_val_set(k) for k, _ in SCRIPT])
    f1s: list[float] = []
    lr_at_generation_start: dict[int, float] = {}

    def record(event: ev.Event) -> None:
        if isinstance(event, ev.Evaluated):
            f1s.append(event.metrics["real_f1"])
        if isinstance(event, ev.StepLogged):
            lr_at_generation_start.setdefault(event.generation, event.lr)

    trainer = Trainer(settings, tmp_path, sinks=[record], source=source)
    ended = trainer.train()
    assert ended.status == "finished", ended.error

    assert f1s == pytest.approx([scripted_f1(k) for k, _ in SCRIPT], abs=1e-6)
    # The rate after evaluation g is the one generation g + 1 trains with.
    lr_after = [lr_at_generation_start[g] for g in range(2, len(SCRIPT) + 1)]
    lr_after.append(trainer.optimizer.param_groups[0]["lr"])
    assert lr_at_generation_start[1] == LR
    assert lr_after == pytest.approx([lr for _, lr in SCRIPT], rel=1e-9)
