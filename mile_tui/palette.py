"""The console's entries in the command palette (ctrl+p): the run's controls, the
settings file and the screens, next to Textual's own commands."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from textual.app import SystemCommand


class Console(Protocol):
    """What the palette calls on the console (the app), named here rather than imported
    from `mile_tui.app`, which imports this module."""

    @property
    def settings_screen(self) -> Any:
        """The settings screen (its `action_save`, `action_reload`)."""

    def action_start_run(self) -> Any: ...
    def action_toggle_pause(self) -> Any: ...
    def action_stop_run(self) -> Any: ...
    def action_save_now(self) -> Any: ...
    def action_resume_latest(self) -> Any: ...
    def action_resume_selected(self) -> Any: ...
    def action_browse_checkpoints(self) -> Any: ...
    def action_show_settings(self) -> Any: ...
    def action_show_run(self) -> Any: ...
    def action_show_runs(self) -> Any: ...


def console_commands(app: Console) -> Iterator[SystemCommand]:
    """The palette's commands of the console `app`, in the order they are listed."""
    for title, text, command in (
        ("Start run", "Train with the settings on screen", app.action_start_run),
        ("Pause / resume run", "Pause between steps, or go on", app.action_toggle_pause),
        ("Stop run", "Stop cleanly before the next step", app.action_stop_run),
        ("Save checkpoint now", "Write a checkpoint before the next step",
         app.action_save_now),
        ("Resume latest run", "Continue the newest run under checkpoint_path",
         app.action_resume_latest),
        ("Resume from selected save",
         "Continue from the save highlighted in the checkpoint panel",
         app.action_resume_selected),
        ("Browse checkpoints", "Verify, prune, export the saves (F4)",
         app.action_browse_checkpoints),
        ("Save settings", "Write the settings file (ctrl+s)",
         app.settings_screen.action_save),
        ("Reload settings", "Read the settings file again",
         app.settings_screen.action_reload),
        ("Show settings", "The settings screen (F2)", app.action_show_settings),
        ("Show run", "The run screen (F3)", app.action_show_run),
        ("Show runs", "Every run: open, watch, resume, compare (F6)",
         app.action_show_runs),
    ):
        yield SystemCommand(title, text, command)
