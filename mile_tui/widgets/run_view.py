"""What the run screen shows, folded from the trainer's events (no widgets here).

The run screen applies a batch of events to a `RunView` and then redraws only the
panels the batch touched, so the redraw rate is the drain rate, not the step rate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from mile_engine import events as ev
from mile_engine.runstore.records import describe

# Progress records kept for the loss chart and the pseudo-label panel: wider than any
# terminal, so the chart always has enough columns.
HISTORY = 400

PHASE, LOSS, PSEUDO, EVAL, CHECKPOINTS, LOG, SYSTEM = (
    "phase", "loss", "pseudo", "eval", "checkpoints", "log", "system"
)
ALL_PANELS = frozenset({PHASE, LOSS, PSEUDO, EVAL, CHECKPOINTS, LOG, SYSTEM})


@dataclass
class LossPoint:
    """One progress record for the loss chart."""

    global_step: int
    phase: str
    loss: float


@dataclass
class EvalRow:
    """One generation's evaluation."""

    generation: int
    metrics: dict[str, float]
    best: bool
    global_step: int = 0


@dataclass
class CheckpointRow:
    """One save of the run, as the checkpoint panel lists it."""

    path: str
    generation: int
    global_step: int
    reason: str
    best: bool = False

    @property
    def name(self) -> str:
        """The file name, short enough for the panel."""
        return Path(self.path).name


