"""Differential: the same operations on pottery's structures and ours, on
one server, leave the same bytes and give the same results."""

from __future__ import annotations

import pottery
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.filterwarnings("ignore::pottery.InefficientAccessWarning")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
values = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["a", "b", "é"])
small = st.integers(0, 6)

list_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), values),
        st.tuples(st.just("extend"), st.lists(values, min_size=1, max_size=3)),
        st.tuples(st.just("insert"), small, values),
        st.tuples(st.just("pop"), st.sampled_from([-1, 0, 1, 2, 5])),
        st.tuples(st.just("remove"), values),
        st.tuples(st.just("setitem"), small, values),
        st.tuples(st.just("delitem"), small),
        st.tuples(st.just("getitem"), st.integers(-4, 6)),
        st.tuples(st.just("contains"), values),
        st.tuples(st.just("len")),
    ),
    max_size=15,
)


def _apply(target, op):
    name, *args = op
    try:
        if name == "setitem":
            target[args[0]] = args[1]
            return None
        if name == "delitem":
            del target[args[0]]
            return None
        if name == "getitem":
            return target[args[0]]
        if name == "contains":
            return args[0] in target
        if name == "len":
            return len(target)
        return getattr(target, name)(*args)
    except (IndexError, KeyError, ValueError) as exc:
        return type(exc)


@SETTINGS
@given(ops=list_ops)
def test_list_operations_match_pottery(handler, raw, ops):
    raw.delete("theirs", "ours")
    theirs = pottery.RedisList(redis=raw, key="theirs")
    ours = handler.create_list("ours")
    for op in ops:
        if op[0] == "insert" and op[1] > len(ours):
            continue  # pottery appends past the end too, but via a different path
        assert _apply(ours, op) == _apply(theirs, op), op
        assert raw.lrange("ours", 0, -1) == raw.lrange("theirs", 0, -1), op


keys = st.sampled_from(["a", "b", 1, None, True])
dict_ops = st.lists(
    st.one_of(
        st.tuples(st.just("setitem"), keys, values),
        st.tuples(st.just("delitem"), keys),
        st.tuples(st.just("getitem"), keys),
        st.tuples(st.just("get"), keys),
        st.tuples(st.just("contains"), keys),
        st.tuples(st.just("pop"), keys),
        st.tuples(st.just("setdefault"), keys, values),
        st.tuples(st.just("update"), st.dictionaries(keys, values, max_size=3)),
        st.tuples(st.just("len")),
        st.tuples(st.just("clear")),
    ),
    max_size=15,
)


@SETTINGS
@given(ops=dict_ops)
def test_dict_operations_match_pottery(handler, raw, ops):
    raw.delete("theirs", "ours")
    theirs = pottery.RedisDict(redis=raw, key="theirs")
    ours = handler.create_dict("ours")
    for op in ops:
        assert _apply(ours, op) == _apply(theirs, op), op
        assert raw.hgetall("ours") == raw.hgetall("theirs"), op
    assert ours.to_dict() == theirs.to_dict()
