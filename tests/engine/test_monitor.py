"""mAP in every evaluation record, and the `monitor` setting that picks the best by it.

The scripted validation sets are copies of one image, so every class's scores tie over
the images: each class's AP is then its share of positive images (one threshold), and
mAP is known whatever the weights, as ReaL F1 is for a one-label prediction over cyclic
windows of classes (see `windows`). The scripts are chosen so that the two metrics
disagree on the best generation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from sklearn.metrics import average_precision_score

from mile_engine import events as ev
from mile_engine.checkpoints import RunCheckpointer
from mile_engine.config.schema import MONITORS, Monitor, Settings
from mile_engine.data import Batch
from mile_engine.runstore.manifest import read_records
from mile_engine.session import open_run
from mile_engine.trainer import Trainer
from tests.helpers.settings import tiny
from tests.helpers.sources import NUM_CLASSES, FixedSource, random_batches


def windows(a: int, b: int) -> Batch:
    """Twenty copies of one image; copy i's ReaL set is {i..i+a-1}, copy 10+i's
    {i..i+b-1} (mod 10); single labels 0..9, 0..9."""
    image = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    starts = torch.arange(NUM_CLASSES)[:, None]
    real = torch.zeros(2 * NUM_CLASSES, NUM_CLASSES, dtype=torch.bool)
    real[starts, (starts + torch.arange(a)) % NUM_CLASSES] = True
    real[NUM_CLASSES + starts, (starts + torch.arange(b)) % NUM_CLASSES] = True
    labels = torch.arange(2 * NUM_CLASSES) % NUM_CLASSES
    return Batch(image.expand(2 * NUM_CLASSES, -1, -1, -1).clone(), labels, real)


def scripted_f1(a: int, b: int) -> float:
    """ReaL F1 of a one-label prediction over `windows(a, b)`: the predicted class is in
    a of the ten first sets (size a) and b of the ten others (size b)."""
    return (2 * a / 10 / (1 + a) + 2 * b / 10 / (1 + b)) / 2


def scripted_map(a: int, b: int) -> float:
    """mAP over `windows(a, b)` when every class's scores tie: each class is positive in
    a + b of the 20 images, and one threshold gives AP = precision = (a + b) / 20."""
    return (a + b) / 20


# F1 falls from the first generation while mAP peaks at the second.
SCRIPT = [(5, 5), (2, 9), (3, 3)]


def scripted_run(monitor: Monitor, tmp_path: Path) -> tuple[Trainer, list[ev.Evaluated]]:
    """One generation per scripted validation set, the best chosen by `monitor`."""
    settings = Settings(
        schema="softmax", k_t=1, k_s=1, epoch_num=len(SCRIPT), lr=0.01,
        scheduler="none", log_every=1, device="cpu", precision="fp32", monitor=monitor,
    )
    source = FixedSource(random_batches(2), [windows(a, b) for a, b in SCRIPT])
    evaluated: list[ev.Evaluated] = []
    trainer = Trainer(settings, tmp_path, source=source,
                      sinks=[lambda e: evaluated.append(e) if isinstance(e, ev.Evaluated)
                             else None])
    ended = trainer.train()
    assert ended.status == "finished", ended.error
    return trainer, evaluated


def first_strict_best(values: list[float]) -> tuple[list[bool], int]:
    """Brute force: a best beats every earlier value strictly; the best generation is
    the first with the highest value (1-based)."""
    flags = [all(v > w for w in values[:i]) for i, v in enumerate(values)]
    return flags, values.index(max(values)) + 1


@pytest.mark.parametrize("monitor", ["real_f1", "map"])
def test_the_best_generation_is_the_best_by_the_monitored_metric(
    monitor: Monitor, tmp_path: Path
) -> None:
    trainer, evaluated = scripted_run(monitor, tmp_path)
    f1s = [scripted_f1(a, b) for a, b in SCRIPT]
    maps = [scripted_map(a, b) for a, b in SCRIPT]
    assert [e.metrics["real_f1"] for e in evaluated] == pytest.approx(f1s, abs=1e-9)
    assert [e.metrics["map"] for e in evaluated] == pytest.approx(maps, abs=1e-6)
    assert first_strict_best(f1s)[1] != first_strict_best(maps)[1]  # they disagree

    flags, generation = first_strict_best(f1s if monitor == "real_f1" else maps)
    assert [e.best for e in evaluated] == flags
    assert trainer.best_metrics is not None
    assert trainer.best_metrics["generation"] == generation


def test_monitor_map_marks_and_keeps_the_best_save_by_map(tmp_path: Path) -> None:
    """The manifest's best (kept by retention) is the save with the highest mAP."""
    settings = Settings(
        schema="softmax", k_t=1, k_s=1, epoch_num=len(SCRIPT), lr=0.01, scheduler="none",
        log_every=1, device="cpu", precision="fp32", monitor="map", max_checkpoint_num=1,
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    checkpointer = RunCheckpointer(run_dir, settings.max_checkpoint_num)
    source = FixedSource(random_batches(2), [windows(a, b) for a, b in SCRIPT])
    trainer = Trainer(settings, run_dir, source=source, checkpointer=checkpointer,
                      sinks=[checkpointer])
    ended = trainer.train()
    assert ended.status == "finished", ended.error
    records = read_records(run_dir)
    maps = [scripted_map(a, b) for a, b in SCRIPT]
    best_generation = maps.index(max(maps)) + 1
    # Retention keeps the newest save and the best by mAP, not the best by ReaL F1 (the
    # first generation's).
    assert sorted(r.generation for r in records) == sorted({best_generation, len(SCRIPT)})
    assert {r.monitor for r in records} == {"map"}


class LearningRates:
    """A sink: the learning rate after each evaluation (`Evaluated` comes after the
    schedule's step on it)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.seen: list[float] = []

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.Evaluated):
            self.seen.append(self.trainer.optimizer.param_groups[0]["lr"])


def test_plateau_schedule_steps_on_the_monitored_metric(tmp_path: Path) -> None:
    """With patience 0 the learning rate drops at every evaluation that does not beat
    the best so far: ReaL F1 falls from generation 2 on, mAP only at generation 3."""
    lrs: dict[str, list[float]] = {}
    for monitor in MONITORS:
        settings = Settings(
            schema="softmax", k_t=1, k_s=1, epoch_num=len(SCRIPT), lr=0.01,
            scheduler="plateau", lr_patience=0, log_every=1, device="cpu",
            precision="fp32", monitor=monitor,
        )
        source = FixedSource(random_batches(2), [windows(a, b) for a, b in SCRIPT])
        trainer = Trainer(settings, tmp_path, source=source)
        lr_after = LearningRates(trainer)
        trainer.sinks = [lr_after]
        ended = trainer.train()
        assert ended.status == "finished", ended.error
        lrs[monitor] = lr_after.seen
    assert lrs["real_f1"] == pytest.approx([0.01, 0.001, 0.0001])
    assert lrs["map"] == pytest.approx([0.01, 0.01, 0.001])


def test_an_evaluation_record_carries_the_map_of_its_scores(tmp_path: Path) -> None:
    """A real run's metrics.jsonl and checkpoint records carry mAP, equal to scikit-
    learn's on the student's validation probabilities, and the count of classes left
    out; the sweep entries (per threshold) do not repeat it."""
    settings = tiny(schema="MILe", epoch_num=1, val_size=48, grid_objects=2,
                    checkpoint_path=str(tmp_path / "runs"))
    trainer = open_run(settings)
    ended = trainer.train()
    assert ended.status == "finished", ended.error
    lines = (trainer.run_dir / "metrics.jsonl").read_text().splitlines()
    evaluated = [r for r in map(json.loads, lines) if r.get("event") == "Evaluated"]
    assert len(evaluated) == 1
    metrics = evaluated[0]["metrics"]

    # The student's logits as the trainer computes them; the probabilities and their
    # ranking are the reference's.
    scores, real = [], []
    for batch, logits in trainer.predict_logits():
        assert batch.real is not None
        scores.append(torch.sigmoid(logits.float()))
        real.append(batch.real)
    probs, targets = torch.cat(scores).numpy(), torch.cat(real).numpy()
    kept = targets.any(axis=0)
    want = average_precision_score(targets[:, kept], probs[:, kept], average="macro")
    assert metrics["map"] == pytest.approx(want, abs=1e-12)
    assert metrics["map_classes_left_out"] == int((~kept).sum())
    assert all("map" not in entry for entry in evaluated[0]["sweep"].values())
    (record,) = [r for r in read_records(trainer.run_dir) if r.metrics]
    assert record.metrics is not None and math.isclose(record.metrics["map"], metrics["map"])
