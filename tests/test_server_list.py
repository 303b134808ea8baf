"""RedisList on a real server: the sequence API against a Python list,
pottery's wire format both ways, one round trip per operation, bad input."""

from __future__ import annotations

from collections.abc import MutableSequence

import pottery
import pytest
from helpers import round_trips
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from madsci_cache_rs import CacheResponseError, RedisList, encode_json

pytestmark = pytest.mark.filterwarnings("ignore::pottery.InefficientAccessWarning")
HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def test_sequence_api_matches_list(handler, raw):
    lst = handler.create_list("l")
    model: list = []
    assert isinstance(lst, MutableSequence)

    def both(op):
        op(lst)
        op(model)

    assert len(lst) == 0 and lst.to_list() == [] and lst == []
    lst.append(1)
    lst.extend([2.0, "x", None, True, {"a": [1]}])
    model += [1, 2.0, "x", None, True, {"a": [1]}]
    assert lst.to_list() == model and lst == model
    assert [lst[i] for i in range(-6, 6)] == [model[i] for i in range(-6, 6)]
    bounds = (None, 0, 1, 2, 5, 6, 100, -1, -2, -6, -7, -100)
    for start in bounds:
        for stop in bounds:
            for step in (None, 1, 2, 3, -1, -2, -5):
                s = slice(start, stop, step)
                assert lst[s] == model[s], s
    with pytest.raises(ValueError, match="zero"):
        lst[::0]
    with pytest.raises(IndexError):
        lst[6]
    with pytest.raises(IndexError):
        lst[-7]
    with pytest.raises(TypeError, match="indices"):
        lst["0"]
    both(lambda s: s.insert(2, "ins"))
    both(lambda s: s.insert(-100, "first"))
    both(lambda s: s.insert(100, "last"))
    both(lambda s: s.insert(-1, "pen"))
    assert lst.to_list() == model
    assert lst.pop() == model.pop() and lst.pop(0) == model.pop(0) and lst.pop(2) == model.pop(2)
    assert lst.pop(-2) == model.pop(-2)
    with pytest.raises(IndexError, match="pop index out of range"):
        lst.pop(50)
    lst[0] = "zero"
    model[0] = "zero"
    lst[-1] = "end"
    model[-1] = "end"
    with pytest.raises(IndexError, match="assignment"):
        lst[40] = 1
    del lst[1]
    del model[1]
    with pytest.raises(IndexError):
        del lst[40]
    assert lst.to_list() == model
    lst[1:3] = ["a", "b", "c"]
    model[1:3] = ["a", "b", "c"]
    del lst[::2]
    del model[::2]
    assert lst.to_list() == model
    lst += [7, 7]
    model += [7, 7]
    assert lst.count(7) == 2 and lst.index(7) == model.index(7)
    assert lst.index(7, model.index(7) + 1) == model.index(7, model.index(7) + 1)
    with pytest.raises(ValueError, match="is not in list"):
        lst.index("nope")
    both(lambda s: s.remove(7))
    with pytest.raises(ValueError, match="not in RedisList"):
        lst.remove("nope")
    assert list(reversed(lst)) == list(reversed(model))
    both(lambda s: s.reverse())
    assert lst.to_list() == model and lst == handler.create_list("l") and lst != [*model, 1]
    assert repr(lst) == f"RedisList{model!r}" and (lst == "x") is False
    lst.clear()
    assert len(lst) == 0 and raw.exists("l") == 0
    with pytest.raises(IndexError, match="empty"):
        lst.pop()
    with pytest.raises(TypeError):
        hash(lst)


@pytest.mark.parametrize(
    ("stored", "probe"),
    [(1, 1.0), (1.0, 1), (1, True), (True, 1), (0, False), (0.0, -0.0), (2**40, float(2**40))],
)
def test_membership_uses_python_equality(handler, stored, probe):
    lst = handler.create_list("l")
    lst.extend(["pad", stored, "pad"])
    model = ["pad", stored, "pad"]
    assert (probe in lst) == (probe in model) is True
    assert lst.index(probe) == model.index(probe) == 1
    assert lst.count(probe) == model.count(probe)
    lst.remove(probe)
    assert lst.to_list() == ["pad", "pad"]


@pytest.mark.parametrize(
    ("stored", "probe"),
    [([1, 2], (1, 2)), ({"1": "a"}, {1: "a"}), ([float("nan")], [float("nan")]), ("x", object())],
)
def test_values_no_stored_item_can_equal_are_not_found(handler, raw, stored, probe):
    lst = handler.create_list("l")
    lst.append(stored)
    model = [handler.create_list("l")[0]]  # what pottery compares against: decoded items
    assert (probe in lst) is (probe in model) is False
    with pytest.raises(ValueError):
        lst.remove(probe)
    with pytest.raises(ValueError):
        lst.index(probe)
    assert lst.count(probe) == 0
    assert raw.llen("l") == 1


SLICES = [
    slice(start, stop, step)
    for start in (None, 0, 1, 4, 9, -1, -3, -20)
    for stop in (None, 0, 2, 5, 20, -1, -4, -20)
    for step in (None, 1, 2, -1, -3)
]


def test_slice_assignment_and_deletion_match_list(handler, raw):
    lst = handler.create_list("l")
    for s in SLICES:
        base = list(range(8))
        raw.delete("l")
        lst.extend(base)
        model = list(base)
        try:
            model[s] = ["a", "b"]
        except ValueError as exc:
            with pytest.raises(ValueError, match="extended slice"):
                lst[s] = ["a", "b"]
            assert lst.to_list() == base, (s, exc)
        else:
            lst[s] = ["a", "b"]
            assert lst.to_list() == model, s
        raw.delete("l")
        lst.extend(base)
        model = list(base)
        del model[s]
        del lst[s]
        assert lst.to_list() == model, s


