"""Strict mode: the in-memory handler behaves like a server, and the same
scenario gives the same observations on strict memory and on madsci's
``PyCacheHandler`` against a private valkey."""

from __future__ import annotations

import threading
from collections.abc import MutableMapping, MutableSequence

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from test_inmemory import apply, list_ops

from madsci_cache_rs import (
    CacheResponseError,
    ExtendUnlockedLock,
    InMemoryCacheHandler,
    QuorumNotAchieved,
    ReleaseUnlockedLock,
    TooManyExtensions,
)


@pytest.fixture
def strict() -> InMemoryCacheHandler:
    return InMemoryCacheHandler(strict=True)


def test_every_read_is_a_fresh_copy_after_the_first(strict):
    """Reads after the first copy a decoded template instead of parsing:
    changing what one read returned never shows in another, at any depth."""
    d, lst = strict.create_dict("d"), strict.create_list("l")
    value = {"a": [1, {"b": [2.5, "x"]}], "c": {}, "n": None, "t": True}
    d["k"] = value
    lst.append(value)
    for read in (lambda: d["k"], lambda: d.to_dict()["k"], lambda: lst[0], lambda: next(iter(lst))):
        first = read()
        first["a"][1]["b"].append("changed")
        first["c"]["new"] = 1
        first["a"].pop(0)
        for _ in range(2):
            again = read()
            assert again == value
            assert again is not first and again["a"] is not first["a"]
            assert again["a"][1]["b"] is not read()["a"][1]["b"]
    d["nan"] = [float("nan")]
    one, two = d["nan"], d["nan"]
    assert one[0] is not two[0], "each read has its own NaN, as a decode gives"
    assert one[0] not in two
    # The whole dict, too: a copy per call, and a write shows at once.
    d["top"] = float("nan")
    whole = d.to_dict()
    whole["added"] = 1
    whole["k"]["c"]["x"] = 2
    again = d.to_dict()
    assert "added" not in again and again["k"] == value
    assert again["top"] is not d.to_dict()["top"]
    d["k"] = 5
    assert d.to_dict()["k"] == 5
    del d["top"]
    assert set(d.to_dict()) == {"k", "nan"}


def test_values_go_through_json(strict):
    d = strict.create_dict("d")
    assert isinstance(d, MutableMapping)
    value = {"b": [1, 2], "a": (3, 4)}
    d["k"] = value
    back = d["k"]
    assert back == {"a": [3, 4], "b": [1, 2]} and back is not d["k"]
    d[1] = "int"
    d["1"] = "str"
    assert len(d) == 3 and d[1] == "int" and d["1"] == "str"
    assert d.to_dict() == {"k": {"a": [3, 4], "b": [1, 2]}, 1: "int", "1": "str"}


def test_non_json_writes_nothing(strict):
    d = strict.create_dict("d")
    d["a"] = 1
    with pytest.raises(TypeError):
        d["b"] = object()
    with pytest.raises(TypeError):
        d.update({"c": 1, "d": {1, 2}})
    assert d.to_dict() == {"a": 1}
    lst = strict.create_list("l")
    with pytest.raises(TypeError):
        lst.extend([1, object()])
    with pytest.raises(ValueError):
        circular: list = []
        circular.append(circular)
        lst.append(circular)
    assert len(lst) == 0


def test_list_behaves_like_a_server_list(strict):
    lst = strict.create_list("l")
    assert isinstance(lst, MutableSequence)
    lst.extend([1, "a", (2, 3), None])
    assert lst.to_list() == [1, "a", [2, 3], None]
    assert lst[2] == [2, 3] and lst[-1] is None and lst[1:3] == ["a", [2, 3]]
    assert [2, 3] in lst and lst.index("a") == 1 and lst.count(1) == 1
    lst.remove([2, 3])
    lst.insert(0, "first")
    lst[1] = 10
    del lst[-1]
    assert lst == ["first", 10, "a"]
    assert lst.pop() == "a" and lst.pop(0) == "first"
    with pytest.raises(ValueError):
        lst.remove("nope")
    with pytest.raises(IndexError):
        lst[9]


def test_string_commands_behave_like_redis(strict):
    assert strict.get("missing") is None
    strict.set("n", 5)
    assert strict.get("n") == "5" and strict.incr("n", 2) == 7
    strict.set("f", 1.5)
    assert strict.get("f") == "1.5"
    with pytest.raises(CacheResponseError, match="not an integer"):
        strict.incr("f")
    strict.set("padded", " 7")
    with pytest.raises(CacheResponseError):
        strict.incr("padded")
    with pytest.raises(TypeError, match="Invalid input of type: 'NoneType'"):
        strict.set("x", None)
    with pytest.raises(TypeError):
        strict.set("x", True)
    strict.create_dict("h")["a"] = 1
    with pytest.raises(CacheResponseError, match="WRONGTYPE"):
        strict.get("h")
    with pytest.raises(CacheResponseError, match="WRONGTYPE"):
        strict.incr("h")
    strict.set("s", "text")
    with pytest.raises(CacheResponseError, match="WRONGTYPE"):
        len(strict.create_list("s"))


