"""Hypothesis strategies for events: any value of any event class, as JSON can carry it."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from hypothesis import strategies as st

from mile_engine.runstore.history import EVENT_CLASSES

# Text that survives UTF-8 (the file's encoding): no lone surrogates.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


FLOAT = st.floats(allow_nan=False, allow_infinity=False)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | FLOAT | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """Values of a field type as the events use them (plain JSON-able types)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy_for(arg) for arg in typing.get_args(tp)))
    if origin is dict:
        key, value = typing.get_args(tp)
        return st.dictionaries(strategy_for(key), strategy_for(value), max_size=4)
    if origin is list:
        return st.lists(strategy_for(typing.get_args(tp)[0]), max_size=4)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: TEXT, int: st.integers(-(2**40), 2**40), float: FLOAT, bool: st.booleans(),
        type(None): st.none(), Any: JSON,
    }
    return simple[tp]


def events_of(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: strategy_for(hints[f.name])
                             for f in dataclasses.fields(cls)})


ANY_EVENT = st.one_of(*(events_of(cls) for cls in EVENT_CLASSES.values()))


