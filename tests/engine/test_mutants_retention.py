"""Retention's pure rules on records in any order, against a brute-force model.

`read_records` lists the manifest's saves and then adopts orphan files in file-name
order, so the list handed to `protected`, `retained` and `best_record` is not always
in save order; the newest is the highest `seq`, never merely the last in the list.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mile_engine.runstore.manifest import Record, best_record, protected, retained


def record(seq: int, f1: float | None) -> Record:
    """A save numbered `seq` scoring `f1` (None: saved between evaluations)."""
    return Record(
        file=f"save-{seq:03d}.pt", seq=seq, generation=seq, phase="evaluated", step=0,
        global_step=10 * seq, reason="generation",
        metrics=None if f1 is None else {"real_f1": f1}, size=1, sha256="0" * 64,
        time=float(seq),
    )


@st.composite
def shuffled_histories(draw: st.DrawFn) -> list[Record]:
    """1..12 saves with scores from a small set (ties happen), in a random order."""
    n = draw(st.integers(1, 12))
    scores = draw(st.lists(st.sampled_from([None, 0.1, 0.2, 0.3]), min_size=n, max_size=n))
    saves = [record(seq + 1, f1) for seq, f1 in enumerate(scores)]
    return draw(st.permutations(saves))


def score(r: Record) -> tuple[float, int]:
    """(F1, seq) of a scored save: the order "best" means, newer winning ties."""
    assert r.real_f1 is not None
    return r.real_f1, r.seq


def model_best(records: list[Record]) -> str | None:
    """The highest F1, the newest on a tie: brute force over every pair."""
    scored = [r for r in records if r.real_f1 is not None]
    for r in scored:
        if all(score(r) >= score(o) for o in scored):
            return r.file
    return None


@settings(max_examples=200, deadline=None, database=None)
@given(records=shuffled_histories(), keep_last=st.integers(0, 5), keep_best=st.integers(1, 3))
def test_rules_follow_seq_not_list_order(
    records: list[Record], keep_last: int, keep_best: int
) -> None:
    newest = max(r.seq for r in records)
    best = model_best(records)
    got_best = best_record(records)
    assert (got_best.file if got_best else None) == best

    must = {f"save-{newest:03d}.pt"} | ({best} if best else set())
    assert protected(records) == must

    by_age = sorted(records, key=lambda r: r.seq, reverse=True)
    scored = sorted((r for r in records if r.real_f1 is not None), key=score, reverse=True)
    expected = {r.file for r in by_age[:keep_last]} | {r.file for r in scored[:keep_best]}
    assert retained(records, keep_last, keep_best) == expected
