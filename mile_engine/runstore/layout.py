"""The names of the files in a run folder, in one place.

Every module that reads or writes a run folder takes its names from here. This module
imports nothing, so that light readers (the runs list, the console's screens) can name
the files without loading torch through the modules that write them.

A run folder holds:

- `settings.toml`: the settings the run was started with;
- `metrics.jsonl`: the run's events, one JSON record a line;
- `run.log`: the same events as plain lines;
- `checkpoints.json`: the manifest of saves, one record a `*.pt` checkpoint;
- `.checkpoints.lock`: taken by whoever edits the manifest or the saves;
- `.active.lock`: held by the live trainer for the whole run, naming its host and pid;
- `control.request`: a pause/resume/stop/save request left for the trainer by another
  process, renamed to a `.control.request.taken-*` name once the trainer takes it;
- `.tmp-*`: a file being written, moved into place once complete.
"""

from __future__ import annotations

SETTINGS_FILE = "settings.toml"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "run.log"
MANIFEST_FILE = "checkpoints.json"
LOCK_FILE = ".checkpoints.lock"
ACTIVE_FILE = ".active.lock"
REQUEST_FILE = "control.request"
TAKEN_PREFIX = ".control.request.taken-"
SUFFIX = ".pt"  # a checkpoint file
TMP_PREFIX = ".tmp-"

__all__ = [
    "ACTIVE_FILE", "LOCK_FILE", "LOG_FILE", "MANIFEST_FILE", "METRICS_FILE", "REQUEST_FILE",
    "SETTINGS_FILE", "SUFFIX", "TAKEN_PREFIX", "TMP_PREFIX",
]
