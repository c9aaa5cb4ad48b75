"""The request file: who may send, what it looks like on disk, and how a trainer acts on it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mile_engine import events as ev
from mile_engine.control import Control
from mile_engine.runstore.layout import REQUEST_FILE
from mile_engine.runstore.lock import hold_active
from mile_engine.runstore.manifest import read_records
from mile_engine.runstore.steering import (
    RequestPoller,
    SteeringError,
    send_request,
    wait_for_ack,
)
from mile_engine.session import open_run
from tests.helpers.hostile import HANG_GUARD_S, call_unblocked, make_fifo
from tests.helpers.settings import REPO, tiny


def _run_folder(tmp_path: Path, mode: int = 0o755) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "settings.toml").write_text(tiny().to_toml())
    run_dir.chmod(mode)
    return run_dir


def test_refuses_what_is_not_a_live_run_of_the_caller(tmp_path: Path) -> None:
    with pytest.raises(SteeringError, match="not a run folder"):
        send_request(tmp_path, "pause")
    run_dir = _run_folder(tmp_path)
    with pytest.raises(SteeringError, match="not running"):
        send_request(run_dir, "pause")
    lock = hold_active(run_dir)
    try:
        with pytest.raises(SteeringError, match="unknown request"):
            send_request(run_dir, "explode")  # type: ignore[arg-type]
        run_dir.chmod(0o555)  # the owner cannot write: refused, even for root
        with pytest.raises(SteeringError, match="not permitted: only the run folder's owner"):
            send_request(run_dir, "stop")
        run_dir.chmod(0o755)
        if os.geteuid() == 0:  # only root can give the folder away
            os.chown(run_dir, 12345, -1)
            with pytest.raises(SteeringError, match="not permitted"):
                send_request(run_dir, "stop")
            os.chown(run_dir, 0, -1)
        assert not (run_dir / REQUEST_FILE).exists()
    finally:
        assert lock is not None
        lock.close()


@pytest.mark.parametrize(("folder", "file"), [(0o700, 0o600), (0o750, 0o640), (0o755, 0o644)])
def test_request_file_takes_the_folders_permissions(tmp_path: Path, folder: int,
                                                    file: int) -> None:
    run_dir = _run_folder(tmp_path, folder)
    lock = hold_active(run_dir)
    old = os.umask(0o077)  # a narrow umask must not change the file's bits
    try:
        send_request(run_dir, "pause")
        send_request(run_dir, "save")
    finally:
        os.umask(old)
        assert lock is not None
        lock.close()
    path = run_dir / REQUEST_FILE
    assert stat.S_IMODE(path.stat().st_mode) == file
    assert path.read_text() == "pause\nsave\n"


def test_poller_takes_requests_in_order_once_and_drops_stale_ones(tmp_path: Path) -> None:
    path = tmp_path / REQUEST_FILE
    path.write_text("stop\n")  # left by an earlier process: not for this one
    poller = RequestPoller(tmp_path)
    assert poller.poll() == []
    path.write_text("pause\nnonsense\n\nsave\nresume\n")
    assert poller.poll() == ["pause", "save", "resume"]
    assert poller.poll() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left behind


class Steerer:
    """A sink that sends requests from the run folder's side when the run reaches a step,
    and answers a pause with `on_pause` (sent from another thread while the run waits)."""

    def __init__(self, at: dict[int, str], on_pause: list[str]) -> None:
        self.at, self.on_pause = at, list(on_pause)
        self.run_dir: Path | None = None
        self.events: list[ev.Event] = []

    def __call__(self, event: ev.Event) -> None:
        self.events.append(event)
        if isinstance(event, ev.RunStarted):
            self.run_dir = Path(event.run_dir)
        if isinstance(event, ev.StepLogged) and event.global_step in self.at:
            assert self.run_dir is not None
            send_request(self.run_dir, self.at.pop(event.global_step))  # type: ignore[arg-type]
        if isinstance(event, ev.Paused):
            # A pause nobody asked for (a stop taken as a pause, say) is answered with a
            # resume, so that a wrong trainer runs on and fails the test's checks
            # instead of waiting paused forever.
            run_dir, requests = self.run_dir, self.on_pause or ["resume"]
            self.on_pause = []

            def later() -> None:
                assert run_dir is not None
                for request in requests:
                    send_request(run_dir, request)  # type: ignore[arg-type]

            threading.Thread(target=later).start()


def test_a_trainer_obeys_the_request_file(tmp_path: Path) -> None:
    settings = tiny(checkpoint_path=str(tmp_path / "runs"), epoch_num=3)
    steerer = Steerer({2: "save", 3: "pause", 12: "stop"}, on_pause=["save", "resume"])
    control = Control()
    trainer = open_run(settings, [steerer], control)
    ended = trainer.train()
    assert ended.status == "stopped" and ended.global_step == 12
    steered = [(e.request, e.global_step) for e in steerer.events
               if isinstance(e, ev.Steered)]
    # Each request is taken before the next step, at the step it was sent after.
    assert steered == [("save", 2), ("pause", 3), ("save", 3), ("resume", 3), ("stop", 12)]
    kinds = [type(e).__name__ for e in steerer.events]
    paused, resumed = kinds.index("Paused"), kinds.index("Resumed")
    assert paused < resumed
    assert "StepLogged" not in kinds[paused:resumed]  # no step while paused
    saves = [(e.global_step, e.reason) for e in steerer.events
             if isinstance(e, ev.CheckpointSaved)]
    assert saves == [(2, "request"), (3, "request"), (5, "generation"), (10, "generation"),
                     (12, "stop")]
    assert read_records(trainer.run_dir)[-1].reason == "stop"
    # The acknowledgements reached metrics.jsonl, in order, for a watcher.
    lines = (trainer.run_dir / "metrics.jsonl").read_text().splitlines()
    on_disk = [json.loads(x) for x in lines]
    assert [(r["request"], r["global_step"]) for r in on_disk
            if r["event"] == "Steered"] == steered
    assert not (trainer.run_dir / REQUEST_FILE).exists()


def test_system_stats_at_every_log_interval(tmp_path: Path) -> None:
    settings = tiny(checkpoint_path=str(tmp_path / "runs"), epoch_num=1, log_every=2)
    trainer = open_run(settings)
    trainer.train()
    records = [json.loads(x) for x in
               (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r["global_step"] for r in records if r["event"] == "StepLogged"]
    stats = [r for r in records if r["event"] == "SystemStats"]
    assert [r["global_step"] for r in stats] == logged == [2, 3, 5]
    import psutil

    limit = psutil.virtual_memory().total
    for r in stats:
        assert 0 < r["rss_bytes"] < limit and r["cpu_percent"] >= 0
        assert r["gpu_util_percent"] is r["gpu_memory_bytes"] is None  # a CPU run
    assert any(r["cpu_percent"] > 0 for r in stats)  # training keeps a core busy


# ------------------------------------------------------------ request files that are not files
def _hostile_request(run_dir: Path, kind: str) -> Path:
    """Put something that is not a plain request file at the request file's name."""
    path = run_dir / REQUEST_FILE
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        make_fifo(path)
    elif kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "link to a file":
        (run_dir / "elsewhere").write_text("stop\n")
        path.symlink_to(run_dir / "elsewhere")
    else:
        raise AssertionError(kind)
    return path


