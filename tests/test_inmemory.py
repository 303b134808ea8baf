"""The default in-memory family: madsci's behaviour, natively, without deadlocks."""

from __future__ import annotations

import threading
from collections.abc import MutableMapping, MutableSequence

import hypothesis.strategies as st
import pydantic
import pytest
from hypothesis import given, settings

from madsci_cache_rs import (
    CacheHandler,
    InMemoryCacheHandler,
    InMemoryRedisClient,
    InMemoryRedisDict,
    InMemoryRedisList,
    InMemoryRedlock,
    clear_all_registries,
)


@pytest.fixture
def client() -> InMemoryRedisClient:
    clear_all_registries()
    return InMemoryRedisClient()


def run_in_thread(fn):
    """Run ``fn`` in a new thread and return its result (or raise its error)."""
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def test_same_key_and_client_share_store_and_lock(client):
    d1 = InMemoryRedisDict(key="k", redis=client)
    d2 = InMemoryRedisDict(key="k", redis=client)
    assert d1._store is d2._store and d1._lock is d2._lock
    assert InMemoryRedisDict(key="other", redis=client)._lock is not d1._lock
    assert InMemoryRedisDict(key="k", redis=InMemoryRedisClient())._store is not d1._store
    l1 = InMemoryRedisList(key="k", redis=client)
    assert l1._store is InMemoryRedisList(key="k", redis=client)._store
    assert l1._store is not d1._store


def test_values_are_stored_as_given(client):
    d = InMemoryRedisDict(key="k", redis=client)
    value = object()
    d["a"] = value
    assert InMemoryRedisDict(key="k", redis=client)["a"] is value
    lst = InMemoryRedisList(key="k", redis=client)
    lst.append(value)
    assert next(iter(lst)) is value


def test_mapping_api(client):
    d = InMemoryRedisDict(key="k", redis=client)
    assert isinstance(d, MutableMapping)
    d.update({"a": 1}, b=2)
    d.update([("c", 3)])
    assert d.to_dict() == {"a": 1, "b": 2, "c": 3}
    assert d == {"a": 1, "b": 2, "c": 3} and d != {"a": 1}
    assert set(d.keys()) == {"a", "b", "c"} and sorted(d.values()) == [1, 2, 3]
    assert d.items() == [("a", 1), ("b", 2), ("c", 3)]
    assert d.popitem() == ("a", 1)
    assert d.pop("b") == 2 and d.pop("zz", None) is None
    assert d.setdefault("c", 9) == 3 and d.setdefault("d", 4) == 4
    assert d.get("nope") is None and d.get("nope", 5) == 5
    with pytest.raises(KeyError):
        d["nope"]
    with pytest.raises(KeyError):
        del d["nope"]
    with pytest.raises(TypeError, match="update expected at most 1 argument"):
        d.update({}, {})
    with pytest.raises(TypeError):
        hash(d)
    d.clear()
    assert len(d) == 0 and not d
    with pytest.raises(KeyError):
        d.popitem()


def test_iteration_is_a_snapshot(client):
    d = InMemoryRedisDict(key="k", redis=client)
    d.update(a=1, b=2)
    for key in d:
        d[key + "x"] = 0
        del d[key]
    assert sorted(d) == ["ax", "bx"]
    lst = InMemoryRedisList(key="k", redis=client)
    lst.extend([1, 2])
    for item in lst:
        lst.append(item)
    assert lst.to_list() == [1, 2, 1, 2]


def test_sequence_api(client):
    lst = InMemoryRedisList(key="k", redis=client)
    assert isinstance(lst, MutableSequence)
    lst.extend([1, 2, 3])
    lst.insert(0, 0)
    assert lst[0] == 0 and lst[-1] == 3 and lst[1:3] == [1, 2]
    lst[1] = 10
    del lst[2]
    assert lst.to_list() == [0, 10, 3]
    assert lst.pop() == 3 and lst.pop(0) == 0
    assert lst.index(10) == 0 and lst.count(10) == 1 and 10 in lst
    lst.remove(10)
    with pytest.raises(ValueError, match=r"list.remove\(x\): x not in list"):
        lst.remove(10)
    with pytest.raises(IndexError):
        lst[5]
    assert lst == [] and len(lst) == 0


