"""The opt-in client-side cache (``client_cache=True``): repeated reads are
answered from memory, our own writes are seen at once, and another client's
writes are seen by our next round trip (the server's invalidation arrives
ahead of that reply), on Valkey and on Redis."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import pytest
import redis
from helpers import in_threads, round_trips
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from madsci_cache_rs import PyCacheHandler
from madsci_cache_rs.testing import LoopbackProxy, PrivateServer

ENV = "MADSCI_CACHE_RS_CLIENT_CACHE"


@pytest.fixture
def cached(server: PrivateServer, raw: redis.Redis):
    h = PyCacheHandler.from_url(server.url, client_cache=True)
    h.ping()  # the tracking connection is open before anything is counted
    yield h
    h.close()


def test_off_unless_asked_by_option_or_environment(server, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    plain = PyCacheHandler.from_url(server.url)
    assert plain.client_cache is False and plain.client_cache_hits is None
    assert "client_cache" not in repr(plain)
    monkeypatch.setenv(ENV, "1")
    on = PyCacheHandler.from_settings(server.host, server.port)
    assert on.client_cache is True and on.client_cache_hits == 0
    assert repr(on).endswith("client_cache=True)")
    assert PyCacheHandler(server.url).client_cache is True
    assert PyCacheHandler.from_url(server.url, client_cache=False).client_cache is False
    monkeypatch.setenv(ENV, "sometimes")
    with pytest.raises(ValueError, match=ENV):
        PyCacheHandler.from_url(server.url)


def test_usage_is_read_and_cleared(cached, raw, server):
    assert PyCacheHandler.from_url(server.url).client_cache_usage is None
    assert cached.client_cache_usage == 0
    raw.mset({f"k{i}": "x" * 100 for i in range(200)})
    for i in range(200):
        assert cached.get(f"k{i}") == "x" * 100
    held = cached.client_cache_usage
    # the payload, and the bookkeeping an honest estimate adds to it
    assert 200 * 100 < held < 200 * 400, held
    hits = cached.client_cache_hits
    assert cached.get("k7") == "x" * 100 and cached.client_cache_hits == hits + 1
    cached.client_cache_clear()
    assert cached.client_cache_usage == 0
    calls = round_trips(raw, lambda: cached.get("k7"))
    assert calls.get("get") == 1 and cached.client_cache_hits == hits + 1  # asked the server


def test_keys_changed_by_others_leave_nothing_behind(cached, raw):
    """A key read once and then changed elsewhere is forgotten entirely:
    thousands of distinct keys (one per workflow) must not pile up."""
    for i in range(2000):
        raw.set(f"w{i}", "v")
        assert cached.get(f"w{i}") == "v"
        raw.delete(f"w{i}")
    deadline = time.monotonic() + 10
    while cached.client_cache_usage >= 1000 and time.monotonic() < deadline:
        cached.get("w0")  # reading drains the invalidations
        time.sleep(0.01)
    assert cached.client_cache_usage < 1000, cached.client_cache_usage


def test_repeated_reads_cost_one_round_trip(cached, raw):
    d = cached.create_dict("d")
    d.update({"a": 1, "b": [1, 2]})
    lst = cached.create_list("l")
    lst.extend(["x", "y", "z"])
    cached.set("s", "text")

    def reads() -> None:
        for _ in range(20):
            assert d.to_dict() == {"a": 1, "b": [1, 2]}
            assert d["a"] == 1 and d.get("b") == [1, 2] and d.get("c") is None
            assert "b" in d and len(d) == 2 and sorted(d) == ["a", "b"]
            assert list(lst) == ["x", "y", "z"] and len(lst) == 3
            assert lst[-1] == "z" and "y" in lst
            assert cached.get("s") == "text"

    hits = cached.client_cache_hits
    calls = round_trips(raw, reads)
    # The first read of each key goes out; every other read is answered from memory.
    # Each fill asks for its key's expiry in the same round trip (PTTL).
    assert calls == {"hgetall": 1, "lrange": 1, "get": 1, "pttl": 3}
    # 14 reads a pass (list() asks len() first), all but the first three hits.
    assert cached.client_cache_hits - hits == 20 * 14 - 3
    # A slice runs as a script that reads on the server: still right, not cached.
    assert lst[0:2] == ["x", "y"] and lst[::-1] == ["z", "y", "x"]


def test_our_own_writes_are_seen_at_once(cached, raw):
    d, lst = cached.create_dict("d"), cached.create_list("l")
    d["a"] = 1
    lst.append(1)
    cached.set("s", "1")
    for i in range(2, 30):
        assert d.to_dict()["a"] == i - 1 and list(lst)[-1] == i - 1
        assert cached.get("s") == str(i - 1)
        d["a"] = i
        assert d["a"] == i
        lst.append(i)
        assert lst[-1] == i and len(lst) == i
        assert cached.incr("s") == i
    d.pop("a")
    assert "a" not in d and d.to_dict() == {}
    lst.clear()
    assert list(lst) == []
    assert raw.hlen("d") == 0 and raw.llen("l") == 0


def test_another_clients_writes_are_seen_by_our_next_round_trip(cached, raw):
    d, lst = cached.create_dict("d"), cached.create_list("l")
    d["a"] = 1
    lst.append("x")
    cached.set("s", "old")
    assert (d.to_dict(), list(lst), cached.get("s")) == ({"a": 1}, ["x"], "old")

    raw.hset("d", '"a"', "2")
    raw.rpush("l", '"y"')
    raw.set("s", "new")
    assert cached.ping() is True  # its reply comes after the invalidations
    assert (d.to_dict(), list(lst), cached.get("s")) == ({"a": 2}, ["x", "y"], "new")

    raw.flushall()
    cached.ping()
    assert (d.to_dict(), list(lst), cached.get("s")) == ({}, [], None)


def test_pottery_writes_are_seen_too(server, cached):
    from madsci.common.db_handlers.cache_handler import (  # type: ignore[import-untyped]
        PyCacheHandler as MadsciHandler,
    )

    theirs = MadsciHandler.from_settings(host=server.host, port=server.port)
    try:
        ours = cached.create_dict("shared")
        ours["k"] = {"v": 1}
        assert ours.to_dict() == {"k": {"v": 1}}
        theirs.create_dict("shared")["k"] = {"v": 2}
        cached.ping()
        assert ours["k"] == {"v": 2}
    finally:
        theirs.close()


def test_invalidations_that_arrived_apply_without_a_round_trip(cached, raw):
    d = cached.create_dict("d")
    d["a"] = 1
    assert d.to_dict() == {"a": 1}
    raw.hset("d", '"a"', "2")
    # No command of ours in between: each read first takes in what has
    # arrived. Loopback delivers within microseconds; the deadline is slack.
    deadline = time.monotonic() + 10
    while d["a"] != 2:
        assert time.monotonic() < deadline, "the invalidation never arrived"
        time.sleep(0.001)


def test_a_restarted_server_empties_the_cache():
    with PrivateServer("valkey") as srv:
        h = PyCacheHandler.from_url(srv.url, client_cache=True)
        d = h.create_dict("d")
        d["a"] = 1
        h.set("s", "v")
        assert d.to_dict() == {"a": 1} and h.get("s") == "v"
        srv.kill()
        srv.start()  # same port, empty
        assert d.to_dict() == {} and h.get("s") is None
        d["b"] = 2
        assert d.to_dict() == {"b": 2}


def test_a_read_racing_our_write_never_leaves_the_old_value(cached):
    """One thread keeps filling the cache with whole-hash reads while
    another writes and reads back: every read-back sees its write."""
    d = cached.create_dict("d")
    d["x"] = 0
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                d.to_dict()
                d.get("x")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for th in threads:
        th.start()
    try:
        for i in range(1, 400):
            d["x"] = i
            assert d["x"] == i
            assert d.to_dict()["x"] == i
    finally:
        stop.set()
        for th in threads:
            th.join()
    assert errors == []


def test_eight_threads_share_one_cached_handler(cached, raw):
    d = cached.create_dict("d")

    def work(t: int) -> None:
        for i in range(100):
            assert cached.incr(f"n{t}") == i + 1
            d[f"{t}"] = i
            assert d[f"{t}"] == i
            assert d.to_dict()[f"{t}"] == i
            assert cached.get(f"n{t}") == str(i + 1)

    assert in_threads(work, 8) == []
    assert [raw.get(f"n{t}") for t in range(8)] == [b"100"] * 8
    assert cached.create_dict("d").to_dict() == {str(t): 99 for t in range(8)}


values = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.lists(st.integers(0, 3), max_size=3))
keys = st.sampled_from(["a", "b", "c"])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("dset"), keys, values),
        st.tuples(st.just("ddel"), keys),
        st.tuples(st.just("dget"), keys),
        st.tuples(st.just("dall")),
        st.tuples(st.just("ladd"), values),
        st.tuples(st.just("lall")),
        st.tuples(st.just("lidx"), st.integers(-3, 3)),
        st.tuples(st.just("incr"), keys),
        st.tuples(st.just("get"), keys),
        st.tuples(st.just("other"), keys, values),  # another client writes
    ),
    max_size=30,
)


def _apply(h: PyCacheHandler, prefix: str, op: tuple, raw: redis.Redis) -> object:
    d, lst = h.create_dict(f"{prefix}:d"), h.create_list(f"{prefix}:l")
    kind, *args = op
    try:
        if kind == "dset":
            d[args[0]] = args[1]
        elif kind == "ddel":
            return d.pop(args[0], "missing")
        elif kind == "dget":
            return d.get(args[0])
        elif kind == "dall":
            return d.to_dict()
        elif kind == "ladd":
            lst.append(args[0])
        elif kind == "lall":
            return list(lst)
        elif kind == "lidx":
            return lst[args[0]]
        elif kind == "incr":
            return h.incr(f"{prefix}:n:{args[0]}")
        elif kind == "get":
            return h.get(f"{prefix}:n:{args[0]}")
        elif kind == "other":
            raw.hset(f"{prefix}:d", f'"{args[0]}"', str(len(str(args[1]))))
            h.ping()  # the point after which their write must be visible
    except IndexError:
        return "IndexError"
    return None


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_cached_and_uncached_handlers_answer_alike(server, raw, ops):
    raw.flushall()
    cached_h = PyCacheHandler.from_url(server.url, client_cache=True)
    plain_h = PyCacheHandler.from_url(server.url)
    try:
        for op in ops:
            assert _apply(cached_h, "c", op, raw) == _apply(plain_h, "p", op, raw), op
    finally:
        cached_h.close()
        plain_h.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_trust_its_parents_cache(cached, raw):
    d = cached.create_dict("d")
    d["a"] = 1
    assert d.to_dict() == {"a": 1}  # cached in the parent
    go_r, go_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: wait until the value changed, then read it
        try:
            os.read(go_r, 1)
            os.write(report_w, repr(d.to_dict()).encode())
        except BaseException as exc:
            os.write(report_w, repr(exc).encode()[:500])
        finally:
            os._exit(0)
    try:
        raw.hset("d", '"a"', "2")
        os.write(go_w, b"x")
        child_saw = os.read(report_r, 1000)
    finally:
        os.waitpid(pid, 0)
    assert child_saw == b"{'a': 2}"
    cached.ping()
    assert d.to_dict() == {"a": 2}


def test_a_hash_read_whole_before_is_fetched_whole_for_one_field(cached, raw):
    """madsci reads a workflow by id, then all of them, then by id again:
    once a hash has been read whole, a field read fetches it whole."""
    d = cached.create_dict("d")
    d.update({"a": 1, "b": 2})
    assert round_trips(raw, lambda: d["a"]) == {"hget": 1, "pttl": 1}  # no hint yet
    assert d.to_dict() == {"a": 1, "b": 2}
    raw.hset("d", '"b"', "3")
    cached.ping()
    calls = round_trips(raw, lambda: (d["a"], d["b"], d.get("c"), "b" in d, len(d)))
    assert calls == {"hgetall": 1, "pttl": 1}
    assert (d["a"], d["b"], d.get("c")) == (1, 3, None)
    raw.set("d", "now a string")
    cached.ping()
    with pytest.raises(Exception, match="WRONGTYPE"):
        d["a"]


def test_a_write_to_a_hash_held_whole_updates_the_copy(cached, raw):
    """HSET goes out inside MULTI/EXEC with an HLEN, which tracks the key
    again; the copy takes the write, and later writes by others still reach us."""
    d = cached.create_dict("d")
    d.update({"a": 1, "b": 2})
    assert d.to_dict() == {"a": 1, "b": 2}
    calls = round_trips(raw, lambda: d.__setitem__("c", [3]))
    assert calls == {"multi": 1, "evalsha": 1, "hset": 1, "hlen": 1, "exec": 1}
    assert round_trips(raw, lambda: (d.to_dict(), d["c"], len(d))) == {}
    assert d.to_dict() == {"a": 1, "b": 2, "c": [3]}
    assert raw.hget("d", '"c"') == b"[3]"
    raw.hset("d", '"a"', "10")  # the key is tracked again: we are told
    cached.ping()
    assert d.to_dict() == {"a": 10, "b": 2, "c": [3]}
    # Another thread's write through the pool drops the copy at once.
    d.to_dict()
    barrier = threading.Barrier(2)
    other = threading.Thread(target=lambda: (barrier.wait(), d.__setitem__("b", 20)))
    other.start()
    barrier.wait()
    other.join()
    assert d["b"] == 20


class NoTrackingProxy(LoopbackProxy):
    """A loopback proxy for a server that predates RESP3: it answers the
    first write of each connection (our HELLO 3 + CLIENT TRACKING set-up)
    with two errors, as Redis 5 does, and forwards everything else."""

    def __init__(self, upstream_port: int) -> None:
        self.refused = 0
        super().__init__(upstream_port)

    def serve(self, client: socket.socket, upstream: socket.socket) -> None:
        # The connect handshake (PING, CLIENT SETINFO) goes through; the
        # tracking set-up that follows it is refused.
        refused = False
        while data := client.recv(65536):
            if not refused and b"HELLO" in data:
                refused = True
                self.refused += 1
                client.sendall(b"-ERR unknown command 'HELLO'\r\n-ERR unknown command 'CLIENT'\r\n")
                continue
            upstream.sendall(data)
            client.sendall(upstream.recv(65536))


def test_a_server_without_tracking_is_used_without_the_cache(server, raw, caplog):
    proxy = NoTrackingProxy(server.port)
    caplog.set_level(logging.WARNING, logger="madsci_cache_rs")
    h = PyCacheHandler.from_settings("127.0.0.1", proxy.port, client_cache=True)
    try:
        d = h.create_dict("d")
        d["a"] = 1
        for _ in range(3):
            assert d.to_dict() == {"a": 1}
        raw.hset("d", '"a"', "2")
        assert d["a"] == 2
        assert h.client_cache_hits == 0 and proxy.refused == 1
        assert any("cannot track keys" in r.getMessage() for r in caplog.records)
    finally:
        h.close()
        proxy.close()


def test_a_demoted_server_is_waited_out_as_without_the_cache():
    """A server turned into a replica answers READONLY on the tracking
    connection too: the cache starts over and the write waits, as it does
    through the pool, until the server takes writes again."""
    with PrivateServer("valkey") as primary, PrivateServer("valkey") as other:
        h = PyCacheHandler.from_url(primary.url, client_cache=True, retry_window=20)
        try:
            h.set("s", "1")
            assert h.get("s") == "1" and h.get("s") == "1"
            assert h.client_cache_usage > 0
            primary.call("REPLICAOF", other.host, other.port)
            promote = threading.Timer(0.5, lambda: primary.call("REPLICAOF", "NO", "ONE"))
            promote.start()
            h.set("t", "2")  # READONLY until promoted again
            promote.join()
            assert h.get("t") == "2" and primary.call("GET", "t") == b"2"
        finally:
            h.close()