HOSTILE = ["folder", "fifo", "link to /dev/zero", "link to a file"]


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_sender_refuses_a_request_file_that_is_not_a_regular_file(
    tmp_path: Path, kind: str
) -> None:
    run_dir = _run_folder(tmp_path)
    path = _hostile_request(run_dir, kind)
    lock = hold_active(run_dir)
    try:
        with pytest.raises(SteeringError, match="cannot write the request") as error:
            call_unblocked(lambda: send_request(run_dir, "save"),
                           [path] if kind == "fifo" else [])
    finally:
        assert lock is not None
        lock.close()
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    if kind == "link to a file":
        assert (run_dir / "elsewhere").read_text() == "stop\n"  # not written through


@pytest.mark.parametrize("kind", ["folder", "fifo", "link to a file"])
def test_the_poller_reports_a_request_file_it_cannot_take_once_and_recovers(
    tmp_path: Path, kind: str
) -> None:
    notes: list[str] = []
    poller = RequestPoller(tmp_path, report=notes.append)
    path = _hostile_request(tmp_path, kind)
    for _ in range(3):
        assert call_unblocked(poller.poll, [path] if kind == "fifo" else []) == []
    assert len(notes) == 1 and str(path) in notes[0] and "cannot be taken" in notes[0]
    assert path.is_symlink() or path.exists()  # left for its owner to look at
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink()
    path.write_text("save\n")
    assert poller.poll() == ["save"]