def test_pydantic_validates_a_dict_object(client):
    class Model(pydantic.BaseModel):
        name: str
        count: int

    d = InMemoryRedisDict(key="k", redis=client)
    d.update(name="x", count=3)
    assert Model.model_validate(d) == Model(name="x", count=3)


def test_client_matches_madsci_rules():
    c = InMemoryRedisClient(host="ignored")
    assert c.ping() is True and c.get("x") is None
    assert c.incr("n") == 1 and c.incr("n", 5) == 6 and c.get("n") == "6"
    c.set("s", None)
    assert c.get("s") == "None"
    c.set("u", " 1_000 ")
    assert c.incr("u") == 1001
    c.set("f", "1.5")
    with pytest.raises(ValueError, match="invalid literal"):
        c.incr("f")
    assert c.incr("big", 2**70) == 2**70 and c.incr("big") == 2**70 + 1
    with pytest.raises(TypeError):
        InMemoryRedisClient(1)


def test_incr_is_atomic_across_threads(client):
    threads = [
        threading.Thread(target=lambda: [client.incr("n") for _ in range(200)]) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.get("n") == "800"


def test_lock_is_reentrant_per_thread_and_shared_by_key():
    clear_all_registries()
    a, b = InMemoryRedlock(key="L"), InMemoryRedlock(key="L", masters={1}, auto_release_time=5)
    assert "L" in InMemoryRedlock._locks
    assert a.acquire() is True and b.acquire() is True  # same thread: reentrant
    assert a.locked() is False  # held by us, not by another thread
    assert run_in_thread(a.locked) is True
    with pytest.raises(RuntimeError, match="cannot release un-acquired lock"):
        run_in_thread(b.release)
    a.release()
    b.release()
    with pytest.raises(RuntimeError):
        a.release()
    assert run_in_thread(a.locked) is False
    with a as entered:
        assert entered is a
    clear_all_registries()
    assert "L" not in InMemoryRedlock._locks


def test_waiting_for_the_lock_releases_the_gil():
    lock = InMemoryRedlock(key="gil")
    lock.acquire()
    got = threading.Event()

    def waiter():
        with InMemoryRedlock(key="gil"):
            got.set()

    t = threading.Thread(target=waiter)
    t.start()
    # The waiter is parked in Rust; this thread keeps running Python code.
    total = sum(range(100_000))
    assert total > 0 and not got.is_set()
    lock.release()
    t.join()
    assert got.is_set()


def test_no_deadlock_when_eq_or_hash_reenters_the_structure(client):
    d = InMemoryRedisDict(key="re", redis=client)
    lst = InMemoryRedisList(key="re", redis=client)

    busy = threading.local()

    class Nosy:
        def __hash__(self):
            return len(d) * 0 + 1

        def __eq__(self, other):
            if not getattr(busy, "on", False):
                busy.on = True
                try:
                    d.get("probe")
                    _ = len(lst), list(lst), "x" in lst
                finally:
                    busy.on = False
            return other is self

        def __del__(self):
            _ = len(d), len(lst)

    k1, k2 = Nosy(), Nosy()
    d[k1] = 1
    d[k2] = 2  # same hash: the dict calls __eq__, which reads d again
    assert d[k2] == 2 and k1 in d
    lst.extend([k1, k2])
    lst.remove(k2)
    assert k2 not in lst and lst.count(k1) == 1
    d.update({k1: 3})
    del k1, k2
    d.clear()
    lst.pop()
    clear_all_registries()


def test_concurrent_writers_lose_nothing(client):
    d = InMemoryRedisDict(key="conc", redis=client)
    lst = InMemoryRedisList(key="conc", redis=client)

    def writer(prefix):
        for i in range(300):
            d[f"{prefix}{i}"] = i
            lst.append(i)

    threads = [threading.Thread(target=writer, args=(p,)) for p in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(d) == 1200 and len(lst) == 1200


def test_handler_without_client_clears_and_with_client_shares():
    first = InMemoryCacheHandler()
    first.create_dict("x")["a"] = 1
    shared = InMemoryCacheHandler(first._client)
    assert shared.create_dict("x")["a"] == 1
    InMemoryCacheHandler()
    assert len(first.create_dict("x")) == 0
    h = InMemoryCacheHandler()
    assert isinstance(h, CacheHandler)
    assert h.ping() is True and h.close() is None
    h.set("k", 5)
    assert h.get("k") == "5" and h.incr("k", 2) == 7
    lock = h.create_lock("L", 5)
    assert isinstance(lock, InMemoryRedlock)
    assert isinstance(h.create_list("l"), InMemoryRedisList)


def test_handler_accepts_a_foreign_client():
    class Client:
        def __init__(self):
            self.calls = []

        def incr(self, key, amount=1):
            self.calls.append(("incr", key, amount))
            return 42

        def get(self, key):
            return "v"

        def set(self, key, value):
            self.calls.append(("set", key, value))

    foreign = Client()
    h = InMemoryCacheHandler(foreign)
    assert h.incr("n", 3) == 42 and h.get("k") == "v"
    h.set("k", 1)
    assert foreign.calls == [("incr", "n", 3), ("set", "k", 1)]
    h.create_dict("d")["a"] = 1
    assert InMemoryRedisDict(key="d", redis=foreign)["a"] == 1


# madsci's list has only append/remove/iteration/len/in; the rest of the
# sequence API must behave as a plain Python list does.
list_ops = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 3)),
    st.tuples(st.just("extend"), st.lists(st.integers(0, 3), max_size=3)),
    st.tuples(st.just("insert"), st.tuples(st.integers(-5, 5), st.integers(0, 3))),
    st.tuples(st.just("pop"), st.integers(-4, 4)),
    st.tuples(st.just("remove"), st.integers(0, 3)),
    st.tuples(st.just("index"), st.integers(0, 3)),
    st.tuples(st.just("count"), st.integers(0, 3)),
    st.tuples(st.just("getitem"), st.one_of(st.integers(-4, 4), st.slices(5))),
    st.tuples(st.just("setitem"), st.tuples(st.integers(-4, 4), st.integers(0, 3))),
    st.tuples(
        st.just("setslice"), st.tuples(st.slices(5), st.lists(st.integers(0, 3), max_size=3))
    ),
    st.tuples(st.just("delitem"), st.one_of(st.integers(-4, 4), st.slices(5))),
)


def apply(target, op, arg):
    if op == "getitem":
        return target[arg]
    if op == "setitem":
        target[arg[0]] = arg[1]
        return None
    if op == "setslice":
        target[arg[0]] = arg[1]
        return None
    if op == "delitem":
        del target[arg]
        return None
    if op == "insert":
        return target.insert(*arg)
    return getattr(target, op)(arg)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(list_ops, max_size=12))
def test_list_sequence_api_matches_a_python_list(ops):
    clear_all_registries()
    ours = InMemoryRedisList(key="seq", redis=InMemoryRedisClient())
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


@pytest.mark.parametrize("strict", [False, True])
def test_a_blocked_acquire_can_be_interrupted(strict):
    import _thread

    handler = InMemoryCacheHandler(strict=strict)
    held, finish = threading.Event(), threading.Event()

    def hold():
        with handler.create_lock("intr"):
            held.set()
            finish.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    threading.Timer(0.2, _thread.interrupt_main).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            handler.create_lock("intr").acquire()
    finally:
        finish.set()
        holder.join()
