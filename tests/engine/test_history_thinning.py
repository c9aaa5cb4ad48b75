"""Opening a long run: the follower passes over old progress records before parsing them,
and returns exactly what a full read thinned afterwards would."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mile_engine import events as ev
from mile_engine.runstore.history import MetricsFollower
from mile_engine.runstore.layout import METRICS_FILE
from mile_engine.runstore.records import event_record
from tests.helpers.events import ANY_EVENT, events_of

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
