"""Strict memory against a real server, by hypothesis: the same random
operations on ``InMemoryCacheHandler(strict=True)`` and on madsci's
``PyCacheHandler`` (pottery) talking to a private valkey give the same
observations. This is strict mode's promise: what passes here passes there."""

from __future__ import annotations

import warnings

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from madsci_cache_rs import InMemoryCacheHandler, _install
from madsci_cache_rs.testing import PrivateServer, ServerUnavailable

pytest.importorskip("pottery")
madsci_ch = pytest.importorskip("madsci.common.db_handlers.cache_handler")

#: madsci's own server handler, even if a plugin swapped ours in.
REFERENCE = _install._originals.get(
    ("madsci.common.db_handlers.cache_handler", "PyCacheHandler"), madsci_ch.PyCacheHandler
)

keys = st.one_of(
    st.sampled_from(["a", "b", "1", ""]),
    st.integers(-1, 2),
    st.sampled_from([None, True, 1.5, memoryview(b"a")]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=3), st.just(1.0)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=2), st.dictionaries(st.text(max_size=2), inner, max_size=2)
    ),
    max_leaves=4,
)
values = st.one_of(json_values, st.sampled_from([(1, 2), {1, 2}, object, float("nan")]))
set_values = st.one_of(
    st.integers(-5, 5),
    st.sampled_from(["7", "x", " 3", "-0", "01", 2.5, None, True, b"9", memoryview(b"8")]),
)


def observe(call):
    try:
        result = call()
    except Exception as exc:
        kind = type(exc).__name__
        if kind in {"ResponseError", "CacheResponseError"}:
            kind = "server error"
        if kind == "DataError":
            kind = "TypeError"
        return ("error", kind)
    return ("ok", repr(result))  # repr: NaN is not equal to itself


@pytest.fixture(scope="module")
def server():
    try:
        srv = PrivateServer()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    with srv:
        yield srv


def test_strict_memory_behaves_like_the_server(server):
    reference = REFERENCE.from_settings(host=server.host, port=server.port)

    class SameAsServer(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            reference._client.flushdb()
            self.handlers = {"server": reference, "strict": InMemoryCacheHandler(strict=True)}
            self.dicts = {n: h.create_dict("hd") for n, h in self.handlers.items()}
            self.lists = {n: h.create_list("hl") for n, h in self.handlers.items()}

        def both(self, op, objects):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                seen = {name: observe(lambda o=o: op(o)) for name, o in objects.items()}
            assert seen["strict"] == seen["server"], seen
            return seen["strict"]

        @rule(k=keys, v=values)
        def setitem(self, k, v):
            self.both(lambda d: d.__setitem__(k, v), self.dicts)

        @rule(k=keys)
        def getitem(self, k):
            self.both(lambda d: d[k], self.dicts)

        @rule(k=keys)
        def delitem(self, k):
            self.both(lambda d: d.__delitem__(k), self.dicts)

        @rule(k=st.one_of(keys, st.just((1,))))
        def contains(self, k):
            self.both(lambda d: k in d, self.dicts)

        @rule(k=keys, v=json_values)
        def get_default(self, k, v):
            self.both(lambda d: d.get(k, v), self.dicts)

        @rule(items=st.dictionaries(st.text(max_size=2), values, max_size=3))
        def update(self, items):
            self.both(lambda d: d.update(items), self.dicts)

        @rule(k=keys)
        def pop(self, k):
            self.both(lambda d: d.pop(k, "dflt"), self.dicts)

        @rule(k=keys, v=json_values)
        def setdefault(self, k, v):
            self.both(lambda d: d.setdefault(k, v), self.dicts)

        @rule(v=values)
        def append(self, v):
            self.both(lambda lst: lst.append(v), self.lists)

        # Not empty: pottery sends a bare RPUSH for extend([]) and the server
        # refuses it; strict mode (like this package's server family) does nothing.
        @rule(vs=st.lists(values, min_size=1, max_size=3))
        def extend(self, vs):
            self.both(lambda lst: lst.extend(vs), self.lists)

        @rule(v=json_values)
        def remove(self, v):
            self.both(lambda lst: lst.remove(v), self.lists)

        @rule(v=json_values)
        def list_contains(self, v):
            self.both(lambda lst: v in lst, self.lists)

        @rule(i=st.integers(-3, 3))
        def list_index(self, i):
            self.both(lambda lst: lst[i], self.lists)

        @rule(i=st.sampled_from([None, 0, -1]))
        def list_pop(self, i):
            self.both(lambda lst: lst.pop() if i is None else lst.pop(i), self.lists)

        # The rest of MutableSequence: pottery's come from the ABC's mixins
        # (clear is an UNLINK), strict mode's are native.
        @rule()
        def list_clear(self):
            self.both(lambda lst: lst.clear(), self.lists)

        @rule()
        def list_reverse(self):
            self.both(lambda lst: lst.reverse(), self.lists)

        @rule()
        def list_reversed(self):
            self.both(lambda lst: list(reversed(lst)), self.lists)

        @rule(vs=st.lists(values, min_size=1, max_size=2))
        def list_iadd(self, vs):
            self.both(lambda lst: lst.__iadd__(vs) is lst, self.lists)

        @rule(k=st.sampled_from(["s", "n", "hd", "hl"]), v=set_values)
        def set(self, k, v):
            self.both(lambda h: h.set(k, v), self.handlers)

        @rule(k=st.sampled_from(["s", "n", "hd", "hl", "missing"]))
        def get(self, k):
            self.both(lambda h: h.get(k), self.handlers)

        @rule(k=st.sampled_from(["s", "n", "hd", "fresh"]), amount=st.integers(-2, 2))
        def incr(self, k, amount):
            self.both(lambda h: h.incr(k, amount), self.handlers)

        @invariant()
        def same_contents(self):
            self.both(lambda d: (len(d), sorted(d.to_dict().items(), key=repr)), self.dicts)
            self.both(lambda lst: (len(lst), lst.to_list()), self.lists)

    SameAsServer.TestCase.settings = settings(
        max_examples=40,
        stateful_step_count=15,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    try:
        SameAsServer.TestCase().runTest()
    finally:
        reference.close()


def test_clear_deletes_a_key_of_the_other_kind_as_the_server_does(server):
    """``clear()`` is a ``DEL``: on a key holding the other structure it deletes
    it (strict mode raised WRONGTYPE for a dict's clear before)."""
    reference = REFERENCE.from_settings(host=server.host, port=server.port)
    reference._client.flushdb()
    seen = {}
    for name, handler in {"server": reference, "strict": InMemoryCacheHandler(strict=True)}.items():
        handler.create_list("as-list").append(1)
        handler.create_dict("as-dict")["a"] = 1
        cleared_dict = observe(lambda h=handler: h.create_dict("as-list").clear())
        cleared_list = observe(lambda h=handler: h.create_list("as-dict").clear())
        left = (len(handler.create_list("as-list")), len(handler.create_dict("as-dict")))
        seen[name] = (cleared_dict, cleared_list, left)
    assert seen["strict"] == seen["server"] == (("ok", "None"), ("ok", "None"), (0, 0)), seen
