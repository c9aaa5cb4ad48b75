"""The trainer: owns the training state, runs the generations, emits events.

A generation is a list of phases (MILe: interactive then imitation; the baselines: one
ground-truth phase of the same length) followed by an evaluation. Its position
(generation, phase, step) is part of the state, so a run stopped anywhere between two
steps resumes exactly there.

The trainer declares and owns the whole training state (STYLE.md 3), so its steps,
evaluation and state_dict read that state in one place; where and how a network runs is
`placement`'s, the saving is the checkpointer's.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mile_engine import distributed, placement
from mile_engine import events as ev
from mile_engine.config.schema import Settings, SettingsError
from mile_engine.control import Control, Snapshot
from mile_engine.data import Batch, DataSource, build_source
from mile_engine.device import (
    check_compile,
    choose_precision,
    precision_name,
    resolve_device,
)
from mile_engine.distributed import DistContext
from mile_engine.metrics import METRIC_NAMES, EvalAccumulator, ScoreKeeper
from mile_engine.models import build_model, count_parameters
from mile_engine.placement import model_input, place
from mile_engine.runstore.files import CheckpointError
from mile_engine.runstore.steering import RequestPoller
from mile_engine.schemas import (
    IMITATION,
    LARGE_LOSS_SCHEMAS,
    Phase,
    ground_truth_loss,
    large_loss,
    multi_label_bce,
    phases_of,
    pseudo_labels,
    rejection_rate,
    uses_sigmoid,
)
from mile_engine.system_stats import SystemSampler

# Extra thresholds evaluated after every generation, so that schemas can be compared
# at their best operating point as well as at the shared `rho`.
SWEEP_RHOS = (0.05, 0.1, 0.25, 0.5, 0.75)
EVAL_BATCH = 512
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
FUSED_SGD_DEVICES = ("cpu", "cuda")
"""Device types with a fused SGD kernel (torch.optim.SGD(fused=True))."""
# The position shown (generation, phase, step) is never older than this, whatever
# `log_every` says: a `Position` event (plain counters, no host sync) is due after it.
POSITION_INTERVAL_S = 1.0
# How often a paused run (under torchrun: every rank, together) looks for a resume.
PAUSE_POLL_S = 0.1


class Checkpointer(Protocol):
    """Where the trainer's state goes when a save is due: the run folder's saver, or a
    caller's own (a test's, an embedding program's), as the trainer cannot tell them apart."""

    def save(self, trainer: Trainer, reason: str) -> ev.CheckpointSaved:
        """Write the trainer's state; `reason` is "generation", "request" or "stop"."""
        ...


class RunFolder(Protocol):
    """A run folder made only once the trainer is built and checked (the session's
    `RunFiles`), so that a refused run leaves nothing behind: the trainer reads its
    path when it needs one, at the start of training."""

    @property
    def path(self) -> Path:
        """The folder; `Path()` until it is made."""
        ...


class StopRun(Exception):
    """Raised between steps when a stop was requested."""


class Diverged(Exception):
    """The training loss became NaN or infinite: the run fails, and saves nothing more."""


