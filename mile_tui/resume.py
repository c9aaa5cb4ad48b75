"""Resuming a run from the console: whether it can be resumed now, and, for a finished
run whose save has every generation done, how many generations to train to.

The folder is read again at the moment of resuming, since a run listed a while ago may
be training elsewhere by now. Starting the resumed run is the app's (`launch`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from textual.app import App

from mile_engine.runstore.catalog import RunSummary, list_runs, summarize_run
from mile_tui.screens.more_generations import MoreGenerationsScreen, generations_done

Launch = Callable[[RunSummary, "Path | None", Sequence[str]], None]
"""Starts the resume of a checked run from a save (None: its newest), with overrides."""


class Resumer:
    """The console's resume checks and its question; refusals are one line."""

    def __init__(self, app: App[Any], busy: Callable[[], bool], launch: Launch) -> None:
        """`busy()`: whether the console trains a run of its own now."""
        self.app = app
        self.busy = busy
        self.launch = launch

    def problem(self, run: RunSummary) -> str | None:
        """Why `run` cannot be resumed from this console now (one line), or None."""
        if self.busy():
            return "A run is already in progress in this console: stop it first."
        if run.status == "running":
            return (f"{run.name} is training elsewhere ({run.holder or 'unknown holder'}): "
                    "open it to watch or steer it; resume it once it has stopped.")
        return None

    def resume(self, run: RunSummary, checkpoint: Path | None = None) -> None:
        """Continue `run` in its own folder, from `checkpoint` or else its newest save
        that verifies; a busy run is refused in one line that names who holds it. A
        finished run resumed from a save that has every generation done asks first how
        many generations to train to."""
        now = self._current(run)
        if now is None:
            return
        done = nothing_left(now, checkpoint)
        if done is None:
            self.launch(now, checkpoint, ())
            return

        def answered(total: int | None) -> None:
            if total is None:
                return  # cancelled: nothing happens
            again = self._current(now)  # the folder may have changed while asking
            if again is not None:
                self.launch(again, checkpoint, [f"epoch_num={total}"])

        self.app.push_screen(MoreGenerationsScreen(now.name, done, now.generations), answered)

    def latest(self, root: Path) -> None:
        """Continue the newest run under `root` from its newest good save."""
        if self.busy():
            self.app.notify("A run is already in progress.", severity="warning")
            return
        runs = list_runs([root])
        if not runs:
            self.app.notify(f"No run under {root} to resume.", severity="warning")
            return
        self.resume(runs[0])

    def from_browser(self, run_dir: Path, checkpoint: Path | None) -> str | None:
        """The checkpoint browser's resume key: a refusal to show there, or None once
        the run is going (the browser is closed first) or its question is asked (the
        browser stays beneath it, for a cancel)."""
        try:
            run = summarize_run(run_dir)
        except (OSError, ValueError) as exc:
            return str(exc)
        problem = self.problem(run)
        if problem:
            return problem
        self.resume(run, checkpoint)
        return None

    def _current(self, run: RunSummary) -> RunSummary | None:
        """`run` as its folder says now, or None after saying in one line why it
        cannot be resumed."""
        try:
            run = summarize_run(run.path)  # its status now, not when it was listed
        except (OSError, ValueError) as exc:
            self.app.notify(str(exc), title="Cannot resume", severity="error")
            return None
        problem = self.problem(run)
        if problem:
            self.app.notify(problem, title="Cannot resume", severity="error", timeout=8)
            return None
        return run


def nothing_left(run: RunSummary, checkpoint: Path | None) -> int | None:
    """The generations done when resuming `run` from `checkpoint` (None: its newest
    save) would train nothing: the run finished and the save has every generation of
    its `epoch_num` done. None when the resume has work left (or it is unknown)."""
    if run.status != "finished":
        return None
    done = run.generation if checkpoint is None else generations_done(run.path, checkpoint)
    if done is None or done < run.generations:
        return None  # an earlier save of a finished run trains its last generations again
    return done
