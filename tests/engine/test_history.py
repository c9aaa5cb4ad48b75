"""metrics.jsonl read back as events: every kind round-trips; the follower reads only new
whole lines, whatever the chunks the writer appended."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mile_engine import events as ev
from mile_engine.runstore.history import (
    EVENT_CLASSES,
    MetricsFollower,
    event_from_record,
    load_history,
)
from mile_engine.runstore.layout import METRICS_FILE
from mile_engine.runstore.records import LineFile, MetricsWriter, event_record
from tests.helpers.events import ANY_EVENT, events_of
from tests.helpers.settings import tiny


def test_every_event_class_is_known() -> None:
    assert set(EVENT_CLASSES) == {c.__name__ for c in typing.get_args(ev.Event)}
    assert {"Steered", "SystemStats", "RunEnded"} <= set(EVENT_CLASSES)


@settings(max_examples=300, deadline=None)
@given(ANY_EVENT)
def test_event_from_record_inverts_event_record(event: ev.Event) -> None:
    on_disk = json.loads(json.dumps(event_record(event)))
    assert event_from_record(on_disk) == event


@pytest.mark.parametrize("cls", list(EVENT_CLASSES.values()), ids=lambda c: c.__name__)
def test_each_kind_round_trips(cls: type) -> None:
    # Every kind at least once, whatever the random draw above covered.
    @settings(max_examples=5, deadline=None)
    @given(events_of(cls))
    def check(event: ev.Event) -> None:
        assert event_from_record(json.loads(json.dumps(event_record(event)))) == event

    check()


def test_unknown_or_incomplete_records_give_none_and_nan_comes_back() -> None:
    assert event_from_record({"event": "FromTheFuture", "x": 1}) is None
    assert event_from_record({"event": "Paused"}) is None  # global_step missing
    assert event_from_record({"time": 1.0}) is None
    extra = event_from_record({"event": "Paused", "global_step": 3, "new_field": 1})
    assert extra == ev.Paused(3)
    step = ev.StepLogged(1, "interactive", 1, 3, 1, 10, math.nan, 0.1, math.inf, 1.0)
    back = event_from_record(json.loads(json.dumps(event_record(step))))
    assert isinstance(back, ev.StepLogged)
    assert math.isnan(back.loss) and math.isnan(back.images_per_s) and back.lr == 0.1


def test_metrics_writer_records_what_the_console_replays(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text(tiny(k_t=7).to_toml())
    writer = MetricsWriter(tmp_path)
    started = ev.RunStarted(str(tmp_path), {"k_t": 99}, "cpu", "fp32", 10, 20, 0,
                            {"ref_f1_all": 0.1, "ref_f1_label": 0.2})
    kept: list[ev.Event] = [
        ev.PhaseStarted(1, 2, "interactive", 3),
        ev.StepLogged(1, "interactive", 1, 3, 1, 10, 0.5, 0.1, 100.0, 1.0),
        ev.PseudoLabelStats(1, 1, 4, 2.0, 0.5),
        ev.Evaluated(1, 5, {"real_f1": 0.3}, True, 50.0, {"0.1": {"real_f1": 0.3}}),
        ev.CheckpointSaved("a.pt", 1, "evaluated", 5, "generation", ["a.pt"]),
        ev.Paused(5), ev.Resumed(5), ev.Steered("pause", 5),
        ev.SystemStats(5, 99.5, 1 << 30, None, None, None),
        ev.SystemStats(6, 12.0, 1 << 20, 80.0, 1 << 32, 1 << 34),
        ev.Message("warning", "careful"), ev.Message("error", "broken"),
    ]
    skipped: list[ev.Event] = [
        ev.Position(1, "interactive", 1, 3, 1, 10, 1.0), ev.DataProgress("scan", 1, 2),
        ev.Message("info", "fyi"), ev.Message(ev.DETAIL, "traceback"),
    ]
    ended = ev.RunEnded("finished", 10, 2.0, {"real_f1": 0.3, "generation": 1})
    for event in [started, *kept, *skipped, ended]:
        writer(event)
    history = load_history(tmp_path)
    # RunStarted's settings come from settings.toml, not from the event's own dict.
    assert history == [dataclasses.replace(started, settings=tiny(k_t=7).to_dict()), *kept,
                       ended]
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert "settings" not in record


# ------------------------------------------------------------------ the follower
def _records_in(data: bytes) -> list[ev.Event]:
    """The reference reading: every newline-terminated line parsed on its own."""
    out = []
    for line in data.split(b"\n")[:-1]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        event = event_from_record(record) if isinstance(record, dict) else None
        if event is not None:
            out.append(event)
    return out


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    events=st.lists(ANY_EVENT.filter(lambda e: not isinstance(e, ev.RunStarted)),
                    min_size=1, max_size=12),
    damaged=st.lists(st.integers(0, 11), max_size=2),
    torn=st.binary(max_size=20).filter(lambda b: b"\n" not in b),
    cuts=st.lists(st.integers(0, 10**6), max_size=12),
)
def test_follower_reads_what_a_whole_read_reads(
        tmp_path_factory: pytest.TempPathFactory, events: list[ev.Event], damaged: list[int],
        torn: bytes, cuts: list[int]) -> None:
    lines = [json.dumps(event_record(e)).encode() for e in events]
    for i in damaged:  # a damaged whole line is skipped by both readings
        if i < len(lines):
            lines[i] = lines[i][: len(lines[i]) // 2]
    data = b"".join(line + b"\n" for line in lines) + torn
    run_dir = tmp_path_factory.mktemp("follow")
    path = run_dir / "metrics.jsonl"
    path.write_bytes(b"")
    follower = MetricsFollower(run_dir)
    got: list[ev.Event] = []
    bounds = sorted({min(c, len(data)) for c in cuts} | {len(data)})
    written = 0
    for bound in bounds:
        with path.open("ab") as fh:
            fh.write(data[written:bound])
        written = bound
        new = follower.read_new()
        got += new
        # Never a record from a line whose newline has not arrived.
        assert got == _records_in(data[:bound])
        assert not follower.restarted
    assert got == _records_in(data)
    assert follower.read_new() == []
    assert follower.offset == len(data)


def test_follower_reads_only_new_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "metrics.jsonl"
    follower = MetricsFollower(tmp_path)
    assert follower.read_new() == []  # no file yet
    path.write_text(json.dumps(event_record(ev.Paused(1))) + "\n")
    assert follower.read_new() == [ev.Paused(1)]
    reads: list[tuple[int, int]] = []
    real_pread = os.pread

    def spy(fd: int, n: int, offset: int) -> bytes:
        reads.append((n, offset))
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", spy)
    size = path.stat().st_size
    with path.open("a") as fh:
        fh.write(json.dumps(event_record(ev.Resumed(2))) + "\n")
    assert follower.read_new() == [ev.Resumed(2)]
    assert reads == [(path.stat().st_size - size, size)]


def test_follower_survives_a_cut_torn_tail_and_restarts_on_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    first = json.dumps(event_record(ev.Paused(1))) + "\n"
    path.write_text(first + '{"event": "Resu')  # a writer killed mid-line
    follower = MetricsFollower(tmp_path)
    assert follower.read_new() == [ev.Paused(1)]
    # A resumed run reopens the file: LineFile cuts the torn tail, then appends.
    line_file = LineFile(path)
    line_file.write(json.dumps(event_record(ev.Resumed(2))) + "\n")
    line_file.close()
    assert follower.read_new() == [ev.Resumed(2)] and not follower.restarted
    # Replaced by another file (a new inode): read again from its start.
    other = tmp_path / "other"
    other.write_text(json.dumps(event_record(ev.Paused(7))) + "\n")
    os.replace(other, path)
    assert follower.read_new() == [ev.Paused(7)] and follower.restarted
    # Shrunk below what was read: from the start as well.
    path.write_text("")
    assert follower.read_new() == [] and follower.restarted
    path.unlink()
    assert follower.read_new() == []


def test_ended_follows_the_lifecycle(tmp_path: Path) -> None:
    writer = LineFile(tmp_path / "metrics.jsonl")
    follower = MetricsFollower(tmp_path)
    started = ev.RunStarted("d", {}, "cpu", "fp32", 1, 10, 0, {})
    steps: list[tuple[ev.Event, bool]] = [
        (started, False), (ev.Paused(1), False), (ev.RunEnded("stopped", 1, 1.0, None), True),
        (started, False), (ev.RunEnded("finished", 10, 2.0, None), True),
    ]
    for event, ended in steps:
        writer.write(json.dumps(event_record(event)) + "\n")
        follower.read_new()
        assert follower.ended is ended


# ------------------------------------------------------------------------------ long runs, thinned
# Opening a long run: the follower passes over old progress records before parsing them,
# and returns exactly what a full read thinned afterwards would.
THINNED = ("StepLogged", "PseudoLabelStats", "SystemStats")
# Progress records are most of a real file: draw them often, among every other kind.
EVENTS = st.one_of(ANY_EVENT, events_of(ev.StepLogged), events_of(ev.PseudoLabelStats),
                   events_of(ev.SystemStats))


def thinned_by_hand(events: list[ev.Event], keep: dict[str, int]) -> list[ev.Event]:
    """The plain rule: of each kind named, only the newest `keep[kind]` survive."""
    totals = {kind: sum(type(e).__name__ == kind for e in events) for kind in keep}
    seen = dict.fromkeys(keep, 0)
    out = []
    for event in events:
        kind = type(event).__name__
        if kind in keep:
            seen[kind] += 1
            if seen[kind] <= totals[kind] - keep[kind]:
                continue
        out.append(event)
    return out


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(EVENTS, min_size=1, max_size=60),
       keep=st.fixed_dictionaries({k: st.integers(0, 5) for k in THINNED}),
       share=st.floats(0, 1))
def test_keep_newest_equals_a_full_read_thinned(tmp_path_factory, events: list[ev.Event],
                                                keep: dict[str, int], share: float) -> None:
    run_dir: Path = tmp_path_factory.mktemp("run")
    lines = [json.dumps(event_record(e)) + "\n" for e in events]
    split = round(share * len(lines))
    path = run_dir / METRICS_FILE
    path.write_text("".join(lines[:split]), encoding="utf-8")
    full, thin = MetricsFollower(run_dir), MetricsFollower(run_dir)
    # As the console does: the opening read thinned, then every appended line.
    everything, thinned = full.read_new(), thin.read_new(keep_newest=keep)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("".join(lines[split:]))
    everything += full.read_new()
    thinned += thin.read_new()
    assert len(everything) == len(events)
    assert thinned == thinned_by_hand(everything[:split], keep) + everything[split:]
