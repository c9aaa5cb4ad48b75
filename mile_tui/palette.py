"""The console's entries in the command palette (ctrl+p): the run's controls, the
settings file and the screens, next to Textual's own commands."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from textual.app import SystemCommand

if TYPE_CHECKING:
    from mile_tui.app import MileApp


def console_commands(app: MileApp) -> Iterator[SystemCommand]:
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
