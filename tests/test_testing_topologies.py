"""``madsci_cache_rs.testing``'s private clusters and Sentinel groups, on Valkey
and Redis, observed with redis-py.

The shared topologies come from the plugin's module-scoped fixtures (one per
kind); tests that kill nodes build their own.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from madsci_cache_rs.testing import (
    FeatureUnavailable,
    PrivateCluster,
    PrivateSentinelGroup,
    PrivateServer,
    ReplyError,
    ServerUnavailable,
    TopologyTimeout,
    key_slot,
    wait_until,
)

KINDS = ("valkey", "redis")


@pytest.fixture(scope="module", params=KINDS)
def madsci_cache_kind(request: pytest.FixtureRequest) -> str:
    """Overrides the plugin's: every topology test runs on both servers."""
    return str(request.param)


@pytest.fixture
def observer(madsci_cache_cluster: PrivateCluster) -> Iterator[RedisCluster]:
    host, port = madsci_cache_cluster.seeds[0]
    client = RedisCluster(host=host, port=port)
    yield client
    client.close()


def _own(factory, kind: str, **options):
    try:
        return factory(kind, **options)
    except ServerUnavailable as exc:
        pytest.skip(f"no {kind} server on this machine: {exc}")


def _replicated_write(server: PrivateServer, key: str, value: str) -> None:
    # WAIT counts the acknowledgements of its own connection's writes.
    with server.connect() as conn:
        conn.call("SET", key, value)
        assert conn.call("WAIT", 1, 5000) == 1


def _stopped(topology: PrivateCluster | PrivateSentinelGroup, count: int) -> list[Path]:
    """Stop ``topology`` and check none of its processes is left; its
    directories, which ``close()`` removes."""
    pids = topology.pids()
    assert len(pids) == count
    assert all(Path(f"/proc/{pid}").exists() for pid in pids)
    topology.stop()
    assert topology.pids() == []
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []
    servers = topology.nodes + getattr(topology, "sentinel_servers", [])
    dirs = [Path(server._dir) for server in servers]
    assert all(d.exists() for d in dirs)
    return dirs


# -- cluster ---------------------------------------------------------------


def test_key_slot_follows_the_cluster_specification():
    # CRC16/XMODEM's check value for "123456789" is 0x31C3.
    assert key_slot("123456789") == 0x31C3 % 16384
    assert key_slot("{user1000}.following") == key_slot("user1000")
    assert key_slot("foo{}{bar}") == key_slot(b"foo{}{bar}")
    # An empty first tag hashes the whole key.
    assert key_slot("foo{}{bar}") not in (key_slot(""), key_slot("bar"))


def test_cluster_converges_with_every_slot_served(madsci_cache_cluster, observer):
    cluster = madsci_cache_cluster
    ranges = [(lo, hi) for lo, hi, _ in cluster.slot_map()]
    assert ranges[0][0] == 0 and ranges[-1][1] == 16383
    assert all(prev[1] + 1 == cur[0] for prev, cur in itertools.pairwise(ranges))
    masters = cluster.masters()
    assert len(masters) == 3 and len(cluster.replicas()) == 3
    assert all(len(cluster.replicas(m)) == 1 for m in masters)
    assert observer.cluster_info()["cluster_state"] == "ok"
    seen = {(n.host, n.port) for n in observer.get_primaries()}
    assert seen == {m.address for m in masters}
    assert cluster.url == "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in cluster.seeds)
    assert len(cluster.seeds) == 6


def test_key_slot_matches_cluster_keyslot(madsci_cache_cluster):
    rng = random.Random(14)
    keys: list[str | bytes] = ["", "{", "}", "{}", "{}x", "a{b}c", "foo{{bar}}zap", "x{y}{z}"]
    keys += ["ключ{тег}", b"\xff{\x00}\xfe", "{user1000}.following", "{user1000}.followers"]
    for _ in range(300):
        body = "".join(rng.choice("ab{}:xyz0123456789") for _ in range(rng.randint(1, 16)))
        keys.append(body)
    with madsci_cache_cluster.nodes[0].connect() as conn:
        for key in keys:
            assert key_slot(key) == conn.call("CLUSTER", "KEYSLOT", key), key


