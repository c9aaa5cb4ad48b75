"""The headless run: Rich progress on a terminal, plain lines otherwise, files on disk."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mile_engine import events as ev
from mile_engine.control import Control
from mile_engine.runstore.records import PlainLog, describe

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


def resume_command(run_dir: str) -> str:
    """The exact command that continues the run in `run_dir` from its newest good save."""
    return f"mile-tui run --headless --resume {shlex.quote(run_dir)}"


class SaveTracker:
    """A sink that remembers the run folder, its reference F1s and its newest save."""

    def __init__(self) -> None:
        self.run_dir: str | None = None
        self.newest: str | None = None
        self.reference: dict[str, float] = {}

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.RunStarted):
            self.run_dir = event.run_dir
            self.reference = dict(event.reference)
        elif isinstance(event, ev.CheckpointSaved):
            self.newest = event.path

    def hint(self) -> str | None:
        """Where the newest save is and how to go on, for a run that did not finish."""
        if self.run_dir is None:
            return None
        if self.newest is None:
            return f"no checkpoint was written in {self.run_dir}."
        return f"newest save: {self.newest}\nresume with: {resume_command(self.run_dir)}"


def judge_best(best_f1: float, reference: dict[str, float]) -> tuple[bool, str]:
    """The best ReaL F1 against the two reference F1s, in words; True when it is below
    both (the model does no better than a rule that needs no training)."""
    every, single = reference.get("ref_f1_all"), reference.get("ref_f1_label")
    if every is None or single is None:
        return False, ""
    refs = f"every class {every:.3f}, single label {single:.3f}"
    if best_f1 < every and best_f1 < single:
        return True, (f"best ReaL F1 {best_f1:.4f} is below both reference F1s ({refs}): "
                      "no better than predicting every class or the single label alone; "
                      "train longer (epoch_num) before judging the schema")
    if best_f1 >= every and best_f1 >= single:
        return False, f"best ReaL F1 {best_f1:.4f} is above both reference F1s ({refs})"
    above, below = (("every class", "single label") if best_f1 >= every
                    else ("single label", "every class"))
    return False, (f"best ReaL F1 {best_f1:.4f} beats the {above} reference but not the "
                   f"{below} one ({refs})")


def closing_lines(tracker: SaveTracker, ended: ev.RunEnded,
                  compare_args: str = "") -> list[tuple[str, str]]:
    """What a headless run says after its last line: its best against the reference
    F1s, its folder and the commands that come next, as (kind, text) pairs; kind is
    "warning", "note" or "command". Nothing for a failed run (its error is said) or one
    that never started."""
    if ended.status == "failed" or tracker.run_dir is None:
        return []
    lines: list[tuple[str, str]] = []
    if ended.best and "real_f1" in ended.best:
        below, text = judge_best(ended.best["real_f1"], tracker.reference)
        if text:
            lines.append(("warning" if below else "note", text))
    run = shlex.quote(tracker.run_dir)
    lines.append(("note", f"run folder: {tracker.run_dir}"))
    if tracker.newest is not None:
        lines.append(("note", "next:"))
        lines.append(("command", f"mile-tui eval {run} --rho 0.1,0.25,0.5"
                                 "   # scores at several thresholds"))
        lines.append(("command", f"mile-tui inspect {run}   # predictions, image by image"))
    compare = f"mile-tui compare {compare_args}".rstrip()
    lines.append(("command", f"{compare}   # softmax, sigmoid and MILe, same steps"))
    return lines


class PlainRenderer(PlainLog):
    """Timestamped plain lines (a log file, a pipe), and the closing lines at the end."""

    def __init__(self, stream: IO[str], compare_args: str = "") -> None:
        super().__init__(stream)
        self.tracker = SaveTracker()
        self.compare_args = compare_args

    def __call__(self, event: ev.Event) -> None:
        self.tracker(event)
        super().__call__(event)
        if isinstance(event, ev.RunEnded):
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            text = "".join(f"{stamp} {'warning: ' if kind == 'warning' else ''}{line}\n"
                           for kind, line in closing_lines(self.tracker, event,
                                                           self.compare_args))
            self.stream.write(text)
            self.stream.flush()


class RichRenderer:
    """A live progress display plus one printed row per evaluation."""

    def __init__(self, console: Console, compare_args: str = "") -> None:
        self.console = console
        self.tracker = SaveTracker()
        self.compare_args = compare_args
        self.progress = Progress(
            TextColumn("[bold]{task.fields[label]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.total: TaskID | None = None
        self.phase: TaskID | None = None
        self._header_done = False
        self._data_tasks: dict[str, TaskID] = {}

    def __call__(self, event: ev.Event) -> None:
        self.tracker(event)
        p = self.progress
        if isinstance(event, ev.DataProgress):
            p.start()
            if event.task not in self._data_tasks:
                self._data_tasks[event.task] = p.add_task(
                    event.task, total=event.total, label=event.task, loss="-", speed=""
                )
            p.update(self._data_tasks[event.task], completed=event.done, total=event.total)
        elif isinstance(event, ev.RunStarted):
            self.console.print(describe(event))
            p.start()
            self.total = p.add_task("run", total=event.total_steps, completed=event.global_step,
                                    label="run", loss="-", speed="")
        elif isinstance(event, ev.PhaseStarted):
            if self.phase is not None:
                p.remove_task(self.phase)
            label = f"gen {event.generation}/{event.generations} {event.phase}"
            self.phase = p.add_task(label, total=event.steps, label=label, loss="-", speed="")
        elif isinstance(event, ev.StepLogged):
            loss, speed = f"{event.loss:.4f}", f"{event.images_per_s:,.0f} img/s"
            if self.phase is not None:
                p.update(self.phase, completed=event.step, loss=loss, speed=speed)
            if self.total is not None:
                p.update(self.total, completed=event.global_step, loss=loss, speed=speed)
        elif isinstance(event, ev.Position):
            if self.phase is not None:
                p.update(self.phase, completed=event.step)
            if self.total is not None:
                p.update(self.total, completed=event.global_step)
        elif isinstance(event, ev.Evaluated):
            self._print_eval(event)
        elif isinstance(event, ev.RunEnded):
            p.stop()
            style = {"finished": "green", "stopped": "yellow"}.get(event.status, "red")
            self.console.print(f"[{style}]{describe(event)}[/]", highlight=False)
            self._print_closing(event)
        elif isinstance(event, ev.Message) and event.level != ev.DETAIL:  # run.log's
            style = "red" if event.level == "error" else "yellow"
            self.console.print(f"[{style}]{event.level}:[/] {event.text.rstrip()}",
                               highlight=False, markup=True)
        elif isinstance(event, (ev.CheckpointSaved, ev.Paused, ev.Resumed, ev.Steered)):
            self.console.print(describe(event), highlight=False)

    def _print_closing(self, event: ev.RunEnded) -> None:
        # soft_wrap: a long path stays one line to copy, whatever the terminal's width.
        for kind, line in closing_lines(self.tracker, event, self.compare_args):
            if kind == "warning":
                self.console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)
            elif kind == "command":
                command, _, why = line.partition("   # ")
                # The comment only where it fits: a command wrapped by the terminal
                # still copies whole, a comment wrapped under it only clutters.
                fits = why and len(command) + len(why) + 6 <= self.console.width
                self.console.print(f"  [bold]{escape(command)}[/]"
                                   + (f"  [dim]# {escape(why)}[/]" if fits else ""),
                                   soft_wrap=True, highlight=False)
            else:
                self.console.print(escape(line), soft_wrap=True, highlight=False)

    def _print_eval(self, event: ev.Evaluated) -> None:
        if not self._header_done:
            self.console.print(
                "[bold] gen     mAP   top-1  ReaL acc  ReaL F1  precision  recall  "
                "coverage[/]"
            )
            self._header_done = True
        m = event.metrics
        mark = " [green]best[/]" if event.best else ""
        self.console.print(
            f"{event.generation:4d}  {m.get('map', float('nan')):6.4f}  "
            f"{m['top1']:6.4f}  {m['real_accuracy']:8.4f}  "
            f"{m['real_f1']:7.4f}  {m['real_precision']:9.4f}  {m['real_recall']:6.4f}  "
            f"{m['coverage']:8.2f}{mark}",
            highlight=False,
        )


def console_sink(stream: IO[str] | None = None, compare_args: str = "") -> ev.Sink:
    """Rich progress when `stream` is a terminal, plain timestamped lines otherwise;
    both end with the closing lines (`compare_args`: the settings options that the
    suggested `mile-tui compare` repeats)."""
    stream = stream or sys.stdout
    if stream.isatty():
        return RichRenderer(Console(file=stream), compare_args)
    return PlainRenderer(stream, compare_args)


def exit_code_for(exc: BaseException) -> int:
    """The exit code of a command that ends on `exc` (docs/checkpoints.md, "Exit codes"):
    1 when it failed while doing the work (a write, the disk), 2 when what was asked for
    cannot be used (a bad setting; a missing, damaged or unsafe checkpoint; a busy run)."""
    from mile_engine.oserrors import NotRegularFileError
    from mile_engine.runstore.files import CheckpointWriteError

    if isinstance(exc, NotRegularFileError):  # a run's file replaced by a pipe, a device
        return EXIT_USAGE
    return EXIT_FAILED if isinstance(exc, (CheckpointWriteError, OSError)) else EXIT_USAGE


class StopSignals:
    """Turns SIGINT and SIGTERM into a clean stop between steps; a second SIGINT aborts.

    A second SIGINT that lands while a checkpoint is being written waits for the write
    (an exception inside `torch.save` would turn into a failed run and lose that save);
    a third one then leaves at once: the file being written is a temporary one, so every
    completed checkpoint stays intact.
    """

    def __init__(self, control: Control, stream: IO[str] | None = None) -> None:
        self.control = control
        self.received: int | None = None
        self.stream = stream or sys.stderr
        self._extra_interrupts = 0
        self._previous: dict[int, Callable[..., object] | int | None] = {}

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            self._interrupt_again()
            return
        self.received = signum
        self.control.stop()

    def _interrupt_again(self) -> None:
        self._extra_interrupts += 1
        if not self.control.saving_now:
            raise KeyboardInterrupt
        if self._extra_interrupts == 1:
            self._say("saving a checkpoint, please wait (Ctrl-C again to quit without it; "
                      "the completed checkpoints stay intact)")
            return
        self._say("quit while saving: the newest completed checkpoint is kept")
        # No unwinding through torch.save; its temporary file is removed by the next opener.
        os._exit(EXIT_INTERRUPTED)

    def _say(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def exit_code(self, status: str) -> int:
        """The process exit code for a run that ended with `status`.

        A run stopped by a signal or by a request from its folder (`mile-tui runs stop`)
        exits 130 (143 for SIGTERM), except a torchrun worker stopped by a request: it
        exits 0, because torchrun takes any other code for a failure, reports the job
        failed and, with --max-restarts, would start it again and undo the stop. Its
        status, "stopped", is in metrics.jsonl either way.
        """
        if status == "failed":
            return EXIT_FAILED
        if self.received == signal.SIGTERM:
            return EXIT_TERMINATED
        if self.received == signal.SIGINT:
            return EXIT_INTERRUPTED
        if status == "stopped":
            under_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
            return EXIT_OK if under_torchrun else EXIT_INTERRUPTED
        return EXIT_OK
