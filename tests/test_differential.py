"""Differential tests: madsci's own in-memory classes and ours, driven by the
same random operations (hypothesis stateful testing), give the same results."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import madsci_cache_rs
from madsci_cache_rs import _install

inmemory_redis = pytest.importorskip("madsci.common.local_backends.inmemory_redis")


def madsci_original(name: str):
    """madsci's class even if install() swapped ours in."""
    key = ("madsci.common.local_backends.inmemory_redis", name)
    return _install._originals.get(key, getattr(inmemory_redis, name))


IMPLS = {
    "madsci": {
        n: madsci_original(n)
        for n in (
            "InMemoryRedisClient",
            "InMemoryRedisDict",
            "InMemoryRedisList",
            "InMemoryRedlock",
        )
    },
    "ours": {
        n: getattr(madsci_cache_rs, n)
        for n in (
            "InMemoryRedisClient",
            "InMemoryRedisDict",
            "InMemoryRedisList",
            "InMemoryRedlock",
        )
    },
}
assert IMPLS["madsci"]["InMemoryRedisDict"] is not IMPLS["ours"]["InMemoryRedisDict"]

# Keys mix types Python considers equal (1, 1.0, True) to exercise dict semantics.
keys = st.one_of(
    st.sampled_from(["a", "b", "c", "1"]), st.integers(-2, 3), st.sampled_from([1.0, True, None])
)
values = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=3),
    st.floats(allow_nan=False),
)
client_values = st.one_of(
    st.integers(-5, 5), st.sampled_from(["7", " 8 ", "1_0", "x", "1.5", "", "-3"]), st.none()
)


def outcome(fn):
    try:
        return ("ok", fn())
    except Exception as exc:
        return ("error", type(exc).__name__, str(exc))