def test_a_write_through_redis_cluster_lands_on_master_for_slot(madsci_cache_cluster, observer):
    cluster = madsci_cache_cluster
    cluster.flushall()
    for i in range(40):
        key = f"write:{i}"
        observer.set(key, i)
        owner = cluster.master_for_slot(cluster.key_slot(key))
        assert owner.call("GET", key) == str(i).encode()
        for other in cluster.masters():
            if other is not owner:
                with pytest.raises(ReplyError, match="MOVED"):
                    other.call("GET", key)


def test_classic_migrate_slot_moves_the_keys_and_the_slot(madsci_cache_cluster):
    cluster = madsci_cache_cluster
    keys = [f"{{moving}}:{i}" for i in range(250)]
    slot = key_slot(keys[0])
    source = cluster.master_for_slot(slot)
    for key in keys:
        source.call("SET", key, key)
    target = next(m for m in cluster.masters() if m is not source)
    assert cluster.migrate_slot(slot, target, batch=60) == 250
    assert cluster.master_for_slot(slot) is target
    assert source.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    assert target.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 250
    host, port = cluster.seeds[-1]
    with RedisCluster(host=host, port=port) as fresh:  # learns the map anew
        assert fresh.get_node_from_key(keys[0]).port == target.port
        assert [fresh.get(k) for k in keys] == [k.encode() for k in keys]


def test_atomic_migrate_slot_or_the_reason_it_cannot(madsci_cache_cluster):
    cluster = madsci_cache_cluster
    keys = [f"{{atomic}}:{i}" for i in range(120)]
    slot = key_slot(keys[0])
    source = cluster.master_for_slot(slot)
    target = next(m for m in cluster.masters() if m is not source)
    reason = cluster.atomic_migration_unsupported()
    if reason is not None:
        with pytest.raises(FeatureUnavailable, match="MIGRATESLOTS"):
            cluster.migrate_slot_atomic(slot, target)
        pytest.skip(reason)
    for key in keys:
        source.call("SET", key, key)
    cluster.migrate_slot_atomic(slot, target)
    assert cluster.master_for_slot(slot) is target
    assert target.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 120
    assert source.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 0


def test_a_manual_failover_swaps_master_and_replica(madsci_cache_cluster):
    cluster = madsci_cache_cluster
    master = cluster.master_for_slot(9000)
    (replica,) = cluster.replicas(master)
    assert cluster.failover(replica) is replica
    assert cluster.master_for_slot(9000) is replica
    assert cluster.replicas(replica) == [master]


def test_a_timeout_names_what_is_missing_and_shows_the_logs(madsci_cache_cluster):
    node = madsci_cache_cluster.nodes[0]
    with pytest.raises(TopologyTimeout) as failed:
        wait_until(lambda: "the moon", 0.1, "the impossible", [node])
    message = str(failed.value)
    assert "the impossible not reached within 0.1 s: the moon" in message
    assert f"{node!r}, log tail:\n" in message and node.log_tail() in message


def test_a_killed_master_is_replaced_by_its_replica(madsci_cache_kind):
    cluster = _own(PrivateCluster, madsci_cache_kind)
    with cluster:
        master = cluster.master_for_slot(0)
        (replica,) = cluster.replicas(master)
        key = next(
            f"k{i}" for i in range(1000) if cluster.master_for_slot(key_slot(f"k{i}")) is master
        )
        _replicated_write(master, key, "before")
        cluster.kill(master)
        cluster.wait_converged()
        assert not master.running
        assert cluster.master_for_slot(0) is replica
        host, port = replica.address
        with RedisCluster(host=host, port=port) as client:
            assert client.get(key) == b"before"
            for i in range(20):
                client.set(f"after:{i}", i)
                assert client.get(f"after:{i}") == str(i).encode()
        cluster.restart(master)
        assert cluster.replicas(replica) == [master]
        dirs = _stopped(cluster, 6)
    assert [d for d in dirs if d.exists()] == []


