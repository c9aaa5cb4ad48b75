"""The trainer: owns the training state, runs the generations, emits events.

A generation is a list of phases (MILe: interactive then imitation; the baselines: one
ground-truth phase of the same length) followed by an evaluation. Its position
(generation, phase, step) is part of the state, so a run stopped anywhere between two
steps resumes exactly there.
"""

from __future__ import annotations

import contextlib
import random
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from mile_engine import events as ev
from mile_engine.config import Settings
from mile_engine.control import Control
from mile_engine.data import Batch, DataSource, build_source
from mile_engine.device import precision_name, resolve_device, resolve_precision
from mile_engine.metrics import METRIC_NAMES, EvalAccumulator
from mile_engine.models import build_model, count_parameters
from mile_engine.schemas import (
    IMITATION,
    Phase,
    ground_truth_loss,
    multi_label_bce,
    phases_of,
    pseudo_labels,
    uses_sigmoid,
)

# Extra thresholds evaluated after every generation, so that schemas can be compared
# at their best operating point as well as at the shared `rho`.
SWEEP_RHOS = (0.05, 0.1, 0.25, 0.5, 0.75)
EVAL_BATCH = 512
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4


class Checkpointer(Protocol):
    """Where the trainer's state goes when a save is due (the checkpoints issue's seam)."""

    def save(self, trainer: Trainer, reason: str) -> ev.CheckpointSaved:
        """Write the trainer's state; `reason` is "generation", "request" or "stop"."""
        ...


class StopRun(Exception):
    """Raised between steps when a stop was requested."""


