"""Readers of a run folder's records never block on, nor read for ever from, a
metrics.jsonl that is not a regular file (a named pipe, a link to a device)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mile_engine.runstore.history import load_history
from mile_engine.runstore.layout import METRICS_FILE
from mile_engine.runstore.records import read_metrics
from tests.helpers.hostile import call_unblocked, make_fifo


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero"])
def test_readers_refuse_or_skip_a_metrics_file_that_is_not_a_file(tmp_path: Path,
                                                                   kind: str) -> None:
    path = tmp_path / METRICS_FILE
    fifos = []
    if kind == "fifo":
        fifos.append(make_fifo(path))
    else:
        path.symlink_to("/dev/zero")
    # The console's follower shows nothing yet; a direct read says what is wrong.
    assert call_unblocked(lambda: load_history(tmp_path), fifos) == []
    with pytest.raises(OSError, match="not a regular file"):
        call_unblocked(lambda: read_metrics(tmp_path), fifos)