# -- sentinel --------------------------------------------------------------


def _reported(group: PrivateSentinelGroup) -> set[tuple[str, int]]:
    """The primary each sentinel reports, asked through redis-py."""
    found = set()
    for host, port in group.sentinels:
        with redis.Redis(host=host, port=port, decode_responses=True) as sentinel:
            ip, p = sentinel.sentinel_get_master_addr_by_name(group.service)
            found.add((ip, int(p)))
    return found


def test_sentinel_group_converges(madsci_cache_sentinel):
    group = madsci_cache_sentinel
    primary = group.primary()
    assert _reported(group) == {primary.address}
    (replica,) = group.replicas()
    observer = Sentinel(group.sentinels)
    assert observer.discover_master(group.service) == primary.address
    assert observer.discover_slaves(group.service) == [replica.address]
    for client in observer.sentinels:
        client.close()
    for host, port in group.sentinels:
        with redis.Redis(host=host, port=port) as sentinel:
            assert len(sentinel.sentinel_sentinels(group.service)) == 2
    _replicated_write(primary, "replicated", "yes")
    assert replica.call("GET", "replicated") == b"yes"
    hosts = ",".join(f"{h}:{p}" for h, p in group.sentinels)
    assert group.url == f"redis+sentinel://{hosts}/mymaster"


def test_a_restarted_sentinel_rejoins(madsci_cache_sentinel):
    group = madsci_cache_sentinel
    sentinel = group.sentinel_servers[1]
    before = sentinel.pid
    group.restart(sentinel)
    assert sentinel.pid != before
    assert _reported(group) == {group.primary().address}
    with redis.Redis(*sentinel.address) as client:
        assert len(client.sentinel_sentinels(group.service)) == 2
        assert len(client.sentinel_slaves(group.service)) == 1


@pytest.mark.parametrize("coordinated", [False, True])
def test_a_sentinel_failover_moves_the_primary(madsci_cache_sentinel, coordinated):
    group = madsci_cache_sentinel
    if coordinated and (reason := group.coordinated_failover_unsupported()):
        with pytest.raises(FeatureUnavailable, match="COORDINATED"):
            group.failover(coordinated=True)
        pytest.skip(reason)
    old = group.primary()
    new = group.failover(coordinated=coordinated)
    assert new is not old
    assert _reported(group) == {new.address}
    assert group.replicas() == [old]
    assert new.call("SET", "after-failover", "1") == "OK"
    with pytest.raises(ReplyError, match="READONLY"):
        old.call("SET", "after-failover", "2")


def test_a_killed_primary_is_replaced_and_comes_back_as_a_replica(madsci_cache_kind):
    group = _own(PrivateSentinelGroup, madsci_cache_kind, password="s3cret")
    with group:
        assert "s3cret" not in repr(group)
        old = group.primary()
        _replicated_write(old, "before", "1")
        assert group.kill_primary() is old
        new = group.wait_failover()
        assert new is not old and not old.running
        assert _reported(group) == {new.address}
        assert new.call("SET", "after", "2") == "OK"
        assert new.call("GET", "before") == b"1"
        group.restart(old)
        assert group.replicas() == [old]
        assert group.primary() is new
        dirs = _stopped(group, 5)
    assert [d for d in dirs if d.exists()] == []


# Last: a cluster of other options replaces the module's shared one.
@pytest.mark.parametrize(
    "madsci_cache_cluster", [{"masters": 1, "replicas_per_master": 0}], indirect=True
)
def test_the_cluster_fixture_takes_options(madsci_cache_cluster, madsci_cache_kind):
    assert madsci_cache_cluster.kind == madsci_cache_kind
    (node,) = madsci_cache_cluster.nodes
    assert madsci_cache_cluster.slot_map() == [(0, 16383, node)]
    assert madsci_cache_cluster.replicas() == []
