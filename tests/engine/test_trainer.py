"""The trainer on tiny CPU runs: events, phases, teacher, pseudo-labels, control."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from mile_engine import events as ev
from mile_engine import schemas
from mile_engine.config.schema import Settings, SettingsError
from mile_engine.control import Control
from mile_engine.data import Batch
from mile_engine.metrics import METRIC_NAMES
from mile_engine.runstore.manifest import read_records
from mile_engine.session import open_run, resume_settings
from mile_engine.trainer import SWEEP_RHOS, Trainer
from tests.helpers.metrics import (
    assert_metrics_equal,
    evaluation_reference,
)
from tests.helpers.settings import tiny
from tests.helpers.sources import NUM_CLASSES, FixedSource, random_batches, val_set


def run(
    settings: Settings,
    tmp_path: Path,
    sinks: Sequence[ev.Sink] = (),
    control: Control | None = None,
) -> tuple[Trainer, list[ev.Event], ev.RunEnded]:
    """Train `settings` in `tmp_path`; return the trainer, every event, and the end."""
    seen: list[ev.Event] = []
    trainer = Trainer(settings, tmp_path, sinks=[seen.append, *sinks], control=control)
    ended = trainer.train()
    return trainer, seen, ended


def recorded_batches(trainer: Trainer) -> list[Batch]:
    """Keep every training batch the trainer draws, in order."""
    batches: list[Batch] = []
    draw = trainer.source.train_batch

    def recording() -> Batch:
        batches.append(draw())
        return batches[-1]

    trainer.source.train_batch = recording  # type: ignore[method-assign]
    return batches


def pseudo_label_reference(trainer: Trainer, batch: Batch) -> tuple[float, float]:
    """(labels per image, share containing the label) of `1[sigmoid(teacher(x)) > rho]`,
    counted image by image."""
    with torch.no_grad():
        probs = torch.sigmoid(trainer.teacher(batch.images).double()).tolist()
    rho = trainer.settings.rho
    sets = [{c for c, p in enumerate(row) if p > rho} for row in probs]
    labels = batch.labels.tolist()
    per_image = sum(len(s) for s in sets) / len(sets)
    contains = sum(label in s for label, s in zip(labels, sets, strict=True)) / len(sets)
    return per_image, contains


def test_mile_event_sequence_and_exact_phase_steps(tmp_path: Path) -> None:
    seen: list[ev.Event] = []
    expected: list[tuple[ev.Event, Any]] = []  # computed when the event came

    def reference(event: ev.Event) -> None:
        if isinstance(event, ev.Evaluated):
            expected.append((event, evaluation_reference(trainer, [*event.sweep])))
        if isinstance(event, ev.PseudoLabelStats):  # log_every = 1: one batch each
            expected.append((event, pseudo_label_reference(trainer, batches[-1])))

    trainer = Trainer(tiny(), tmp_path, sinks=[seen.append, reference])
    batches = recorded_batches(trainer)
    ended = trainer.train()
    assert ended.status == "finished" and ended.global_step == 10
    kinds = [type(e).__name__ for e in seen if not isinstance(e, ev.Message)]
    one_generation = (
        ["PhaseStarted"] + ["StepLogged"] * 3
        + ["PhaseStarted"] + ["StepLogged", "PseudoLabelStats"] * 2 + ["Evaluated"]
    )
    assert kinds == ["RunStarted", *one_generation, *one_generation, "RunEnded"]
    phases = [(e.generation, e.phase, e.steps) for e in seen if isinstance(e, ev.PhaseStarted)]
    assert phases == [(1, "interactive", 3), (1, "imitation", 2),
                      (2, "interactive", 3), (2, "imitation", 2)]
    evals = [e for e in seen if isinstance(e, ev.Evaluated)]
    assert [e.global_step for e in evals] == [5, 10]
    assert [type(e).__name__ for e, _ in expected] == (
        ["PseudoLabelStats"] * 2 + ["Evaluated"]) * 2
    for event, want in expected:
        if isinstance(event, ev.Evaluated):
            rho = str(trainer.settings.rho)
            assert set(event.sweep) == {rho} | {str(r) for r in SWEEP_RHOS}
            assert_metrics_equal(event.metrics, want[rho])  # with the reference F1s
            for rho, metrics in event.sweep.items():
                assert_metrics_equal(metrics, {k: want[rho][k] for k in METRIC_NAMES})
        if isinstance(event, ev.PseudoLabelStats):
            assert event.labels_per_image == pytest.approx(want[0], abs=1e-9)
            assert event.contains_label == pytest.approx(want[1], abs=1e-9)


@pytest.mark.parametrize("schema", ["sigmoid", "softmax"])
def test_baselines_take_the_same_steps_in_one_phase(schema: str, tmp_path: Path) -> None:
    _, seen, ended = run(tiny(schema=schema), tmp_path)
    assert ended.global_step == 10
    phases = [(e.phase, e.steps) for e in seen if isinstance(e, ev.PhaseStarted)]
    assert phases == [("interactive", 5), ("interactive", 5)]
    assert not any(isinstance(e, ev.PseudoLabelStats) for e in seen)


def params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def test_teacher_copies_student_at_switch_and_stays_frozen(tmp_path: Path) -> None:
    snapshots: dict[str, list[torch.Tensor]] = {}
    trainer: Trainer

    def watch(event: ev.Event) -> None:
        if isinstance(event, ev.PhaseStarted) and event.phase == "imitation":
            snapshots["teacher"] = params(trainer.teacher)
            snapshots["student"] = params(trainer.student)
        if isinstance(event, ev.Evaluated) and event.generation == 1:
            snapshots["teacher_after"] = params(trainer.teacher)
            snapshots["student_after"] = params(trainer.student)

    trainer = Trainer(tiny(epoch_num=1), tmp_path, sinks=[watch])
    trainer.train()
    for a, b in zip(snapshots["teacher"], snapshots["student"], strict=True):
        assert torch.equal(a, b)
    for a, b in zip(snapshots["teacher"], snapshots["teacher_after"], strict=True):
        assert torch.equal(a, b)
    changed = any(
        not torch.equal(a, b)
        for a, b in zip(snapshots["student"], snapshots["student_after"], strict=True)
    )
    assert changed
    assert not any(p.requires_grad for p in trainer.teacher.parameters())


def test_imitation_targets_are_teacher_probabilities_over_rho(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = Trainer(tiny(rho=0.3), tmp_path)
    captured: list[torch.Tensor] = []
    real_bce = schemas.multi_label_bce

    def spy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        captured.append(targets.clone())
        return real_bce(logits, targets)

    monkeypatch.setattr("mile_engine.trainer.multi_label_bce", spy)
    batch = trainer.source.train_batch()
    with torch.no_grad():
        expected = torch.sigmoid(trainer.teacher.eval()(batch.images)) > 0.3
    trainer.imitation_step(batch)
    assert torch.equal(captured[0], expected)


def test_same_seed_same_losses(tmp_path: Path) -> None:
    def losses() -> list[float]:
        _, seen, _ = run(tiny(epoch_num=1), tmp_path)
        return [e.loss for e in seen if isinstance(e, ev.StepLogged)]

    assert losses() == losses()


def test_stop_between_steps(tmp_path: Path) -> None:
    control = Control()

    def stop_at_4(event: ev.Event) -> None:
        if isinstance(event, ev.StepLogged) and event.global_step == 4:
            control.stop()

    _, seen, ended = run(tiny(), tmp_path, [stop_at_4], control)
    assert ended.status == "stopped" and ended.global_step == 4
    assert isinstance(seen[-1], ev.RunEnded)


class WatchedControl(Control):
    """A Control that says when the trainer has waited out a whole poll while paused."""

    def __init__(self) -> None:
        super().__init__()
        self.held = threading.Event()

    def wait_while_paused(self, timeout: float = 0.1) -> bool:
        still_paused = super().wait_while_paused(timeout)
        if still_paused:
            self.held.set()
        return still_paused


def test_pause_holds_the_step_counter_until_resumed(tmp_path: Path) -> None:
    control = WatchedControl()
    steps_while_held: list[int] = []
    seen: list[ev.Event] = []

    def pause_at_2(event: ev.Event) -> None:
        if isinstance(event, ev.StepLogged) and event.global_step == 2:
            control.pause()

    def resume_once_held() -> None:
        # Resume only once the trainer is seen blocked in its pause, not after a delay.
        if control.held.wait(timeout=600):  # a hang guard, not the assertion
            steps_while_held.append(sum(isinstance(e, ev.StepLogged) for e in seen))
        control.resume()

    resumer = threading.Thread(target=resume_once_held)
    resumer.start()
    trainer = Trainer(tiny(epoch_num=1), tmp_path, sinks=[seen.append, pause_at_2],
                      control=control)
    ended = trainer.train()
    control.held.set()  # frees the resumer if the trainer never paused (the checks then fail)
    resumer.join()
    assert ended.status == "finished" and ended.global_step == 5
    assert steps_while_held == [2]  # blocked in the pause after exactly two steps
    kinds = [type(e).__name__ for e in seen]
    paused, resumed_at = kinds.index("Paused"), kinds.index("Resumed")
    assert resumed_at == paused + 1  # no step happened while paused
    assert seen[paused].global_step == 2  # type: ignore[union-attr]


def test_training_error_is_reported_not_raised(tmp_path: Path) -> None:
    trainer = Trainer(tiny(), tmp_path)
    seen: list[ev.Event] = []
    trainer.sinks = [seen.append]

    def broken() -> Batch:
        raise RuntimeError("disk on fire")

    trainer.source.train_batch = broken  # type: ignore[method-assign]
    ended = trainer.train()
    assert ended.status == "failed" and ended.error == "RuntimeError: disk on fire"
    assert any(isinstance(e, ev.Message) and "disk on fire" in e.text for e in seen)


def test_compile_without_a_cpu_compiler_is_refused_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    settings = tiny(compile=True, checkpoint_path=str(tmp_path / "runs"))
    with pytest.raises(SettingsError, match=r"a C\+\+ compiler \(no-such-c\+\+-compiler\)"):
        open_run(settings)
    assert not (tmp_path / "runs").exists()  # refused before any folder was made


def test_a_resumed_run_may_turn_compile_off() -> None:
    saved = tiny(compile=True).to_dict()
    assert not resume_settings(saved, ["compile=false"]).compile


def test_a_run_saved_without_fp16_loads_into_an_fp16_loss_scaler(tmp_path: Path) -> None:
    # A bf16 or fp32 run resumed with precision = fp16 (on CUDA): its saved scaler state
    # is empty, and the new, enabled scaler must start fresh instead of failing.
    saved = Trainer(tiny(), tmp_path).state_dict()
    assert saved["scaler"] == {}
    resumed = Trainer(tiny(), tmp_path)
    resumed.scaler = torch.amp.GradScaler("cpu", enabled=True)
    resumed.load_state_dict(saved)
    assert resumed.scaler.is_enabled() and resumed.scaler.get_scale() == 65536.0


# ----------------------------------------------------------------------------- the best generation
# The trainer's choice of the best generation, and how it numbers generations.
#
# The validation set of each evaluation is scripted so that its ReaL F1 is known whatever
# the weights, while top-1 and ReaL accuracy stay constant: twenty copies of one image
# (one argmax, whichever it is), ReaL sets the ten cyclic windows of `a` classes and the
# ten of `b` classes (F1 = mean of a/(5(1+a)) and b/(5(1+b)); ReaL accuracy (a+b)/20),
# single labels 0..9 twice (top-1 = 1/10). A best chosen by another metric, by `>=`, or
# numbered off by one then shows.
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


# -------------------------------------------------------------- where the ReaL sets come from
SINGLE = "single labels (no val_labels_path)"


def test_the_trainer_announces_where_its_source_takes_the_sets(tmp_path: Path) -> None:
    (val,) = random_batches(1)
    val = Batch(val.images, val.labels, torch.nn.functional.one_hot(val.labels, 10).bool())
    source = FixedSource(random_batches(1), [val])
    source.sets_from = SINGLE  # type: ignore[attr-defined]
    trainer = Trainer(tiny(), tmp_path, source=source)
    assert trainer._run_started().label_sets == SINGLE
    del source.sets_from  # type: ignore[attr-defined]
    assert trainer._run_started().label_sets == ""  # the grids and ImageNet say nothing


# ------------------------------------------------------------------ divergence
@pytest.mark.parametrize(("poison", "log_every"), [
    (math.nan, 1), (math.inf, 1), (math.nan, 2),
])
def test_a_non_finite_loss_fails_the_run_and_keeps_the_saves_before(
    tmp_path: Path, poison: float, log_every: int
) -> None:
    """Weights turned NaN (or infinite) during generation 2: the next progress record
    ends the run "failed", with a one-line reason; generation 1's save is the newest and
    still finite, and nothing trained on the poisoned weights is saved or evaluated."""
    settings = tiny(checkpoint_path=str(tmp_path / "runs"), epoch_num=3, log_every=log_every)
    events: list[ev.Event] = []
    trainer: Trainer | None = None

    def sink(event: ev.Event) -> None:
        events.append(event)
        # Right after generation 1's save, before generation 2's first step.
        if isinstance(event, ev.CheckpointSaved) and trainer is not None:
            with torch.no_grad():
                for p in trainer.student.parameters():
                    p.fill_(poison)

    trainer = open_run(settings, [sink])
    ended = trainer.train()

    assert ended.status == "failed"
    assert ended.error is not None and ended.error.startswith("training diverged: the loss")
    assert "\n" not in ended.error
    records = read_records(trainer.run_dir)
    assert [r.global_step for r in records] == [settings.k_t + settings.k_s]
    state = torch.load(trainer.run_dir / records[-1].file, weights_only=True)
    assert all(bool(torch.isfinite(t).all()) for t in state["student"].values()
               if t.is_floating_point())
    assert [e.generation for e in events if isinstance(e, ev.Evaluated)] == [1]
    # Every progress record before the end is finite: the bad one ended the run instead.
    assert all(math.isfinite(e.loss) for e in events if isinstance(e, ev.StepLogged))
