"""The client-side cache on a Valkey/Redis Cluster (``client_cache=True`` on a
``redis+cluster://`` URL): a tracking connection per primary, one store
emptied on any topology change (a slot migrated, a failover, a tracking
connection lost), and reads that stay right throughout.

Another client's write is seen by our next round trip to its key's primary
(its invalidation is queued ahead of that reply): the tests make that round
trip with an ``INCR`` on the same slot.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import redis.cluster
from helpers import round_trips_over, tags_on_each_master

from madsci_cache_rs import PyCacheHandler
from madsci_cache_rs.testing import ClusterNode, PrivateCluster, key_slot


@pytest.fixture
def cached(fresh: PrivateCluster) -> Iterator[PyCacheHandler]:
    h = PyCacheHandler.from_url(fresh.url, client_cache=True)
    yield h
    h.close()


def masters_of(cluster: PrivateCluster) -> list[redis.Redis]:
    return [redis.Redis(host=m.host, port=m.port) for m in cluster.masters()]


class Keys:
    """A string, a dict and a list on one tag's slot, read through a handler."""

    def __init__(self, h: PyCacheHandler, tag: str) -> None:
        self.h, self.tag = h, tag
        self.string, self.sync = f"{{{tag}}}:s", f"{{{tag}}}:sync"
        self.dict, self.list = h.create_dict(f"{{{tag}}}:d"), h.create_list(f"{{{tag}}}:l")

    def write(self, value: int) -> None:
        self.h.set(self.string, str(value))
        self.dict["v"] = value
        self.list.append(value)

    def read(self) -> tuple[object, ...]:
        return self.h.get(self.string), self.dict.to_dict(), self.dict["v"], self.list.to_list()

    def round_trip(self) -> None:
        """A round trip to the slot's primary (a write: never answered from memory)."""
        self.h.incr(self.sync)


def on_every_master(h: PyCacheHandler, cluster: PrivateCluster, prefix: str) -> list[Keys]:
    keys = [Keys(h, tag) for tag in tags_on_each_master(cluster, prefix).values()]
    assert len(keys) == 3
    return keys


def test_repeated_reads_on_every_master_cost_no_round_trip(fresh, cached):
    keys = on_every_master(cached, fresh, "warm")
    for k in keys:
        k.write(1)
        k.round_trip()  # the scripts and every primary's tracking connection warm
    masters = masters_of(fresh)
    first = round_trips_over(masters, lambda: [k.read() for k in keys])
    # Each key read once (its expiry asked in the same round trip); the
    # field read is answered from the hash read whole.
    assert first == {"get": 3, "hgetall": 3, "lrange": 3, "pttl": 9}, first
    hits = cached.client_cache_hits
    again = round_trips_over(masters, lambda: [k.read() for _ in range(10) for k in keys])
    assert again == {}, again
    assert cached.client_cache_hits >= hits + 10 * 3 * 4
    assert all(k.read() == ("1", {"v": 1}, 1, [1]) for k in keys)
    assert cached.client_cache_usage > 0


def test_another_clients_writes_on_every_master_are_seen(fresh, cached, observer):
    keys = on_every_master(cached, fresh, "others")
    for k in keys:
        k.write(1)
        assert k.read() == ("1", {"v": 1}, 1, [1])  # now held
    for k in keys:
        observer.set(k.string, "2")
        observer.hset(k.dict.key, '"v"', "2")
        observer.rpush(k.list.key, "2")
    for k in keys:
        k.round_trip()
        assert k.read() == ("2", {"v": 2}, 2, [1, 2]), k.tag
    # Deleted by another client: seen as gone.
    for k in keys:
        observer.delete(k.string, k.dict.key, k.list.key)
        k.round_trip()
        assert k.h.get(k.string) is None and k.dict.to_dict() == {} and k.list.to_list() == []


def test_our_own_writes_on_every_master_are_seen_at_once(fresh, cached, observer):
    keys = on_every_master(cached, fresh, "own")
    for i in range(1, 20):
        for k in keys:
            k.write(i)
            assert k.read() == (str(i), {"v": i}, i, list(range(1, i + 1)))
    for k in keys:
        assert observer.get(k.string) == b"19"