def test_an_oversized_request_file_is_dropped_and_reported(tmp_path: Path) -> None:
    notes: list[str] = []
    poller = RequestPoller(tmp_path, report=notes.append)
    (tmp_path / REQUEST_FILE).write_text("stop\n" * 100_000)
    assert poller.poll() == []
    assert len(notes) == 1 and "larger than 64 KiB" in notes[0]
    assert not (tmp_path / REQUEST_FILE).exists()
    (tmp_path / REQUEST_FILE).write_text("pause\n")
    assert poller.poll() == ["pause"]


def test_a_link_to_dev_zero_neither_blocks_nor_exhausts_memory(tmp_path: Path) -> None:
    # In a child whose address space is capped: a poller that reads the link would die
    # of MemoryError there, not take this machine's memory.
    code = (
        "import os, resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from mile_engine.runstore.steering import RequestPoller\n"
        "notes = []\n"
        "poller = RequestPoller(sys.argv[1], report=notes.append)\n"
        "os.symlink('/dev/zero', os.path.join(sys.argv[1], sys.argv[2]))\n"
        "print(poller.poll(), notes)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path), REQUEST_FILE],
                          capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("[] [") and "a symbolic link" in done.stdout


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_training_run_says_why_it_cannot_take_requests_and_trains_on(
    tmp_path: Path, kind: str
) -> None:
    settings = tiny(checkpoint_path=str(tmp_path / "runs"), epoch_num=1)
    made: list[Path] = []
    events: list[ev.Event] = []

    def sink(event: ev.Event) -> None:
        events.append(event)
        if isinstance(event, ev.StepLogged) and event.global_step == 2:
            run_dir = next(Path(e.run_dir) for e in events if isinstance(e, ev.RunStarted))
            made.append(_hostile_request(run_dir, kind))

    trainer = open_run(settings, [sink], Control())
    ended = call_unblocked(trainer.train, made)
    assert ended.status == "finished"
    notes = [e.text for e in events if isinstance(e, ev.Message) and e.level == "warning"
             and REQUEST_FILE in e.text]
    assert len(notes) == 1 and "cannot be taken" in notes[0]
    on_disk = [json.loads(x) for x in
               (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r["event"] == "Message" and REQUEST_FILE in r["text"] for r in on_disk)


# ------------------------------------------------------------ the acknowledgement
def _steered(run_dir: Path, request: str) -> None:
    with (run_dir / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps({"event": "Steered", "request": request, "global_step": 7}) + "\n")


def test_wait_for_ack_sees_only_the_acknowledgement_after_the_request(tmp_path: Path) -> None:
    run_dir = _run_folder(tmp_path)
    _steered(run_dir, "save")  # an earlier request's: not this one's
    lock = hold_active(run_dir)
    try:
        since = send_request(run_dir, "save")
        with pytest.raises(SteeringError, match=r"did not take the save request within 0.3 s"):
            wait_for_ack(run_dir, "save", since, timeout=0.3)
        acks: list[str] = []

        def trainer_acknowledges(_seconds: float) -> None:
            # A pause acknowledgement first: not the one waited for.
            _steered(run_dir, "pause" if not acks else "save")
            acks.append("x")

        wait_for_ack(run_dir, "save", since, timeout=HANG_GUARD_S,
                     sleep=trainer_acknowledges)
        assert len(acks) == 2
    finally:
        assert lock is not None
        lock.close()
    with pytest.raises(SteeringError, match="the run stopped before taking the stop"):
        wait_for_ack(run_dir, "stop", (run_dir / "metrics.jsonl").stat().st_size, 60)
