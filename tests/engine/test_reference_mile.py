"""MILe and its baselines against an independent reference loop.

`reference_run` is written from DESIGN.md ("The algorithm") and imports nothing from
`mile_engine`: its network is torchvision's ResNet-18 with ten classes (what
`resnet18-10` is); its losses, pseudo-labels, optimizer and teacher are its own. The
engine trains on the same fixed batches from the same initial weights, and every step's
loss, the teacher of every generation, the imitation targets, the optimizer's settings
and the final weights must agree within float tolerance.

Both run in float64: ResNet-18 on tiny random batches is chaotic enough that float32
rounding alone (in the batch-norm variances) grows to percent-level differences within a
dozen steps, which would hide real mistakes behind loose tolerances.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torchvision

from mile_engine import events as ev
from mile_engine.config.schema import Schema, Settings
from mile_engine.data import Batch
from mile_engine.trainer import Trainer
from tests.helpers.reference import LOSS_RTOL, State, assert_same_state, snapshot
from tests.helpers.sources import FixedSource, random_batches, val_set

Batches = list[tuple[torch.Tensor, torch.Tensor]]
GENERATIONS = 3
K_T, K_S = 3, 2  # unequal, so that swapped phase lengths show
LR = 0.001  # larger rates make the float noise between two correct loops grow chaotically


@pytest.fixture(autouse=True)
def float64() -> Iterator[None]:
    """Networks built in these tests (the engine's included) are float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@dataclass
class Trace:
    """What one run did."""

    phases: list[str] = field(default_factory=list)  # per step
    losses: list[float] = field(default_factory=list)  # per step
    lrs: list[float] = field(default_factory=list)  # per step
    teachers: list[State] = field(default_factory=list)  # per generation
    targets: list[torch.Tensor] = field(default_factory=list)  # per imitation step
    teacher_logits: list[torch.Tensor] = field(default_factory=list)  # per imitation step
    teacher_frozen: list[bool] = field(default_factory=list)  # per imitation step
    final: State = field(default_factory=dict)


# ---------------------------------------------------------------- the reference
def bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on logits, summed over classes, averaged over the batch."""
    y = targets.to(logits.dtype)
    # log(1 + e^z) - y z, written stably: max(z, 0) - y z + log(1 + e^-|z|)
    per_entry = logits.clamp(min=0) - y * logits + torch.log1p(torch.exp(-logits.abs()))
    return per_entry.sum() / len(logits)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy, averaged over the batch."""
    picked = logits[torch.arange(len(labels)), labels]
    return (torch.logsumexp(logits, dim=1) - picked).mean()


def imitation_targets(teacher_logits: torch.Tensor, labels: torch.Tensor, rho: float,
                      gt_or: bool) -> torch.Tensor:
    """Pseudo-labels: teacher probabilities over rho, optionally OR the single label."""
    targets = torch.sigmoid(teacher_logits) > rho
    if gt_or:
        targets[torch.arange(len(labels)), labels] = True
    return targets


def reference_run(initial: State, batches: Batches, schema: str, rho: float,
                  gt_or: bool) -> Trace:
    """Train `GENERATIONS` generations of `schema` from `initial`, as DESIGN.md says."""
    trace = Trace()
    student = torchvision.models.resnet18(num_classes=10)
    student.load_state_dict(initial)
    optimizer = torch.optim.SGD(student.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)
    stream = itertools.cycle(batches)
    phases = [("interactive", K_T), ("imitation", K_S)] if schema == "MILe" else [
        ("interactive", K_T + K_S)]  # the baselines: the same compute on the ground truth
    for _generation in range(GENERATIONS):  # one student throughout, never re-initialised
        for phase, steps in phases:
            if phase == "imitation":  # the teacher: a frozen copy taken at the switch
                teacher = copy.deepcopy(student).eval().requires_grad_(False)
                trace.teachers.append(snapshot(teacher))
            for _step in range(steps):
                images, labels = next(stream)
                student.train()
                logits = student(images)
                if phase == "imitation":
                    with torch.no_grad():
                        teacher_logits = teacher(images)  # the batch the student sees
                    targets = imitation_targets(teacher_logits, labels, rho, gt_or)
                    loss = bce(logits, targets)
                    trace.targets.append(targets)
                    trace.teacher_logits.append(teacher_logits)
                elif schema == "softmax":
                    loss = cross_entropy(logits, labels)
                else:
                    one_hot = torch.zeros_like(logits).scatter_(1, labels[:, None], 1.0)
                    loss = bce(logits, one_hot)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                trace.phases.append(phase)
                trace.losses.append(loss.item())
                trace.lrs.append(optimizer.param_groups[0]["lr"])
    trace.final = snapshot(student)
    return trace


# ---------------------------------------------------------------- the engine
def engine_run(schema: Schema, rho: float, gt_or: bool, batches: Batches,
               tmp_path: Path) -> tuple[Trainer, State, Trace, ev.RunEnded]:
    """Run the engine on `batches`; return it, its initial student and what it did."""
    settings = Settings(
        model="resnet18-10", schema=schema, k_t=K_T, k_s=K_S, epoch_num=GENERATIONS,
        lr=LR, rho=rho, gt_or=gt_or, scheduler="none", log_every=1, device="cpu",
        precision="fp32", seed=0,
    )
    source = FixedSource([Batch(x, y) for x, y in batches], [val_set()])
    trace = Trace()
    probe = torchvision.models.resnet18(num_classes=10).eval()  # recomputes the targets

    def record(event: ev.Event) -> None:
        # Only records: an assertion raised here would be caught by the trainer.
        if not isinstance(event, ev.StepLogged):
            return
        trace.phases.append(event.phase)
        trace.losses.append(event.loss)
        trace.lrs.append(event.lr)
        if event.phase != "imitation":
            return
        teacher = trainer.teacher
        if event.step == 1:
            trace.teachers.append(snapshot(teacher))
        first = trace.teachers[-1]
        trace.teacher_frozen.append(
            not teacher.training
            and not any(p.requires_grad for p in teacher.parameters())
            and all(torch.equal(v, first[k]) for k, v in teacher.state_dict().items())
        )
        images, labels = batches[(event.global_step - 1) % len(batches)]
        probe.load_state_dict(first)
        with torch.no_grad():
            trace.targets.append(imitation_targets(probe(images), labels, rho, gt_or))

    trainer = Trainer(settings, tmp_path, sinks=[record], source=source)
    initial = snapshot(trainer.student)
    ended = trainer.train()
    trace.final = snapshot(trainer.student)
    return trainer, initial, trace, ended


# ---------------------------------------------------------------- the comparison
def assert_not_vacuous(ref: Trace, rho: float, gt_or: bool) -> None:
    """The setup can tell the mistakes apart: targets near rho but not on it, targets
    that thresholding raw logits would change, and targets that gt_or changes."""
    logits = torch.cat(ref.teacher_logits)
    targets = torch.cat(ref.targets)
    margin = float((logits - math.log(rho / (1 - rho))).abs().min())
    assert margin > 5e-5, f"a teacher logit sits {margin:.1e} from the threshold"
    assert ((logits > rho) != targets).any(), "raw-logit thresholding gives the same targets"
    assert 0 < targets.float().mean() < 0.5
    assert (targets != (torch.sigmoid(logits) > rho)).any() == gt_or


CASES = [
    pytest.param("MILe", 0.095, False, id="MILe"),
    pytest.param("MILe", 0.105, True, id="MILe-gt_or"),
    pytest.param("sigmoid", 0.095, False, id="sigmoid"),
    pytest.param("softmax", 0.095, False, id="softmax"),
]


@pytest.mark.parametrize(("schema", "rho", "gt_or"), CASES)
def test_engine_trains_like_the_reference(schema: Schema, rho: float, gt_or: bool,
                                          tmp_path: Path) -> None:
    # 32-pixel images: with 16, the last blocks normalise 8 values per channel and tiny
    # float differences between two correct loops can jump to 1e-3 within 15 steps.
    batches = [(b.images, b.labels) for b in random_batches(4, image_size=32)]
    trainer, initial, eng, ended = engine_run(schema, rho, gt_or, batches, tmp_path)
    assert ended.status == "finished", ended.error
    ref = reference_run(initial, batches, schema, rho, gt_or)
    if schema == "MILe":
        assert_not_vacuous(ref, rho, gt_or)

    # Initialisation (checked here, since the reference starts from the engine's weights):
    # the sigmoid head's bias at -log(C), the softmax head's at torchvision's default.
    bias = initial["fc.bias"]
    if schema == "softmax":
        assert bias.abs().max() <= 1 / math.sqrt(512)
    else:
        torch.testing.assert_close(bias, torch.full((10,), -math.log(10)), rtol=0, atol=1e-12)
    # One SGD over the student's parameters alone, with the design's settings.
    (group,) = trainer.optimizer.param_groups
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (LR, 0.9, 1e-4)
    assert (group["dampening"], group["nesterov"]) == (0, False)
    assert {id(p) for p in group["params"]} == {id(p) for p in trainer.student.parameters()}

    assert eng.phases == ref.phases
    assert len(ref.phases) == GENERATIONS * (K_T + K_S)
    assert eng.lrs == ref.lrs
    assert eng.losses == pytest.approx(ref.losses, rel=LOSS_RTOL)
    assert len(eng.teachers) == len(ref.teachers) == (GENERATIONS if schema == "MILe" else 0)
    for g, (teacher_e, teacher_r) in enumerate(zip(eng.teachers, ref.teachers, strict=True)):
        assert_same_state(teacher_e, teacher_r, initial, f"teacher of generation {g + 1}")
    assert all(eng.teacher_frozen), "the teacher must stay frozen: eval mode, no gradients"
    for step, (targets_e, targets_r) in enumerate(zip(eng.targets, ref.targets, strict=True)):
        assert torch.equal(targets_e, targets_r), f"imitation step {step + 1}"
    assert_same_state(eng.final, ref.final, initial, "final student")