@dataclass
class RunView:
    """The run as the screen shows it."""

    status: str = "idle"
    run_dir: str = ""
    schema: str = ""
    device: str = ""
    generation: int = 0
    generations: int = 0
    phase: str = ""
    step: int = 0
    steps: int = 0
    global_step: int = 0
    total_steps: int = 0
    images_per_s: float = 0.0
    elapsed_s: float = 0.0
    eta_s: float | None = None
    lr: float | None = None
    error: str | None = None
    reference: dict[str, float] = field(default_factory=dict)
    label_sets: str = ""
    """Where the ReaL sets come from when the data says (folder data), else ""."""
    monitor: str = "real_f1"
    """The metric that marks the run's best evaluation (its `monitor` setting)."""
    losses: deque[LossPoint] = field(default_factory=lambda: deque(maxlen=HISTORY))
    pseudo: deque[ev.PseudoLabelStats] = field(default_factory=lambda: deque(maxlen=HISTORY))
    evals: list[EvalRow] = field(default_factory=list)
    checkpoints: list[CheckpointRow] = field(default_factory=list)
    preparing: tuple[str, int, int] | None = None
    """(task, done, total) of the data work before the run starts (a download, a scan)."""
    log: list[tuple[str, str]] = field(default_factory=list)
    """Lines (level, text) not yet written to the log panel; the panel takes them."""
    replayed: int = 0
    """How many of the first `log` lines come from a replayed history: the log panel
    gives them no clock time (it would be the time of the replay, not of the event)."""
    system: ev.SystemStats | None = None
    """The newest load figures of the training process (None before the first)."""
    run_number: int = 0
    """Counts the runs this view has shown: a panel that keeps lines of its own (the
    log) clears them when it changes."""
    _rate_origin: tuple[int, float] | None = None
    _best_pending: bool = False

    def reset(self, status: str = "idle") -> None:
        """Forget the previous run (a new one starts, or another one is opened); the
        log panel clears its lines too. Notes already queued for the new run stay."""
        fresh = RunView(status=status, run_number=self.run_number + 1)
        fresh.log = self.log
        self.__dict__.update(fresh.__dict__)

    def take_over(self, other: RunView) -> None:
        """Show `other` (a run's history folded elsewhere, e.g. in a worker thread) as a
        new run: its state replaces this one's, its log lines follow the queued ones."""
        log = other.log + self.log  # the history first, then what was queued meanwhile
        run_number = self.run_number + 1
        self.__dict__.update(other.__dict__)
        self.log, self.run_number = log, run_number

    def load_saves(self, run_dir: Path) -> set[str]:
        """List the saves already in a run folder (a resumed run's earlier ones)."""
        from mile_engine.runstore.manifest import best_record, read_records

        records = read_records(run_dir)
        best = best_record(records)
        self.checkpoints = [
            CheckpointRow(str(run_dir / r.file), r.generation, r.global_step, r.reason,
                          best is not None and r.file == best.file)
            for r in records
        ]
        return {CHECKPOINTS}

    def note(self, level: str, text: str) -> None:
        """Add a line of the console's own to the log panel."""
        self.log.append((level, text))

    def apply(self, event: ev.Event) -> set[str]:
        """Fold one event in; return the panels it changed."""
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        return handler(event) if handler else set()

    def apply_all(self, events: list[ev.Event]) -> set[str]:
        """Fold a batch of events in; return the panels they changed."""
        changed: set[str] = set()
        for event in events:
            changed |= self.apply(event)
        return changed

    # ------------------------------------------------------------------ handlers
    def _on_DataProgress(self, e: ev.DataProgress) -> set[str]:
        self.preparing = (e.task, e.done, e.total)
        if e.done >= e.total:  # one log line per finished task, not one per update
            self.note("info", f"{e.task}: {e.done:,}/{e.total:,}")
            return {PHASE, LOG}
        return {PHASE}

    def _on_RunStarted(self, e: ev.RunStarted) -> set[str]:
        self.status = "running"
        self.preparing = None
        self.run_dir = e.run_dir
        self.schema = str(e.settings.get("schema", ""))
        self.device = e.device
        self.global_step = e.global_step
        self.total_steps = e.total_steps
        self.generations = int(e.settings.get("epoch_num", 0))
        self.reference = dict(e.reference)
        self.label_sets = e.label_sets
        self.monitor = str(e.settings.get("monitor", "real_f1"))
        self._rate_origin = None
        if e.resumed_from:
            self._rewind(e.global_step)
        self.note("info", describe(e) or "")
        return {PHASE, EVAL, LOG}

    def _rewind(self, global_step: int) -> None:
        """A run resumed from the save at `global_step` does again what came after it:
        its history past that step gives way to the new records (no generation twice)."""
        self.evals = [row for row in self.evals if row.global_step <= global_step]
        if self.evals and not any(row.best for row in self.evals):
            # The best was among the records undone: the best of those left is.
            key = self.monitor
            top = max(self.evals, key=lambda row: row.metrics.get(key, float("-inf")))
            top.best = True
        kept_losses = [p for p in self.losses if p.global_step <= global_step]
        self.losses.clear()
        self.losses.extend(kept_losses)
        kept_pseudo = [p for p in self.pseudo if p.global_step <= global_step]
        self.pseudo.clear()
        self.pseudo.extend(kept_pseudo)

    def _on_PhaseStarted(self, e: ev.PhaseStarted) -> set[str]:
        self.generation, self.generations = e.generation, e.generations
        self.phase, self.step, self.steps = e.phase, 0, e.steps
        return {PHASE}

    def _on_StepLogged(self, e: ev.StepLogged) -> set[str]:
        self.generation, self.phase = e.generation, e.phase
        self.step, self.steps = e.step, e.steps
        self.global_step, self.total_steps = e.global_step, e.total_steps
        self.images_per_s, self.elapsed_s, self.lr = e.images_per_s, e.elapsed_s, e.lr
        # ETA from the pace since the first record of this session, which includes
        # evaluation time, so it does not promise too much.
        if self._rate_origin is None:
            self._rate_origin = (e.global_step, e.elapsed_s)
        step0, time0 = self._rate_origin
        remaining = e.total_steps - e.global_step
        if e.global_step > step0 and e.elapsed_s > time0:
            self.eta_s = remaining * (e.elapsed_s - time0) / (e.global_step - step0)
        elif e.global_step > 0:
            self.eta_s = remaining * e.elapsed_s / e.global_step
        self.losses.append(LossPoint(e.global_step, e.phase, e.loss))
        return {PHASE, LOSS}

    def _on_Position(self, e: ev.Position) -> set[str]:
        self.generation, self.phase = e.generation, e.phase
        self.step, self.steps = e.step, e.steps
        self.global_step, self.total_steps = e.global_step, e.total_steps
        self.elapsed_s = e.elapsed_s
        return {PHASE}

    def _on_PseudoLabelStats(self, e: ev.PseudoLabelStats) -> set[str]:
        self.pseudo.append(e)
        return {PSEUDO}

    def _on_Evaluated(self, e: ev.Evaluated) -> set[str]:
        if e.best:
            for row in self.evals:
                row.best = False
        self.evals.append(EvalRow(e.generation, dict(e.metrics), e.best, e.global_step))
        # The generation's checkpoint is written just after its evaluation.
        self._best_pending = e.best
        return {EVAL}

    def _on_CheckpointSaved(self, e: ev.CheckpointSaved) -> set[str]:
        best = self._best_pending and e.reason == "generation"
        if best:
            for row in self.checkpoints:
                row.best = False
            self._best_pending = False
        self.checkpoints.append(CheckpointRow(e.path, e.generation, e.global_step, e.reason, best))
        if e.kept:
            # Retention removed older files: list only what is still on disk.
            kept = {Path(p).name for p in e.kept} | {Path(e.path).name}
            self.checkpoints = [c for c in self.checkpoints if c.name in kept]
        self.note("info", describe(e) or "")
        return {CHECKPOINTS, LOG}

    def _on_Paused(self, e: ev.Paused) -> set[str]:
        self.status = "paused"
        self.note("info", describe(e) or "")
        return {PHASE, LOG}

    def _on_Resumed(self, e: ev.Resumed) -> set[str]:
        self.status = "running"
        self.note("info", describe(e) or "")
        return {PHASE, LOG}

    def _on_Steered(self, e: ev.Steered) -> set[str]:
        # The trainer's answer to a request from the console or `mile-tui runs`.
        self.note("info", describe(e) or f"steered: {e.request} at step {e.global_step}")
        return {LOG}

    def _on_SystemStats(self, e: ev.SystemStats) -> set[str]:
        self.system = e
        return {SYSTEM}

    def _on_Message(self, e: ev.Message) -> set[str]:
        if e.level == ev.DETAIL:  # tracebacks behind a one-line error: run.log has them
            return set()
        self.note(e.level, e.text.rstrip())
        return {LOG}

    def _on_RunEnded(self, e: ev.RunEnded) -> set[str]:
        self.status = e.status
        self.preparing = None
        self.global_step = e.global_step
        self.elapsed_s = max(self.elapsed_s, e.elapsed_s)
        self.error = e.error
        if e.status == "finished":
            self.eta_s = 0.0
        level = {"finished": "info", "stopped": "warning"}.get(e.status, "error")
        self.note(level, describe(e) or "")
        return {PHASE, LOG}


def format_duration(seconds: float | None) -> str:
    """Seconds as h:mm:ss, or a dash when unknown."""
    if seconds is None:
        return "–"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