class SameBehaviour(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        # madsci keys stores by id(client): a new client can reuse a dead one's
        # address and inherit its data, so every example starts from empty registries.
        madsci_original("clear_all_registries")()
        madsci_cache_rs.clear_all_registries()
        self.sides = {}
        for side, cls in IMPLS.items():
            client = cls["InMemoryRedisClient"]()
            self.sides[side] = {
                "client": client,
                "dicts": [
                    cls["InMemoryRedisDict"](key="d", redis=client),
                    cls["InMemoryRedisDict"](key="d", redis=client),
                ],
                "list": cls["InMemoryRedisList"](key="l", redis=client),
            }

    def both(self, op):
        results = {side: outcome(lambda s=s: op(s)) for side, s in self.sides.items()}
        assert results["ours"] == results["madsci"], results
        return results["ours"]

    @rule(which=st.integers(0, 1), k=keys, v=values)
    def setitem(self, which, k, v):
        self.both(lambda s: s["dicts"][which].__setitem__(k, v))

    @rule(which=st.integers(0, 1), k=keys)
    def getitem(self, which, k):
        self.both(lambda s: s["dicts"][which][k])

    @rule(k=keys)
    def delitem(self, k):
        self.both(lambda s: s["dicts"][0].__delitem__(k))

    @rule(k=keys, v=values)
    def get_with_default(self, k, v):
        self.both(lambda s: s["dicts"][1].get(k, v))

    @rule(k=keys)
    def contains(self, k):
        self.both(lambda s: k in s["dicts"][0])

    @rule(
        pairs=st.lists(st.tuples(keys, values), max_size=3),
        kw=st.dictionaries(st.sampled_from(["a", "z"]), values, max_size=2),
    )
    def update(self, pairs, kw):
        self.both(lambda s: s["dicts"][0].update(pairs, **kw))

    @rule(k=keys, v=values, with_default=st.booleans())
    def pop(self, k, v, with_default):
        self.both(lambda s: s["dicts"][1].pop(k, v) if with_default else s["dicts"][1].pop(k))

    @rule()
    def popitem(self):
        self.both(lambda s: s["dicts"][0].popitem())

    @rule(k=keys, v=values)
    def setdefault(self, k, v):
        self.both(lambda s: s["dicts"][0].setdefault(k, v))

    @precondition(lambda self: True)
    @rule()
    def clear_sometimes(self):
        self.both(lambda s: s["dicts"][1].clear())

    @rule(other=st.dictionaries(keys, values, max_size=3))
    def equality(self, other):
        self.both(
            lambda s: (
                s["dicts"][0] == other,
                s["dicts"][0] != other,
                s["dicts"][0] == s["dicts"][1],
            )
        )

    @rule(v=values)
    def append(self, v):
        self.both(lambda s: s["list"].append(v))

    @rule(v=values)
    def remove(self, v):
        self.both(lambda s: s["list"].remove(v))

    @rule(v=values)
    def list_contains(self, v):
        self.both(lambda s: v in s["list"])

    @rule(k=st.sampled_from(["n", "m"]), v=client_values)
    def client_set(self, k, v):
        self.both(lambda s: s["client"].set(k, v))

    @rule(
        k=st.sampled_from(["n", "m", "fresh"]), amount=st.one_of(st.integers(-3, 3), st.just(2**65))
    )
    def client_incr(self, k, amount):
        self.both(lambda s: s["client"].incr(k, amount))

    @rule(k=st.sampled_from(["n", "m", "fresh"]))
    def client_get(self, k):
        self.both(lambda s: s["client"].get(k))

    @invariant()
    def same_contents(self):
        self.both(
            lambda s: (
                s["dicts"][0].items(),
                s["dicts"][0].to_dict(),
                list(s["dicts"][1]),
                len(s["dicts"][1]),
            )
        )
        self.both(lambda s: (list(s["list"]), len(s["list"])))
        self.both(
            lambda s: (
                sorted(map(repr, s["dicts"][0].keys())),
                sorted(map(repr, s["dicts"][0].values())),
            )
        )


TestSameBehaviour = SameBehaviour.TestCase
TestSameBehaviour.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


class SameLockBehaviour(RuleBasedStateMachine):
    """Two worker threads per side call the lock; a model of the owner keeps
    the machine from calling a blocking ``acquire`` that would never return."""

    def __init__(self):
        super().__init__()
        madsci_original("InMemoryRedlock")._locks.clear()
        madsci_cache_rs.clear_all_registries()
        self.workers = [ThreadPoolExecutor(1) for _ in range(2)]
        self.locks = {
            side: [cls["InMemoryRedlock"](key="L"), cls["InMemoryRedlock"](key="L")]
            for side, cls in IMPLS.items()
        }
        self.owner: int | None = None
        self.depth = 0

    def both(self, thread, op):
        results = {
            side: self.workers[thread].submit(lambda lk=lk: outcome(lambda: op(lk))).result()
            for side, lk in self.locks.items()
        }
        assert results["ours"] == results["madsci"], results
        return results["ours"]

    @precondition(lambda self: True)
    @rule(thread=st.integers(0, 1), which=st.integers(0, 1))
    def acquire(self, thread, which):
        if self.owner not in (None, thread):
            return  # would block forever on both sides
        self.both(thread, lambda lk: lk[which].acquire())
        self.owner, self.depth = thread, self.depth + 1

    @rule(thread=st.integers(0, 1), which=st.integers(0, 1))
    def release(self, thread, which):
        result = self.both(thread, lambda lk: lk[which].release())
        if result[0] == "ok":
            self.depth -= 1
            if self.depth == 0:
                self.owner = None

    @rule(thread=st.integers(0, 1), which=st.integers(0, 1))
    def locked(self, thread, which):
        self.both(thread, lambda lk: lk[which].locked())

    def teardown(self):
        # Release what the model says is held, so the next example starts free.
        while self.depth:
            for side in self.locks.values():
                self.workers[self.owner].submit(side[0].release).result()
            self.depth -= 1
        for w in self.workers:
            w.shutdown()


TestSameLockBehaviour = SameLockBehaviour.TestCase
TestSameLockBehaviour.settings = settings(max_examples=60, stateful_step_count=20, deadline=None)


def test_lock_contention_hands_over_on_both_sides():
    for cls in (IMPLS["madsci"]["InMemoryRedlock"], IMPLS["ours"]["InMemoryRedlock"]):
        lock = cls(key="contend")
        counter = {"n": 0, "inside": 0, "overlap": False}

        def work(lock=lock, counter=counter):
            for _ in range(200):
                with lock:
                    counter["inside"] += 1
                    counter["overlap"] |= counter["inside"] > 1
                    counter["n"] += 1
                    counter["inside"] -= 1

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert counter == {"n": 800, "inside": 0, "overlap": False}