class _Window:
    """Training statistics accumulated on the device between two progress records."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.labels = torch.zeros((), device=self.device)
        self.contains = torch.zeros((), device=self.device)
        # Against the true label sets, where the batches carry them (`Batch.real`): the
        # targets that are true objects, all targets, all true objects; and LL's rejected
        # (or corrected) labels, and those of them that are true objects.
        self.hits = torch.zeros((), device=self.device)
        self.positives = torch.zeros((), device=self.device)
        self.truths = torch.zeros((), device=self.device)
        self.rejected = torch.zeros((), device=self.device)
        self.rejected_true = torch.zeros((), device=self.device)
        self.known = False  # whether any batch since the reset carried true sets
        self.rejects = False  # whether these are LL's steps
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
    precision_reason: str  # why `dtype`: "set", or the rule `auto` followed
    dist: DistContext
    # -- records: the run folder (`run_dir`), the event sinks and the saver
    sinks: list[ev.Sink]
    control: Control
    checkpointer: Checkpointer | None
    resumed_from: str | None  # the checkpoint this run continues from
    # -- networks and optimisation (one optimizer for the one trainable network)
    student: nn.Module
    teacher: nn.Module
    model: nn.Module  # what training steps call: the student, or its DDP / compiled wrapper
    teacher_forward: nn.Module  # the teacher, or its compiled form
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
        run_dir: Path | RunFolder,
        sinks: Sequence[ev.Sink] = (),
        control: Control | None = None,
        checkpointer: Checkpointer | None = None,
        source: DataSource | None = None,
        dist: DistContext | None = None,
        load_weights: bool = True,
        model: nn.Module | None = None,
        resumed_from: str | None = None,
    ) -> None:
        """`run_dir` is the run's folder, or a `RunFolder` made once the trainer is
        built; `sinks` receive every event, from the data set's download onwards.

        `load_weights=False` skips `settings.weights`: a resume overwrites them with
        the checkpoint anyway, and the file may have moved since the run began.

        `model` is the caller's own network, trained as the student in place of the one
        `settings.model` names (its teacher is a deep copy); it must take the source's
        batches and give one logit a class. `source` is the caller's own `DataSource`."""
        self.settings = settings
        self.dist = dist or DistContext()
        self._folder = run_dir
        self.sinks = list(sinks)
        self.control = control or Control()
        self.checkpointer = checkpointer
        self.device = resolve_device(settings.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)  # one GPU per process
        # The source comes before the precision: on the CPU, `auto` depends on its input side.
        self.source = source or build_source(
            settings,
            self.device,
            progress=lambda task, done, total: self._emit(ev.DataProgress(task, done, total)),
            warn=lambda text: self._emit(ev.Message("warning", text)),
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        choice = choose_precision(settings.precision, self.device, self.source.input_shape[-1])
        self.dtype, self.precision_reason = choice.dtype, choice.reason
        self.phases: list[Phase] = phases_of(settings.schema, settings.k_t, settings.k_s)
        self.steps_per_generation = sum(p.steps for p in self.phases)
        self.total_steps = self.steps_per_generation * settings.epoch_num

        random.seed(settings.seed)
        torch.manual_seed(settings.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        sigmoid = uses_sigmoid(settings.schema)
        # Both networks draw their random initialisation (the teacher's is overwritten
        # below, but keeps the run's random stream what it always was); only the student
        # loads `weights`, and says what it loaded in the run's first lines.
        classes, side = self.source.num_classes, self.source.input_shape[-1]
        self.student = place(
            build_model(settings.model, classes, sigmoid,
                        settings.weights if load_weights else "",
                        report=lambda text: self._emit(ev.Message("info", text)),
                        image_size=side) if model is None else model,
            self.device, self.dtype)
        self.teacher = place(build_model(settings.model, classes, sigmoid, image_size=side)
                             if model is None else copy.deepcopy(self.student),
                             self.device, self.dtype)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.eval().requires_grad_(False)
        self.control.attach_snapshots(self.snapshot)  # both networks exist from here
        # The network the optimizer steps through: the student itself, or its DDP wrapper,
        # which averages gradients over the ranks (and keeps their weights identical, so
        # every rank's teacher snapshot is the same without extra communication).
        self.model = self._parallel(self.student)
        self.teacher_forward: nn.Module = self.teacher
        if settings.compile:
            check_compile(self.device)
            # Compiled once here; the first steps of each phase pay the compilation.
            self.model = torch.compile(self.model)  # type: ignore[assignment]
            self.teacher_forward = torch.compile(self.teacher)  # type: ignore[assignment]
        self.optimizer = torch.optim.SGD(
            self.student.parameters(),
            lr=settings.lr,
            momentum=MOMENTUM,
            weight_decay=WEIGHT_DECAY,
            # One kernel over all parameters: on the CPU, PyTorch's default loops over them
            # one by one, which costs a small network a large share of its step (numbers
            # in docs/speed.md). Same update rule and state, so checkpoints interchange
            # with unfused runs.
            fused=self.device.type in FUSED_SGD_DEVICES,
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
        self._rank_data: list[dict[str, Any]] | None = None
        self.generation = self.phase_index = self.step = self.global_step = 0
        self.best_metrics = None
        self.history = []
        self.reference: dict[str, float] = {}
        self.resumed_from = resumed_from
        self._window = _Window(self.device)
        self._requests: RequestPoller | None = None  # the run folder's steering requests
        self._system: SystemSampler | None = None
        self._position_at = time.perf_counter()
        self._elapsed_before = 0.0
        self._started = time.perf_counter()

    @property
    def run_dir(self) -> Path:
        """The run's folder (`Path()` for a run without one)."""
        return self._folder if isinstance(self._folder, Path) else self._folder.path

    # ------------------------------------------------------------------ helpers
    def _parallel(self, student: nn.Module) -> nn.Module:
        if not self.dist.enabled:
            if self.settings.sync_bn:
                self._emit(ev.Message("warning", "sync_bn has no effect in a single process."))
            return student
        if self.settings.sync_bn:
            if self.device.type != "cuda":
                raise SettingsError("sync_bn = true needs CUDA processes; SyncBatchNorm does "
                                    "not run on the CPU. Set sync_bn = false.")
            student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
            self.student = student
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(student, device_ids=ids)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The run's autocast (none in fp32), for code that calls the networks directly."""
        return placement.autocast(self.device, self.dtype)

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
        with self.control.training():  # weight snapshots are taken between steps
            return self._train()

    def _train(self) -> ev.RunEnded:
        self._started = time.perf_counter()
        status, error = "finished", None
        if self.dist.is_main and self.checkpointer is not None:  # a run with its folder
            self._requests = RequestPoller(
                self.run_dir, report=lambda text: self._emit(ev.Message("warning", text)))
            self._system = SystemSampler(self.device)
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
        if self.control.failure is not None:  # a record failed (full disk): stopped, saved
            status, error = "failed", "; ".join(filter(None, [self.control.failure, error]))
        ended = ev.RunEnded(status, self.global_step, self.elapsed_s, self.best_metrics, error)
        self._emit(ended)
        return ended

    def _report(self, exc: Exception) -> str:
        if isinstance(exc, (CheckpointError, Diverged)):  # known: one line; the rest, run.log
            self._emit(ev.Message(ev.DETAIL, traceback.format_exc()))
            return str(exc)
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
            precision_reason=self.precision_reason,
            parameters=count_parameters(self.student),
            total_steps=self.total_steps,
            global_step=self.global_step,
            reference=self.reference,
            resumed_from=self.resumed_from,
            label_sets=str(getattr(self.source, "sets_from", "")),
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
            self._position_at = time.perf_counter()
            while self.step < phase.steps:
                self._between_steps()
                self._train_step(phase, self.source.train_batch())
                self.step += 1
                self.global_step += 1
                if self.step % self.settings.log_every == 0 or self.step == phase.steps:
                    self._flush_window(phase)
                elif time.perf_counter() - self._position_at >= POSITION_INTERVAL_S:
                    self._emit_position()
            self.phase_index += 1
            self.step = 0
        self.evaluate()
        self.generation += 1
        self.phase_index = 0
        self._save("generation")

    def _between_steps(self) -> None:
        self.control.serve_snapshots()  # no parameter is half-updated here
        if self.dist.enabled:
            self._between_steps_distributed()
            return
        control = self.control
        self._take_requests()
        if control.paused or control.stop_requested:
            self._emit_position()  # a pause or a stop shows the exact step it happened at
        if control.paused and not control.stop_requested:
            self._emit(ev.Paused(self.global_step))
            paused_at = time.perf_counter()
            while control.wait_while_paused(PAUSE_POLL_S):
                control.serve_snapshots()
                self._take_requests()  # the run folder may ask for a resume, stop or save
                if control.take_save_request():
                    self._save("request")
            self._resumed_after(paused_at)
        if control.stop_requested:
            raise StopRun
        if control.take_save_request():
            self._save("request")

    def _take_requests(self) -> None:
        """Apply the run folder's steering requests to the control, acknowledging each."""
        if self._requests is None:
            return
        for request in self._requests.poll():
            {"pause": self.control.pause, "resume": self.control.resume,
             "stop": self.control.stop, "save": self.control.save_now}[request]()
            self._emit(ev.Steered(request, self.global_step))

    def _resumed_after(self, paused_at: float) -> None:
        # Time spent paused is neither training time nor part of images/s.
        self._started += time.perf_counter() - paused_at
        self._window.started += time.perf_counter() - paused_at
        self._emit(ev.Resumed(self.global_step))

    def _between_steps_distributed(self) -> None:
        """Ranks agree on stop, save-now and pause at every log interval, so that all of
        them stop, save and pause at the same step; a lone rank leaving would hang the
        others. Only rank 0 reads the run folder's requests."""
        if self.global_step % self.settings.log_every:
            return
        self._take_requests()
        stop, save, pause = self._agree()
        if pause and not stop:
            self._emit_position()
            self._emit(ev.Paused(self.global_step))
            paused_at = time.perf_counter()
            while pause and not stop:
                # Every rank waits here and asks again together: a collective every
                # PAUSE_POLL_S keeps the ranks in step (and within the group's timeout).
                self.control.wait_while_paused(PAUSE_POLL_S)
                self.control.serve_snapshots()
                self._take_requests()
                stop, save, pause = self._agree()
                if save:
                    self._save("request")
                    save = False
            self._resumed_after(paused_at)
        if stop:
            self._emit_position()
            raise StopRun
        if save:
            self._save("request")

    def _agree(self) -> tuple[bool, bool, bool]:
        """(stop, save, pause) as any rank asks for them (one collective)."""
        control = self.control
        local = [control.stop_requested, control.take_save_request(), control.paused]
        stop, save, pause = distributed.any_rank(local, self.dist, self.device)
        return stop, save, pause

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

    def optimize(self, loss: torch.Tensor) -> None:
        """One optimizer step of the student on `loss` (scaled when the run is fp16)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _input(self, batch: Batch) -> torch.Tensor:
        return model_input(batch.images, self.device, self.dtype)

    def check_memory(self) -> None:
        """Take one training step's memory before anything is written: a forward and a
        backward pass of the student on a blank batch of the run's size.

        The weights, their running statistics, the gradients and the optimizer end exactly
        as they were, and no random number is drawn.

        Raises:
            SettingsError: the batch does not fit on the device; the message names
                batch_size and the image side, the settings that decide.
        """
        buffers = [(b, b.clone()) for b in self.student.buffers()]
        images = torch.zeros((self.settings.batch_size, *self.source.input_shape),
                             device=self.device)
        try:
            self.student.train()
            with self.autocast():
                logits = self.student(model_input(images, self.device, self.dtype))
            logits.float().sum().backward()
        except RuntimeError as exc:  # torch.OutOfMemoryError is one
            if not _out_of_memory(exc):
                raise
            side = self.source.input_shape[-1]
            raise SettingsError(
                f"batch_size = {self.settings.batch_size} does not fit in the memory of "
                f"{self.device} at {side}x{side} pixels ({self.settings.model}); lower "
                "batch_size or image_size."
            ) from None
        finally:
            del images
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def interactive_step(self, batch: Batch) -> torch.Tensor:
        """One optimizer step of the student on the ground-truth single labels."""
        self.model.train()
        with self.autocast():
            logits = self.model(self._input(batch))
        if self.settings.schema in LARGE_LOSS_SCHEMAS:
            loss = self._large_loss_step(logits, batch)
        else:
            loss = ground_truth_loss(self.settings.schema, logits, batch.labels,
                                     self.settings.em_alpha)
        self.optimize(loss)
        return loss.detach()

    def rejection_rate(self) -> float:
        """LL's rejection rate now: it grows by `ll_delta` per generation, from 0 in the
        first; the generation is part of the saved position, so a resume continues it."""
        return rejection_rate(self.settings.ll_delta, self.generation)

    def _large_loss_step(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """LL-R / LL-Ct's loss on this rank's batch; counts what it rejected (on the device)."""
        correct = self.settings.schema == "LL-Ct"
        loss, taken = large_loss(logits, batch.labels, self.rejection_rate(), correct)
        w = self._window
        w.rejects = True
        w.rejected += taken.sum()
        targets = F.one_hot(batch.labels, logits.shape[1]).bool()
        if correct:
            targets |= taken
        self._count_targets(targets, batch)
        if batch.real is not None:
            w.rejected_true += (taken & batch.real).sum()
        return loss

    def _count_targets(self, targets: torch.Tensor, batch: Batch) -> None:
        """Add a step's positive targets to the window: density, the single label kept,
        and (where the batch knows its true sets) how many are true objects."""
        w = self._window
        w.labels += targets.sum()
        rows = torch.arange(len(batch.labels), device=targets.device)
        w.contains += targets[rows, batch.labels].sum()
        w.pseudo_images += len(batch.labels)
        if batch.real is not None:
            w.known = True
            real = batch.real.to(targets.device)
            # Images with an empty set (no label known) say nothing about precision.
            known = targets & real.any(dim=1, keepdim=True)
            w.hits += (targets & real).sum()
            w.positives += known.sum()
            w.truths += real.sum()

    def imitation_step(self, batch: Batch) -> torch.Tensor:
        """One optimizer step of the student on the frozen teacher's pseudo-labels."""
        x = self._input(batch)
        labels = batch.labels if self.settings.gt_or else None
        with torch.inference_mode(), self.autocast():
            targets = pseudo_labels(self.teacher_forward(x), self.settings.rho, labels)
        # An inference-mode tensor cannot be saved for backward; a clone outside it can.
        targets = targets.clone()
        self.model.train()
        with self.autocast():
            logits = self.model(x)
        loss = multi_label_bce(logits, targets)
        self.optimize(loss)
        self._count_targets(targets, batch)
        return loss.detach()

    def _emit_position(self) -> None:
        """Say where the run is: plain counters, nothing read from the device."""
        self._position_at = time.perf_counter()
        phase = self.phase
        self._emit(ev.Position(self.generation + 1, phase.name, self.step, phase.steps,
                               self.global_step, self.total_steps, self.elapsed_s))

    def _flush_window(self, phase: Phase) -> None:
        """Read the device-side sums once per record: the only host sync of training."""
        w = self._window
        if not w.steps:
            return
        self._position_at = time.perf_counter()
        loss = float(w.loss) / w.steps
        self._check_finite(loss, phase)
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
                images_per_s=w.images * self.dist.world_size / seconds,
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
                    **self._quality(),
                )
            )
        if self._system is not None:
            self._emit(self._system.sample(self.global_step))
        w.reset()

    def _check_finite(self, loss: float, phase: Phase) -> None:
        """Fail a run whose loss is NaN or infinite before it evaluates or saves again:
        read where the window's loss reaches the host anyway, so no step pays for it."""
        bad = not math.isfinite(loss)
        if self.dist.enabled:  # every rank leaves at the same record, none waits alone
            bad = distributed.any_rank([bad], self.dist, self.device)[0]
        if bad:
            raise Diverged(
                f"training diverged: the loss is {loss} at step {self.global_step} "
                f"(generation {self.generation + 1}, {phase.name}); the run ends without "
                "saving these weights, and its earlier saves stay. Resume from the last "
                "one with a lower lr, or check the weights the run started from."
            )

    def _quality(self) -> dict[str, float | None]:
        """The window's pseudo-label quality fields (None where unknown or not LL)."""
        w = self._window
        quality: dict[str, float | None] = {}
        if w.known:
            positives, truths = float(w.positives), float(w.truths)
            quality["precision"] = float(w.hits) / positives if positives else None
            quality["recall"] = float(w.hits) / truths if truths else None
        if w.rejects:
            rejected = float(w.rejected)
            quality["rejected_per_image"] = rejected / w.pseudo_images
            if w.known:
                quality["rejected_true"] = float(w.rejected_true) / rejected if rejected else None
        return quality

    # ------------------------------------------------------------------ evaluation
    def _rhos(self) -> list[float]:
        rho = self.settings.rho
        return [rho] + [r for r in SWEEP_RHOS if abs(r - rho) > 1e-9]

    def predict_logits(
        self, model: nn.Module | None = None, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[Batch, torch.Tensor]]:
        """Yield (batch, logits) over the validation set with `model` (the student).

        With `world_size` > 1, only the batches of `rank` (batch i goes to i % world_size).
        """
        model = model or self.student
        model.eval()
        with torch.inference_mode(), self.autocast():
            for batch in self.source.val_batches(EVAL_BATCH, rank, world_size):
                yield batch, model(self._input(batch)).float()

    def evaluate(self) -> dict[str, float]:
        """Evaluate the student, update the schedule and the best, emit `Evaluated`."""
        started = time.perf_counter()
        acc = EvalAccumulator(
            self.source.num_classes, self._rhos(), uses_sigmoid(self.settings.schema),
            self.device,
        )
        scores = ScoreKeeper(uses_sigmoid(self.settings.schema))
        images = 0
        rank, world = self.dist.rank, self.dist.world_size
        shard = self.predict_logits(rank=rank, world_size=world)
        for k, (batch, logits) in enumerate(shard):
            assert batch.real is not None
            acc.update(logits, batch.labels, batch.real, index=rank + k * world)
            scores.update(logits, batch.real, index=rank + k * world)
            images += len(batch.labels)
        # Every rank fills the rows of its batches; summing the tables over the ranks then
        # gives exactly the table (and the metrics) of a single-process evaluation.
        table = distributed.all_sum(acc.table(math.ceil(self._val_size() / EVAL_BATCH)),
                                    self.dist)
        results = acc.compute(table)
        metrics = dict(results[0])
        # mAP needs every score, not sums: every rank gets every rank's batches and
        # computes the same number (the plateau schedule may step on it on every rank).
        metrics.update(ScoreKeeper.compute(distributed.gather_objects(scores.parts(),
                                                                      self.dist)))
        # Every metric at every swept threshold: schemas compare at their best rho too.
        # mAP reads no threshold, so it is in `metrics` only.
        sweep = {str(r["rho"]): {k: r[k] for k in METRIC_NAMES} for r in results}
        key = self.settings.monitor
        value = metrics[key]
        best = self.best_metrics is None or value > self.best_metrics.get(key, -math.inf)
        if best:
            self.best_metrics = dict(metrics)
            self.best_metrics["generation"] = self.generation + 1
        if self.scheduler is not None:
            self.scheduler.step(value)
        record = {"generation": self.generation + 1, "global_step": self.global_step,
                  **metrics, "sweep": sweep}
        self.history.append(record)
        seconds = max(time.perf_counter() - started, 1e-9)
        self._emit(ev.Evaluated(self.generation + 1, self.global_step, metrics, best,
                                images * world / seconds, sweep))
        return metrics

    def _reference_f1s(self) -> dict[str, float]:
        """The validation set's reference F1s: predict every class; the single label."""
        labels, real = self.source.val_targets()
        acc = EvalAccumulator(self.source.num_classes, [0.5], False, self.device)
        acc.update(torch.zeros(real.shape, device=real.device), labels, real)
        result = acc.compute()[0]
        return {"ref_f1_all": result["ref_f1_all"], "ref_f1_label": result["ref_f1_label"]}

    def _val_size(self) -> int:
        return len(self.source.val_targets()[0])

    # ------------------------------------------------------------------ state
    def _save(self, reason: str) -> None:
        if self.dist.enabled:
            # Every rank's data stream goes into rank 0's checkpoint (a collective: all
            # ranks reach this point at the same step).
            self._rank_data = distributed.gather_objects(self.source.state_dict(), self.dist)
        if self.checkpointer is not None:
            with self.control.saving():  # a second Ctrl-C now waits for the file
                saved = self.checkpointer.save(self, reason)
            self._emit(saved)

    def _data_state(self) -> dict[str, Any]:
        if not self.dist.enabled:
            return self.source.state_dict()
        ranks = self._rank_data or [self.source.state_dict()]
        return {"world_size": self.dist.world_size, "ranks": ranks}

    def _load_data_state(self, data: dict[str, Any]) -> None:
        saved_world = int(data.get("world_size", 1))
        if saved_world != self.dist.world_size:
            raise SettingsError(
                f"this checkpoint was written by a run of {saved_world} process(es) and "
                f"cannot continue its data streams exactly with {self.dist.world_size}; "
                f"resume with the same number of processes (torchrun --nproc-per-node x "
                f"--nnodes = {saved_world})."
            )
        self.source.load_state_dict(data["ranks"][self.dist.rank] if "ranks" in data else data)

    def snapshot(self) -> Snapshot:
        """A CPU copy of both networks' weights and the step they were taken at. Called
        on the trainer's thread between steps (see `Control.request_snapshot`), or while
        it does not train."""
        def copy(module: nn.Module) -> dict[str, Any]:
            return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}

        return Snapshot(copy(self.student), copy(self.teacher), self.global_step)

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
            "data": self._data_state(),
            # The label names, so that predict / eval / the inspector name classes without
            # reading the data again (a folder's classes are its sub-folders).
            "class_names": list(getattr(self.source, "class_names", [])),
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
        # The saved groups carry the saving machine's kernel choice (`fused`); this one's
        # applies: a CPU save resumes fused on a GPU, an older unfused save fused here.
        for group in self.optimizer.param_groups:
            group["fused"], group["foreach"] = self.device.type in FUSED_SGD_DEVICES, None
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when saved without fp16: a new fp16 scaler starts fresh
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
        self._load_data_state(state["data"])
        rng = state["rng"]
        _set_python_rng_state(rng["python"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


def _out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation failure: CUDA's, or the CPU allocator's."""
    return isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in str(exc)


def _python_rng_state() -> list[Any]:
    """Python's RNG state as plain lists (loadable with weights_only=True)."""
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_python_rng_state(state: list[Any]) -> None:
    version, internal, gauss = state
    random.setstate((version, tuple(internal), gauss))