def test_slice_writes_are_one_script_and_encode_first(handler, raw):
    lst = handler.create_list("l")
    lst.extend(range(10))
    lst[0:1] = [0]  # load the scripts
    del lst[9:9]
    lst.reverse()
    lst.reverse()
    assert round_trips(raw, lambda: lst.__setitem__(slice(2, 4), "xyz")) == {
        "evalsha": 1, "llen": 1, "lrange": 2, "del": 1, "rpush": 1,
    }  # fmt: skip
    assert round_trips(raw, lambda: lst.__delitem__(slice(None, None, 3))) == {
        "evalsha": 1, "llen": 1, "lset": 4, "lrem": 1,
    }  # fmt: skip
    assert round_trips(raw, lst.reverse) == {"evalsha": 1, "lrange": 1, "del": 1, "rpush": 1}
    before = raw.lrange("l", 0, -1)
    with pytest.raises(TypeError):
        lst[0:2] = [1, object()]
    with pytest.raises(TypeError, match="iterable"):
        lst[0:2] = 5
    assert raw.lrange("l", 0, -1) == before


def test_nan_is_never_found(handler):
    lst = handler.create_list("l")
    lst.append(float("nan"))
    assert float("nan") not in lst
    with pytest.raises(ValueError):
        lst.remove(float("nan"))


@HYPOTHESIS
@given(items=st.lists(json_values, max_size=8))
def test_wire_format_matches_pottery_both_ways(handler, raw, items):
    raw.delete("ours", "theirs")
    handler.create_list("ours").extend(items)
    if items:  # pottery's extend([]) sends an RPUSH without values, which fails
        pottery.RedisList(redis=raw, key="theirs").extend(items)
    assert raw.lrange("ours", 0, -1) == raw.lrange("theirs", 0, -1)
    assert raw.lrange("ours", 0, -1) == [encode_json(i).encode() for i in items]
    assert handler.create_list("theirs").to_list() == items
    assert list(pottery.RedisList(redis=raw, key="ours")) == items


def _filled(handler, n=100):
    lst = handler.create_list("l")
    lst.extend({"i": i, "s": "x" * 10} for i in range(n))
    # Load the scripts once, so the counts below are steady-state.
    lst.insert(1, 1.0)
    lst.remove(1.0)
    lst.pop(1)
    lst.insert(1, {"i": 1, "s": "x" * 10})
    lst[0:1]
    return lst


LAST = {"i": 99, "s": "x" * 10}


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        (lambda lst: [x for x in lst], {"lrange": 1}),
        (lambda lst: lst.to_list(), {"lrange": 1}),
        (lambda lst: LAST in lst, {"lpos": 1}),
        (lambda lst: "absent" in lst, {"lpos": 1}),
        (lambda lst: lst.index(LAST), {"lpos": 1}),
        (lambda lst: lst.remove(LAST), {"evalsha": 1, "lrem": 1}),
        (lambda lst: lst.count(LAST), {"lrange": 1}),
        (lambda lst: len(lst), {"llen": 1}),
        (lambda lst: lst[5], {"lindex": 1}),
        (lambda lst: lst[5:10], {"evalsha": 1, "llen": 1, "lrange": 1}),
        (lambda lst: lst[::-7], {"evalsha": 1, "llen": 1, "lrange": 1}),
        (lambda lst: lst.__setitem__(5, 1), {"evalsha": 1, "lset": 1}),
        (lambda lst: lst.append(1), {"evalsha": 1, "rpush": 1}),
        (lambda lst: lst.extend(range(10)), {"evalsha": 1, "rpush": 1}),
        (lambda lst: lst.pop(), {"evalsha": 1, "rpop": 1}),
        (lambda lst: lst.pop(0), {"evalsha": 1, "lpop": 1}),
        (lambda lst: lst.pop(5), {"evalsha": 1, "lindex": 1, "lset": 1, "lrem": 1}),
        (
            lambda lst: lst.insert(5, 0),
            {"evalsha": 1, "llen": 1, "lindex": 1, "lset": 2, "linsert": 1},
        ),
        (lambda lst: 1 in lst, {"evalsha": 1, "lpos": 3}),  # 1, 1.0, true: three encodings
    ],
    ids=lambda v: "" if callable(v) else "-".join(v),
)
def test_one_round_trip_per_operation(handler, raw, operation, expected):
    """Commands a script runs are listed by INFO commandstats too; the
    client sent one command (the EVALSHA) in those rows."""
    lst = _filled(handler)
    assert round_trips(raw, lambda: operation(lst)) == expected


def test_create_list_costs_nothing(handler, raw):
    assert round_trips(raw, lambda: [handler.create_list(f"l{i}") for i in range(50)]) == {}
    assert RedisList(key="l", redis=handler).key == "l"


def test_unencodable_values_write_nothing(handler, raw):
    lst = handler.create_list("l")
    lst.append("keep")
    for op in (
        lambda: lst.append(object()),
        lambda: lst.extend([1, 2, {3}]),
        lambda: lst.insert(0, b"x"),
        lambda: lst.__setitem__(0, object()),
        lambda: lst.__setitem__(slice(0, 1), [object()]),
    ):
        with pytest.raises(TypeError):
            op()
    assert raw.lrange("l", 0, -1) == [b'"keep"']


def test_a_key_holding_another_type(handler, raw):
    raw.hset("h", "a", "1")
    lst = handler.create_list("h")
    for op in (lambda: lst.append(1), lambda: len(lst), lambda: lst.to_list(), lambda: 1 in lst):
        with pytest.raises(CacheResponseError, match="WRONGTYPE"):
            op()
    assert raw.hgetall("h") == {b"a": b"1"}
