"""The trainer's choice of the best generation, and how it numbers generations.

The validation set of each evaluation is scripted so that its ReaL F1 is known whatever
the weights, while top-1 and ReaL accuracy stay constant: twenty copies of one image
(one argmax, whichever it is), ReaL sets the ten cyclic windows of `a` classes and the
ten of `b` classes (F1 = mean of a/(5(1+a)) and b/(5(1+b)); ReaL accuracy (a+b)/20),
single labels 0..9 twice (top-1 = 1/10). A best chosen by another metric, by `>=`, or
numbered off by one then shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mile_engine import events as ev
from mile_engine.config import Settings
from mile_engine.data import Batch
from mile_engine.trainer import Trainer
from tests.helpers.metrics import assert_metrics_equal, evaluation_reference
from tests.helpers.sources import NUM_CLASSES, FixedSource, random_batches, val_set


def scripted_f1(a: int, b: int) -> float:
    """ReaL F1 of a one-label prediction over `windows(a, b)`."""
    return (a / (5 * (1 + a)) + b / (5 * (1 + b))) / 2


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


def scripted_run(script: list[tuple[int, int]],
                 tmp_path: Path) -> tuple[Trainer, list[ev.Evaluated]]:
    """Train one generation per scripted validation set; return the Evaluated events."""
    settings = Settings(
        schema="softmax", k_t=1, k_s=1, epoch_num=len(script), lr=0.01, scheduler="none",
        log_every=1, device="cpu", precision="fp32",
    )
    source = FixedSource(random_batches(2), [windows(a, b) for a, b in script])
    evaluated: list[ev.Evaluated] = []

    def record(event: ev.Event) -> None:
        if isinstance(event, ev.Evaluated):
            evaluated.append(event)

    trainer = Trainer(settings, tmp_path, sinks=[record], source=source)
    ended = trainer.train()
    assert ended.status == "finished", ended.error
    return trainer, evaluated


def expected_best(f1s: list[float]) -> tuple[list[bool], int]:
    """Brute force: each evaluation is a best iff its F1 beats every earlier one
    strictly; the best generation is the first with the highest F1 (1-based)."""
    flags = [all(f > g for g in f1s[:i]) for i, f in enumerate(f1s)]
    top = max(f1s)
    return flags, f1s.index(top) + 1


@pytest.mark.parametrize(
    "script",
    [
        [(2, 8), (3, 7), (5, 5)],  # F1 rises while top-1 and ReaL accuracy stay flat
        [(2, 8), (3, 7), (3, 7), (1, 9)],  # a tie: the earlier one stays the best
        [(5, 5), (1, 9), (4, 6)],  # the first is the best
    ],
    ids=["rising", "tie", "first"],
)
def test_the_best_generation_is_the_first_with_the_highest_real_f1(
    script: list[tuple[int, int]], tmp_path: Path
) -> None:
    trainer, evaluated = scripted_run(script, tmp_path)
    f1s = [scripted_f1(a, b) for a, b in script]
    got = [e.metrics["real_f1"] for e in evaluated]
    assert got == pytest.approx(f1s, abs=1e-9)
    # The flat metrics cannot decide anything.
    assert {round(e.metrics["top1"], 9) for e in evaluated} == {0.1}
    assert {round(e.metrics["real_accuracy"], 9) for e in evaluated} == {0.5}

    flags, best_generation = expected_best(got)
    assert [e.best for e in evaluated] == flags
    assert [e.generation for e in evaluated] == list(range(1, len(script) + 1))
    assert trainer.best_metrics is not None
    assert trainer.best_metrics["generation"] == best_generation
    assert trainer.best_metrics["real_f1"] == pytest.approx(f1s[best_generation - 1], abs=1e-9)
    # The history numbers generations from 1 too, one record per evaluation.
    assert [h["generation"] for h in trainer.history] == list(range(1, len(script) + 1))


def test_the_reported_metrics_are_those_at_the_runs_rho(tmp_path: Path) -> None:
    # A barely trained sigmoid head (bias -log 10: probabilities near 0.1) on random
    # images: the prediction sets at rho = 0.3 differ from those at the swept 0.05, so
    # reporting (or choosing the best by) another threshold's metrics shows.
    rho = 0.3
    settings = Settings(
        schema="MILe", k_t=1, k_s=1, epoch_num=1, lr=1e-6, rho=rho, scheduler="none",
        log_every=1, device="cpu", precision="fp32",
    )
    source = FixedSource(random_batches(2), [val_set(size=32)])
    evaluated: list[ev.Evaluated] = []
    trainer = Trainer(settings, tmp_path, source=source,
                      sinks=[lambda e: evaluated.append(e) if isinstance(e, ev.Evaluated)
                             else None])
    ended = trainer.train()
    assert ended.status == "finished", ended.error
    (event,) = evaluated
    want = evaluation_reference(trainer, [str(rho), "0.05"])
    assert want[str(rho)]["coverage"] != pytest.approx(want["0.05"]["coverage"])
    assert event.metrics["rho"] == rho
    assert_metrics_equal(event.metrics, want[str(rho)])
    assert trainer.best_metrics is not None
    assert trainer.best_metrics["real_f1"] == pytest.approx(want[str(rho)]["real_f1"], abs=1e-9)


@pytest.mark.parametrize("step", ["interactive_step", "imitation_step"])
def test_each_training_step_trains_the_student_in_train_mode(step: str, tmp_path: Path) -> None:
    # An evaluation (or the inspector, during a pause) leaves the student in eval mode;
    # the next step, whichever phase it belongs to, must train it with batch statistics
    # (its batch-norm running means move) while the teacher stays frozen in eval mode.
    settings = Settings(schema="MILe", k_t=1, k_s=1, epoch_num=1, lr=0.01, device="cpu",
                        precision="fp32", scheduler="none")
    batches = random_batches(2)
    trainer = Trainer(settings, tmp_path, source=FixedSource(batches, [val_set()]))
    for _ in trainer.predict_logits():  # leaves the student in eval mode
        pass
    assert not trainer.student.training
    before = {k: v.clone() for k, v in trainer.student.state_dict().items()
              if k.endswith("running_mean")}
    getattr(trainer, step)(batches[0])
    assert trainer.student.training
    after = trainer.student.state_dict()
    assert all(not torch.equal(after[k], v) for k, v in before.items())
    assert not trainer.teacher.training