def test_strict_handlers_are_private_unless_shared():
    a = InMemoryCacheHandler(strict=True)
    a.set("k", "v")
    assert InMemoryCacheHandler(strict=True).get("k") is None
    assert InMemoryCacheHandler(a, strict=True).get("k") == "v"
    with pytest.raises(TypeError):
        InMemoryCacheHandler(object(), strict=True)


def test_lock_is_not_reentrant_and_reports_our_lease(strict):
    lock = strict.create_lock("L", auto_release_time=30)
    other = strict.create_lock("L")
    assert lock.key == "redlock:L" and lock.num_extensions == 3
    assert lock.locked() == 0
    assert lock.acquire() is True
    assert 0 < lock.locked() <= 30
    assert other.acquire(blocking=False) is False and other.locked() == 0
    assert other.acquire(timeout=0.01) is False
    assert strict.get("redlock:L") is not None
    with pytest.raises(ValueError):
        other.acquire(blocking=False, timeout=1)
    other.context_manager_timeout = 0.01
    with pytest.raises(QuorumNotAchieved):
        with other:
            pass
    with pytest.raises(ReleaseUnlockedLock):
        other.release()
    lock.release()
    with pytest.raises(ReleaseUnlockedLock):
        lock.release()
    with other:
        assert other.locked() > 0
    assert strict.get("redlock:L") is None


def test_extend_budget(strict):
    lock = strict.create_lock("E", auto_release_time=30)
    with pytest.raises(ExtendUnlockedLock):
        lock.extend()
    lock.acquire()
    for _ in range(3):
        lock.extend()
    with pytest.raises(TooManyExtensions):
        lock.extend()
    lock.release()
    lock.acquire()
    lock.extend()  # a new acquisition gets a new budget
    lock.release()


def test_lease_expires(strict):
    first = strict.create_lock("X", auto_release_time=0.05)
    second = strict.create_lock("X", auto_release_time=30)
    assert first.acquire()
    # Blocks until the first lease runs out; nobody releases it.
    assert second.acquire() is True
    assert first.locked() == 0
    with pytest.raises(ReleaseUnlockedLock):
        first.release()
    second.release()


def test_waiter_gets_the_lock_on_release(strict):
    lock = strict.create_lock("W")
    lock.acquire()
    got = threading.Event()

    def waiter():
        with strict.create_lock("W"):
            got.set()

    t = threading.Thread(target=waiter)
    t.start()
    assert sum(range(100_000)) > 0 and not got.is_set()
    lock.release()
    t.join()
    assert got.is_set()


# -- the same scenario on strict memory and on a real server ----------------


def observe(call):
    """A call's result, or the name of the error it raised."""
    try:
        return ("ok", call())
    except Exception as exc:
        kind = type(exc).__name__
        if kind in {"ResponseError", "CacheResponseError"}:
            kind = "server error"
        if kind == "DataError":
            kind = "TypeError"  # redis-py's refusal of a value: ours is a TypeError
        return ("error", kind)


def scenario(h) -> list:
    seen = []
    rec = seen.append
    rec(observe(lambda: h.get("s:missing")))
    rec(observe(lambda: h.set("s:n", 5)))
    rec(observe(lambda: h.get("s:n")))
    rec(observe(lambda: h.incr("s:n", 3)))
    rec(observe(lambda: h.incr("s:fresh")))
    rec(observe(lambda: h.set("s:f", 2.5)))
    rec(observe(lambda: h.get("s:f")))
    rec(observe(lambda: h.incr("s:f")))
    d = h.create_dict("s:dict")
    rec(observe(lambda: d.__setitem__("a", {"x": (1, 2)})))
    rec(observe(lambda: d.__setitem__(1, "one")))
    rec(observe(lambda: d.__setitem__("1", "string one")))
    rec(observe(lambda: d["a"]))
    rec(observe(lambda: d[1]))
    rec(observe(lambda: len(d)))
    rec(observe(lambda: sorted(d.to_dict().items(), key=repr)))
    rec(observe(lambda: sorted(d.items(), key=repr)))
    rec(observe(lambda: d["missing"]))
    rec(observe(lambda: d.get("missing", "dflt")))
    rec(observe(lambda: "a" in d))
    rec(observe(lambda: d.update({"b": [1, None], "c": True})))
    rec(observe(lambda: sorted(d.keys(), key=repr)))
    rec(observe(lambda: d.__delitem__("b")))
    rec(observe(lambda: d.__delitem__("b")))
    rec(observe(lambda: h.get("s:dict")))
    rec(observe(lambda: h.incr("s:dict")))
    lst = h.create_list("s:list")
    rec(observe(lambda: lst.append("x")))
    rec(observe(lambda: lst.extend([1, (2, 3), {"k": "v"}])))
    rec(observe(lambda: list(lst)))
    rec(observe(lambda: len(lst)))
    rec(observe(lambda: [2, 3] in lst))
    rec(observe(lambda: lst[1]))
    rec(observe(lambda: lst.remove(1)))
    rec(observe(lambda: lst.remove("absent")))
    rec(observe(lambda: list(lst)))
    lock = h.create_lock("s:lock", auto_release_time=10)
    other = h.create_lock("s:lock", auto_release_time=10)
    rec(observe(lambda: lock.locked()))
    rec(observe(lambda: lock.acquire()))
    rec(observe(lambda: lock.locked() > 0))
    rec(observe(lambda: other.acquire(blocking=False)))
    rec(observe(lambda: other.locked()))
    rec(observe(lambda: other.release()))
    rec(observe(lambda: lock.extend()))
    rec(observe(lambda: lock.release()))
    rec(observe(lambda: lock.release()))
    rec(observe(lambda: other.acquire(blocking=False)))
    rec(observe(lambda: other.release()))
    return seen


