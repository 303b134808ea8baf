"""The connection pool under many threads, measured by the server.

Counts come from the server (``INFO stats`` / ``CLIENT LIST``), never from
timing: a pool that closes connections a thread asks for again a moment
later shows as connections received far beyond the thread count.
"""

from __future__ import annotations

import threading
import time

import pytest
import redis
from helpers import in_threads

from madsci_cache_rs import PyCacheHandler


def received(raw: redis.Redis) -> int:
    return int(raw.info("stats")["total_connections_received"])


def test_many_threads_reuse_their_connections(server):
    threads, calls = 200, 300
    raw = redis.Redis(port=server.port)
    raw.flushall()  # the session's server: start from an empty keyspace
    h = PyCacheHandler.from_url(server.url)
    h.set("warm", "1")
    before = received(raw)

    def work(t: int) -> None:
        for i in range(calls):
            if i % 2:
                h.set(f"k{t}", str(i))
            else:
                h.get(f"k{t}")

    assert in_threads(work, threads) == []
    opened = received(raw) - before
    # Each thread needs at most one connection at a time; a little slack for
    # a connection the server or a retry replaced.
    assert opened <= threads + 10, f"{opened} connections for {threads} threads"
    # The connections are kept for the next burst, as redis-py keeps them.
    again = received(raw)
    assert in_threads(work, threads) == []
    assert received(raw) - again <= 10
    h.close()
    raw.close()


def connected_clients(raw: redis.Redis) -> int:
    return int(raw.info("clients")["connected_clients"])


def test_max_connections_bounds_the_pool_and_every_call_succeeds(server):
    raw = redis.Redis(port=server.port)
    raw.flushall()  # the session's server: start from an empty keyspace
    raw.ping()
    baseline = connected_clients(raw)  # our observer
    h = PyCacheHandler.from_url(server.url, max_connections=4)
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(connected_clients(raw) - baseline)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        errors = in_threads(
            lambda t: [h.incr("n") for _ in range(100)],
            50,
        )
    finally:
        done.set()
        watcher.join()
    assert errors == []
    assert int(raw.get("n")) == 50 * 100
    assert seen and max(seen) <= 4, f"peak {max(seen)} connections"
    h.close()
    raw.close()


def test_max_connections_from_the_url_query(server):
    raw = redis.Redis(port=server.port)
    raw.flushall()  # the session's server: start from an empty keyspace
    baseline = connected_clients(raw)
    h = PyCacheHandler.from_url(f"{server.url}?max_connections=2")
    assert in_threads(lambda t: [h.set("k", str(i)) for i in range(50)], 20) == []
    assert connected_clients(raw) - baseline <= 2
    h.close()
    raw.close()


@pytest.mark.parametrize("how", ["from_settings", "redis-py client"])
def test_max_connections_reaches_the_pool_every_way(server, how):
    raw = redis.Redis(port=server.port)
    raw.flushall()  # the session's server: start from an empty keyspace
    baseline = connected_clients(raw)
    if how == "from_settings":
        h = PyCacheHandler.from_settings(server.host, server.port, max_connections=3)
    else:
        h = PyCacheHandler(redis.Redis(host=server.host, port=server.port, max_connections=3))
    assert in_threads(lambda t: [h.get("k") for _ in range(50)], 20) == []
    assert connected_clients(raw) - baseline <= 3
    h.close()
    raw.close()


@pytest.mark.parametrize("bad", [0, -1, "many", 2**70])
def test_max_connections_must_be_a_positive_count(server, bad):
    with pytest.raises((ValueError, TypeError, OverflowError), match="max_connections"):
        PyCacheHandler.from_url(server.url, max_connections=bad)
