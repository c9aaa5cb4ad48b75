"""Driving the console with Textual's Pilot."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.app import App
from textual.pilot import Pilot

from mile_tui.app import MileApp
from mile_tui.screens.runs import RunsScreen


def notices(app: App[None]) -> list[str]:
    """The messages of the notifications the app has shown."""
    return [n.message for n in app._notifications]


async def wait_for(pilot: Pilot[None], condition: Callable[[], bool],
                   timeout: float = 120.0) -> None:
    """Let the app run until `condition` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(0.05)


async def open_runs(app: MileApp, pilot: Pilot[None]) -> RunsScreen:
    """The Runs screen once it has read the folders."""
    await wait_for(pilot, lambda: app.runs_screen.loaded)
    await pilot.pause()
    return app.runs_screen