def test_strict_memory_matches_a_real_server():
    pytest.importorskip("pottery")
    madsci_handlers = pytest.importorskip("madsci.common.db_handlers.cache_handler")
    MadsciPyCacheHandler = madsci_handlers.PyCacheHandler

    from madsci_cache_rs import _install
    from madsci_cache_rs.testing import PrivateServer

    # The reference is madsci's own class, even if a plugin swapped names in.
    reference_cls = _install._originals.get(
        ("madsci.common.db_handlers.cache_handler", "PyCacheHandler"), MadsciPyCacheHandler
    )
    with PrivateServer() as server:
        reference = reference_cls.from_settings(host=server.host, port=server.port)
        try:
            theirs = scenario(reference)
        finally:
            reference.close()
    ours = scenario(InMemoryCacheHandler(strict=True))
    assert ours == theirs


def test_one_lock_object_shared_by_threads_does_not_deadlock(strict):
    """``extend`` waits for the keyspace while holding the lock object's state;
    other threads waiting for that state must not hold the GIL meanwhile."""
    lock = strict.create_lock("shared", auto_release_time=30)
    lock.acquire()
    d = strict.create_dict("churn")
    errors = []

    def extender():
        for _ in range(300):
            try:
                lock.extend()
            except TooManyExtensions:
                pass
            except Exception as exc:
                errors.append(exc)

    def reader():
        for i in range(300):
            _ = lock.locked(), lock.auto_release_time, lock.num_extensions
            d[i % 7] = i

    threads = [threading.Thread(target=f) for f in (extender, reader, reader, extender)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lock.release()


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(list_ops, max_size=12))
def test_strict_list_sequence_api_matches_a_python_list(ops):
    ours = InMemoryCacheHandler(strict=True).create_list("seq")
    plain: list = []
    for op, arg in ops:
        results = []
        for target in (ours, plain):
            try:
                results.append(("ok", apply(target, op, arg)))
            except Exception as exc:
                results.append(("error", type(exc).__name__))
        assert results[0] == results[1], (op, arg)
        assert ours.to_list() == plain


def test_reads_give_what_json_gives_back(strict):
    import enum
    import json

    class Color(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    d = strict.create_dict("types")
    lst = strict.create_list("types:list")
    for value in (Color.RED, Name("n"), 1.5, -0.0, 2**70, "é\ud800", None, True, [1, (2,)]):
        d["v"] = value
        lst.append(value)
        back = d["v"]
        assert type(back) is type(json.loads(json.dumps(value)))
        assert back == json.loads(json.dumps(value))
    assert lst.to_list()[0] == 1 and type(lst.to_list()[0]) is int
    assert type(lst[1]) is str and d.to_dict() == {"v": [1, [2]]}


def test_no_deadlock_when_a_probe_reenters_the_strict_list(strict):
    lst = strict.create_list("probe")
    lst.extend(["a", {"b": 1}, [2]])

    class Probe:
        def __eq__(self, other):
            # Runs while strict mode compares items: the store is not locked.
            _ = len(lst), lst.to_list(), strict.get("k")
            lst.append("seen")
            return False

    assert Probe() not in lst
    assert lst.count(Probe()) == 0
    with pytest.raises(ValueError):
        lst.remove(Probe())
    assert lst.to_list()[:3] == ["a", {"b": 1}, [2]] and "seen" in lst


def test_remove_terminates_when_the_comparison_keeps_changing_the_list(strict):
    lst = strict.create_list("greedy")
    lst.extend(["x", "target", "y"])

    class Greedy:
        def __eq__(self, other):
            lst.append("more")  # every comparison writes to the list
            return other == "target"

    lst.remove(Greedy())
    assert lst.to_list()[:2] == ["x", "y"] and "target" not in lst