class _Window:
    """Training statistics accumulated on the device between two progress records."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.labels = torch.zeros((), device=self.device)
        self.contains = torch.zeros((), device=self.device)
        self.steps = 0
        self.images = 0
        self.pseudo_images = 0
        self.started = time.perf_counter()


class Trainer:
    """Trains one run of one schema and reports what happens through events."""

    # -- configuration
    settings: Settings
    device: torch.device
    dtype: torch.dtype
    run_dir: Path
    # -- networks and optimisation (one optimizer for the one trainable network)
    student: nn.Module
    teacher: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None
    scaler: torch.amp.GradScaler
    # -- data
    source: DataSource
    # -- position: the next step to take is step `step` of phase `phase_index` of
    #    generation `generation` (all counted from 0)
    generation: int
    phase_index: int
    step: int
    global_step: int
    # -- results
    best_metrics: dict[str, float] | None
    history: list[dict[str, Any]]

    def __init__(
        self,
        settings: Settings,
        run_dir: Path,
        sinks: Sequence[ev.Sink] = (),
        control: Control | None = None,
        checkpointer: Checkpointer | None = None,
        source: DataSource | None = None,
    ) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.sinks = list(sinks)
        self.control = control or Control()
        self.checkpointer = checkpointer
        self.device = resolve_device(settings.device)
        self.dtype = resolve_precision(settings.precision, self.device)
        self.phases: list[Phase] = phases_of(settings.schema, settings.k_t, settings.k_s)
        self.steps_per_generation = sum(p.steps for p in self.phases)
        self.total_steps = self.steps_per_generation * settings.epoch_num

        random.seed(settings.seed)
        torch.manual_seed(settings.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        sigmoid = uses_sigmoid(settings.schema)
        self.student = self._place(build_model(settings.model, sigmoid_head=sigmoid))
        self.teacher = self._place(build_model(settings.model, sigmoid_head=sigmoid))
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.eval().requires_grad_(False)
        self.optimizer = torch.optim.SGD(
            self.student.parameters(),
            lr=settings.lr,
            momentum=MOMENTUM,
            weight_decay=WEIGHT_DECAY,
        )
        self.scheduler = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max", factor=0.1, patience=settings.lr_patience
            )
            if settings.scheduler == "plateau"
            else None
        )
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.dtype == torch.float16
        )
        self.source = source or build_source(
            settings,
            self.device,
            progress=lambda task, done, total: self._emit(ev.DataProgress(task, done, total)),
            warn=lambda text: self._emit(ev.Message("warning", text)),
        )
        self.generation = self.phase_index = self.step = self.global_step = 0
        self.best_metrics = None
        self.history = []
        self.reference: dict[str, float] = {}
        self.resumed_from: str | None = None
        self._window = _Window(self.device)
        self._elapsed_before = 0.0
        self._started = time.perf_counter()

    # ------------------------------------------------------------------ helpers
    def _place(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return model

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _emit(self, event: ev.Event) -> None:
        for sink in self.sinks:
            sink(event)

    @property
    def elapsed_s(self) -> float:
        """Training wall time, across resumes."""
        return self._elapsed_before + time.perf_counter() - self._started

    @property
    def phase(self) -> Phase:
        """The phase the next step belongs to."""
        return self.phases[min(self.phase_index, len(self.phases) - 1)]

    # ------------------------------------------------------------------ the run
    def train(self) -> ev.RunEnded:
        """Run until every generation is done, a stop is requested, or an error occurs.

        Never raises for a training error: the returned (and emitted) `RunEnded` says
        what happened.
        """
        self._started = time.perf_counter()
        status, error = "finished", None
        try:
            self._emit(self._run_started())
            while self.generation < self.settings.epoch_num:
                self._run_generation()
        except StopRun:
            status = "stopped"
        except Exception as exc:  # the run fails, the caller (UI or CLI) stays alive
            status, error = "failed", self._report(exc)
        if status == "stopped":
            try:
                self._save("stop")
            except Exception as exc:  # a failed final save must still end the run cleanly
                status, error = "failed", self._report(exc)
        ended = ev.RunEnded(status, self.global_step, self.elapsed_s, self.best_metrics, error)
        self._emit(ended)
        return ended

    def _report(self, exc: Exception) -> str:
        self._emit(ev.Message("error", traceback.format_exc()))
        return f"{type(exc).__name__}: {exc}"

    def _run_started(self) -> ev.RunStarted:
        if not self.reference:
            self.reference = self._reference_f1s()
        return ev.RunStarted(
            run_dir=str(self.run_dir),
            settings=self.settings.to_dict(),
            device=str(self.device),
            precision=precision_name(self.dtype),
            parameters=count_parameters(self.student),
            total_steps=self.total_steps,
            global_step=self.global_step,
            reference=self.reference,
            resumed_from=self.resumed_from,
        )

    def _run_generation(self) -> None:
        while self.phase_index < len(self.phases):
            phase = self.phases[self.phase_index]
            if self.step == 0 and phase.name == IMITATION:
                # The teacher becomes a frozen copy of the student at the phase switch.
                self.teacher.load_state_dict(self.student.state_dict())
            self._emit(
                ev.PhaseStarted(self.generation + 1, self.settings.epoch_num, phase.name,
                                phase.steps)
            )
            self._window.reset()
            while self.step < phase.steps:
                self._between_steps()
                self._train_step(phase, self.source.train_batch())
                self.step += 1
                self.global_step += 1
                if self.step % self.settings.log_every == 0 or self.step == phase.steps:
                    self._flush_window(phase)
            self.phase_index += 1
            self.step = 0
        metrics = self.evaluate()
        self.generation += 1
        self.phase_index = 0
        self._save("generation")
        del metrics

    def _between_steps(self) -> None:
        control = self.control
        if control.paused and not control.stop_requested:
            self._emit(ev.Paused(self.global_step))
            paused_at = time.perf_counter()
            while control.wait_while_paused():
                pass
            # Time spent paused is neither training time nor part of images/s.
            self._started += time.perf_counter() - paused_at
            self._window.started += time.perf_counter() - paused_at
            self._emit(ev.Resumed(self.global_step))
        if control.stop_requested:
            raise StopRun
        if control.take_save_request():
            self._save("request")

    # ------------------------------------------------------------------ steps
    def _train_step(self, phase: Phase, batch: Batch) -> None:
        if phase.name == IMITATION:
            loss = self.imitation_step(batch)
        else:
            loss = self.interactive_step(batch)
        w = self._window
        w.loss += loss
        w.steps += 1
        w.images += len(batch.labels)

    def _optimize(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _input(self, batch: Batch) -> torch.Tensor:
        if self.device.type == "cuda":
            return batch.images.contiguous(memory_format=torch.channels_last)
        return batch.images.contiguous()

    def interactive_step(self, batch: Batch) -> torch.Tensor:
        """One optimizer step of the student on the ground-truth single labels."""
        self.student.train()
        with self._autocast():
            logits = self.student(self._input(batch))
        loss = ground_truth_loss(self.settings.schema, logits, batch.labels)
        self._optimize(loss)
        return loss.detach()

    def imitation_step(self, batch: Batch) -> torch.Tensor:
        """One optimizer step of the student on the frozen teacher's pseudo-labels."""
        x = self._input(batch)
        with torch.no_grad(), self._autocast():
            teacher_logits = self.teacher(x)
        labels = batch.labels if self.settings.gt_or else None
        targets = pseudo_labels(teacher_logits, self.settings.rho, labels)
        self.student.train()
        with self._autocast():
            logits = self.student(x)
        loss = multi_label_bce(logits, targets)
        self._optimize(loss)
        w = self._window
        w.labels += targets.sum()
        rows = torch.arange(len(batch.labels), device=targets.device)
        w.contains += targets[rows, batch.labels].sum()
        w.pseudo_images += len(batch.labels)
        return loss.detach()

    def _flush_window(self, phase: Phase) -> None:
        """Read the device-side sums once per record: the only host sync of training."""
        w = self._window
        if not w.steps:
            return
        loss = float(w.loss) / w.steps
        seconds = max(time.perf_counter() - w.started, 1e-9)
        self._emit(
            ev.StepLogged(
                generation=self.generation + 1,
                phase=phase.name,
                step=self.step,
                steps=phase.steps,
                global_step=self.global_step,
                total_steps=self.total_steps,
                loss=loss,
                lr=float(self.optimizer.param_groups[0]["lr"]),
                images_per_s=w.images / seconds,
                elapsed_s=self.elapsed_s,
            )
        )
        if w.pseudo_images:
            self._emit(
                ev.PseudoLabelStats(
                    generation=self.generation + 1,
                    step=self.step,
                    global_step=self.global_step,
                    labels_per_image=float(w.labels) / w.pseudo_images,
                    contains_label=float(w.contains) / w.pseudo_images,
                )
            )
        w.reset()

    # ------------------------------------------------------------------ evaluation
    def _rhos(self) -> list[float]:
        rho = self.settings.rho
        return [rho] + [r for r in SWEEP_RHOS if abs(r - rho) > 1e-9]

    def predict_logits(
        self, model: nn.Module | None = None
    ) -> Iterator[tuple[Batch, torch.Tensor]]:
        """Yield (batch, logits) over the validation set with `model` (the student)."""
        model = model or self.student
        model.eval()
        with torch.inference_mode(), self._autocast():
            for batch in self.source.val_batches(EVAL_BATCH):
                yield batch, model(self._input(batch)).float()

    def evaluate(self) -> dict[str, float]:
        """Evaluate the student, update the schedule and the best, emit `Evaluated`."""
        started = time.perf_counter()
        acc = EvalAccumulator(
            self.source.num_classes, self._rhos(), uses_sigmoid(self.settings.schema),
            self.device,
        )
        images = 0
        for batch, logits in self.predict_logits():
            assert batch.real is not None
            acc.update(logits, batch.labels, batch.real)
            images += len(batch.labels)
        results = acc.compute()
        metrics = dict(results[0])
        # Every metric at every swept threshold: schemas compare at their best rho too.
        sweep = {str(r["rho"]): {k: r[k] for k in METRIC_NAMES} for r in results}
        f1 = metrics["real_f1"]
        best = self.best_metrics is None or f1 > self.best_metrics["real_f1"]
        if best:
            self.best_metrics = dict(metrics)
            self.best_metrics["generation"] = self.generation + 1
        if self.scheduler is not None:
            self.scheduler.step(f1)
        record = {"generation": self.generation + 1, "global_step": self.global_step,
                  **metrics, "sweep": sweep}
        self.history.append(record)
        seconds = max(time.perf_counter() - started, 1e-9)
        self._emit(ev.Evaluated(self.generation + 1, self.global_step, metrics, best,
                                images / seconds, sweep))
        return metrics

    def _reference_f1s(self) -> dict[str, float]:
        """The validation set's reference F1s: predict every class; the single label."""
        acc = EvalAccumulator(self.source.num_classes, [0.5], False, self.device)
        for batch in self.source.val_batches(EVAL_BATCH):
            assert batch.real is not None
            acc.update(torch.zeros(len(batch.labels), self.source.num_classes,
                                   device=self.device), batch.labels, batch.real)
        result = acc.compute()[0]
        return {"ref_f1_all": result["ref_f1_all"], "ref_f1_label": result["ref_f1_label"]}

    # ------------------------------------------------------------------ state
    def _save(self, reason: str) -> None:
        if self.checkpointer is not None:
            self._emit(self.checkpointer.save(self, reason))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly: tensors and plain values only."""
        state: dict[str, Any] = {
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict(),
            "position": {
                "generation": self.generation,
                "phase_index": self.phase_index,
                "step": self.step,
                "global_step": self.global_step,
            },
            "best_metrics": self.best_metrics,
            "history": self.history,
            "reference": self.reference,
            "elapsed_s": self.elapsed_s,
            "data": self.source.state_dict(),
            "rng": {
                "python": _python_rng_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by `state_dict`."""
        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        pos = state["position"]
        self.generation = pos["generation"]
        self.phase_index = pos["phase_index"]
        self.step = pos["step"]
        self.global_step = pos["global_step"]
        self.best_metrics = state["best_metrics"]
        self.history = list(state["history"])
        self.reference = dict(state["reference"])
        self._elapsed_before = float(state["elapsed_s"])
        self.source.load_state_dict(state["data"])
        rng = state["rng"]
        _set_python_rng_state(rng["python"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


def _python_rng_state() -> list[Any]:
    """Python's RNG state as plain lists (loadable with weights_only=True)."""
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_python_rng_state(state: list[Any]) -> None:
    version, internal, gauss = state
    random.setstate((version, tuple(internal), gauss))