def _held(h: PyCacheHandler, keys: list[Keys], masters: list[redis.Redis]) -> int:
    """How many of the keys' strings are answered from memory (a read that
    reaches a primary is counted there)."""
    calls = round_trips_over(masters, lambda: [k.h.get(k.string) for k in keys])
    return len(keys) - calls.get("get", 0)


def test_a_migrated_slot_empties_the_cache_and_reads_stay_right(fresh, cached, observer):
    keys = on_every_master(cached, fresh, "migrate")
    for k in keys:
        k.write(1)
        k.read()
    masters = masters_of(fresh)
    assert _held(cached, keys, masters) == 3
    moved = keys[0]
    slot = key_slot(moved.tag)
    target = next(m for m in fresh.masters() if m is not fresh.master_for_slot(slot))
    fresh.migrate_slot(slot, target)
    observer.set(moved.string, "2")
    observer.hset(moved.dict.key, '"v"', "2")
    moved.round_trip()  # meets MOVED: the whole cache starts over
    assert _held(cached, keys, masters_of(fresh)) == 0, "every primary's keys read again"
    assert moved.read() == ("2", {"v": 2}, 2, [1])
    assert [k.read() for k in keys[1:]] == [("1", {"v": 1}, 1, [1])] * 2
    # Kept again, now tracked on the slot's new primary.
    observer.set(moved.string, "3")
    moved.round_trip()
    assert moved.read()[0] == "3"
    assert _held(cached, keys, masters_of(fresh)) == 3


def test_a_failover_empties_the_cache_and_reads_stay_right(fresh, cached, observer):
    keys = on_every_master(cached, fresh, "failover")
    for k in keys:
        k.write(1)
        k.read()
    assert _held(cached, keys, masters_of(fresh)) == 3
    swapped = keys[0]
    old = fresh.master_for_slot(key_slot(swapped.tag))
    fresh.failover(fresh.replicas(old)[0])
    # Until we hear of it, the demoted primary still announces the writes
    # it applies as a replica: a held key is never stale.
    observer.set(swapped.string, "2")
    observer.hset(swapped.dict.key, '"v"', "2")
    swapped.round_trip()  # meets MOVED from the demoted primary
    assert _held(cached, keys, masters_of(fresh)) == 0
    assert swapped.read() == ("2", {"v": 2}, 2, [1])
    assert [k.read() for k in keys[1:]] == [("1", {"v": 1}, 1, [1])] * 2
    observer.set(swapped.string, "3")
    swapped.round_trip()
    assert swapped.read()[0] == "3"


def _tracking_client_ids(node: ClusterNode) -> list[int]:
    """Our tracking connections on a node (RESP3, flag ``t``)."""
    found = []
    for line in node.call("CLIENT", "LIST").decode().splitlines():
        fields = dict(f.split("=", 1) for f in line.split(" ") if "=" in f)
        if "t" in fields.get("flags", "") and fields.get("resp") == "3":
            found.append(int(fields["id"]))
    return found


def test_one_tracking_connection_per_primary_and_a_lost_one_empties_the_cache(
    fresh, cached, observer
):
    keys = on_every_master(cached, fresh, "lost")
    for k in keys:
        k.write(1)
        k.read()
    tracking = {m.port: _tracking_client_ids(m) for m in fresh.masters()}
    assert all(len(ids) == 1 for ids in tracking.values()), tracking
    assert _held(cached, keys, masters_of(fresh)) == 3
    victim = fresh.master_for_slot(key_slot(keys[0].tag))
    victim.call("CLIENT", "KILL", "ID", tracking[victim.port][0])
    observer.set(keys[0].string, "2")  # its invalidation is lost with the connection
    # The next cached read on that primary finds the connection closed:
    # everything goes, and the read asks the server.
    assert cached.get(keys[0].string) == "2"
    assert _held(cached, keys[1:], masters_of(fresh)) == 0
    assert [k.read() for k in keys[1:]] == [("1", {"v": 1}, 1, [1])] * 2
    keys[0].round_trip()
    assert len(_tracking_client_ids(victim)) == 1, "a new tracking connection"
