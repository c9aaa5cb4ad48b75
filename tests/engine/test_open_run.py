"""open_run refuses a checkpoint_path where no run folder can be made, before building."""

from __future__ import annotations

from pathlib import Path

import pytest

from mile_engine import session
from mile_engine.config import SettingsError
from mile_engine.session import open_run
from tests.conftest import tiny


def test_a_file_as_checkpoint_path_is_refused_before_the_trainer_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    built: list[object] = []
    monkeypatch.setattr(session, "Trainer", lambda *a, **k: built.append(a))
    for path in (blocker, blocker / "below"):
        with pytest.raises(SettingsError, match="checkpoint_path"):
            open_run(tiny(checkpoint_path=str(path)))
    assert built == [] and sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
