"""A Valkey/Redis Cluster (issue 14): the same handler API and pottery's bytes,
with routing of our own (``MOVED``, ``ASK``, a reshard, a failover, a crashed
primary), and never a write applied twice.

One cluster per server kind for the module (3 primaries, 1 replica each);
every test starts from a converged, empty cluster. The tests that change the
topology leave it converged: a moved slot stays moved, a failed-over pair
stays swapped, a killed primary comes back as a replica.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator

import pottery
import pytest
import redis
import redis.cluster
from helpers import (
    RELEASE_CHANNEL,
    SpawnedWaiter,
    round_trips_over,
    tags_on_each_master,
)

from madsci_cache_rs import (
    CacheConnectionError,
    CacheOutcomeUnknownError,
    CacheResponseError,
    PyCacheHandler,
    Redlock,
)
from madsci_cache_rs.testing import (
    ClusterNode,
    PrivateCluster,
    PrivateServer,
    free_port,
    key_slot,
)


@pytest.fixture
def handler(fresh: PrivateCluster) -> Iterator[PyCacheHandler]:
    h = PyCacheHandler.from_url(fresh.url)
    yield h
    h.close()


@pytest.fixture(params=[False, True], ids=["pool", "client-cache"])
def loaded(fresh: PrivateCluster, request: pytest.FixtureRequest) -> Iterator[PyCacheHandler]:
    """The handler the load tests fault: without and with the client-side
    cache (whose writes go out on each primary's tracking connection when
    it is free)."""
    h = PyCacheHandler.from_url(fresh.url, client_cache=request.param)
    yield h
    h.close()


def test_the_handler_works_on_keys_spread_over_every_master(fresh, handler, observer):
    tags = tags_on_each_master(fresh, "spread")
    assert len(tags) == 3
    for tag in tags.values():
        handler.set(f"{{{tag}}}:s", f"v-{tag}")
        assert handler.get(f"{{{tag}}}:s") == f"v-{tag}"
        assert handler.get(f"{{{tag}}}:missing") is None
        assert handler.incr(f"{{{tag}}}:n") == 1
        assert handler.incr(f"{{{tag}}}:n", 41) == 42
        d = handler.create_dict(f"{{{tag}}}:d")
        d.update({"a": 1, "b": [1, "x"]})
        d["c"] = None
        del d["a"]
        assert d.to_dict() == {"b": [1, "x"], "c": None} and len(d) == 2 and "b" in d
        lst = handler.create_list(f"{{{tag}}}:l")
        lst.extend([1, {"k": "v"}])
        lst.append("three")
        lst.insert(0, 0)
        assert lst.pop() == "three"
        assert lst.to_list() == [0, 1, {"k": "v"}] and lst[1] == 1
        lock = handler.create_lock(f"{{{tag}}}:lock")
        with lock:
            assert lock.locked() > 0
            assert handler.create_lock(f"{{{tag}}}:lock").acquire(blocking=False) is False
        assert lock.locked() == 0
    # Pottery's bytes, on the primary that serves each tag.
    for port, tag in tags.items():
        node = next(n for n in fresh.masters() if n.port == port)
        assert node.call("GET", f"{{{tag}}}:s") == f"v-{tag}".encode()
        assert node.call("GET", f"{{{tag}}}:n") == b"42"
        assert observer.hgetall(f"{{{tag}}}:d") == {b'"b"': b'[1, "x"]', b'"c"': b"null"}
        assert observer.lrange(f"{{{tag}}}:l", 0, -1) == [b"0", b"1", b'{"k": "v"}']
    assert handler.ping() is True


def test_pottery_on_redis_pys_cluster_client_reads_what_we_wrote(fresh, handler, observer):
    # pottery's RedisList indexes inside WATCH on `redis.connection_pool`,
    # which RedisCluster lacks: only what pottery supports there is compared.
    warnings.simplefilter("ignore", pottery.InefficientAccessWarning)
    d = handler.create_dict("lab:state")
    d.update({"robot": {"x": 1.5}, "ok": True})
    theirs = pottery.RedisDict(redis=observer, key="lab:state")
    assert theirs.to_dict() == {"robot": {"x": 1.5}, "ok": True}
    theirs["added"] = [1, 2]
    assert d["added"] == [1, 2] and len(d) == 3
    lst = handler.create_list("lab:queue")
    lst.extend(["a", {"b": 2}])
    their_list = pottery.RedisList(redis=observer, key="lab:queue")
    assert their_list.to_list() == ["a", {"b": 2}] and len(their_list) == 2
    their_list.append(3)
    assert lst.to_list() == ["a", {"b": 2}, 3]
    ours = handler.create_lock("lab:arm")
    theirs_lock = pottery.Redlock(key="lab:arm", masters={observer}, auto_release_time=5)
    assert ours.acquire(blocking=False)
    assert theirs_lock.acquire(blocking=False) is False
    ours.release()
    assert theirs_lock.acquire(blocking=False) is True
    assert ours.acquire(blocking=False) is False
    theirs_lock.release()


def test_a_redis_py_cluster_client_and_the_settings_url(fresh, observer, monkeypatch):
    h = PyCacheHandler(observer)
    assert repr(h).startswith('PyCacheHandler("redis+cluster://')
    h.set("from-client", "1")
    assert observer.get("from-client") == b"1"
    monkeypatch.setenv("MADSCI_CACHE_RS_URL", fresh.url)
    managed = PyCacheHandler.from_settings(host="ignored.invalid", port=1)
    assert managed.incr("from-settings") == 1
    assert observer.get("from-settings") == b"1"
    for url in (
        fresh.url.replace("redis+cluster", "valkey+cluster"),
        fresh.url + "/0?socket_timeout=2",
    ):
        assert PyCacheHandler.from_url(url).get("from-client") == "1"


def test_cluster_only_settings_are_checked(fresh, monkeypatch):
    with pytest.raises(ValueError, match="only database 0"):
        PyCacheHandler.from_url(fresh.url + "/1")
    with pytest.raises(ValueError, match="only database 0"):
        PyCacheHandler.from_url(fresh.url, db=2)
    with pytest.raises(ValueError, match="client_cache"):
        PyCacheHandler.from_url(fresh.url, client_cache=True, wait_replicas=1)
    # The client-side cache is on there too (tests/test_cluster_client_cache.py).
    monkeypatch.setenv("MADSCI_CACHE_RS_CLIENT_CACHE", "1")
    h = PyCacheHandler.from_url(fresh.url)
    h.set("k", "v")
    assert h.get("k") == "v" and h.client_cache is True


def test_wait_replicas_waits_for_the_replicas_of_the_primary_written(fresh, observer):
    tags = list(tags_on_each_master(fresh, "wait").values())
    safe = PyCacheHandler.from_url(fresh.url, wait_replicas=1, wait_timeout=2)
    for tag in tags:
        master = fresh.master_for_slot(key_slot(tag))
        waits = _calls(master, "wait")
        assert safe.incr(f"{{{tag}}}:n") == 1
        safe.create_list(f"{{{tag}}}:l").append("x")
        assert safe.get(f"{{{tag}}}:n") == "1"
        assert _calls(master, "wait") == waits + 2, "one WAIT per write, none for a read"
    too_many = PyCacheHandler.from_url(fresh.url, wait_replicas=2, wait_timeout=0.05)
    with pytest.raises(CacheOutcomeUnknownError, match="1 of the 2 replica"):
        too_many.incr(f"{{{tags[0]}}}:n")
    assert observer.get(f"{{{tags[0]}}}:n") == b"2", "applied on the primary all the same"


def test_moved_on_a_standalone_url_says_to_use_a_cluster_url(fresh):
    node = fresh.masters()[0]
    standalone = PyCacheHandler.from_url(f"redis://{node.host}:{node.port}")
    # A key another primary serves.
    key = next(f"k{i}" for i in range(1000) if fresh.master_for_slot(key_slot(f"k{i}")) is not node)
    with pytest.raises(CacheResponseError, match=r"redis\+cluster://") as caught:
        standalone.get(key)
    assert "Cluster node" in str(caught.value) and f"on {node.host}:{node.port}" in str(
        caught.value
    )
    with pytest.raises(CacheResponseError, match=r"redis\+cluster://"):
        standalone.incr(key)


def test_an_unreachable_cluster_is_a_connection_error_and_ping_is_false():
    dead = [free_port(), free_port()]
    h = PyCacheHandler.from_url(
        "redis+cluster://:hunter2@" + ",".join(f"127.0.0.1:{p}" for p in dead), retry_window=0.2
    )
    assert h.ping() is False
    with pytest.raises(CacheConnectionError) as caught:
        h.incr("n")
    message = str(caught.value)
    assert "INCRBY" in message and "127.0.0.1:" in message and "hunter2" not in message
    assert "hunter2" not in repr(h)


def test_a_write_whose_reply_is_lost_on_a_node_lands_once(fresh, observer, caplog):
    """The primary holds writes (CLIENT PAUSE WRITE) past the reply timeout:
    the reply is lost, and the write, in its once-form, is sent again after
    the map is read again, instead of ending in an unknown outcome. (The
    paused copy is dropped with its connection here; a copy that runs late
    is answered by its token: tests/test_faults.py.)"""
    slow = PyCacheHandler.from_url(fresh.url, socket_timeout=0.2, retry_window=10)
    lst = slow.create_list("{paused}:l")
    master = fresh.master_for_slot(key_slot("paused"))
    assert slow.incr("{paused}:n") == 1  # the route and the scripts warm
    with caplog.at_level(logging.WARNING, logger="madsci_cache_rs"):
        master.call("CLIENT", "PAUSE", 700, "WRITE")
        assert slow.incr("{paused}:n") == 2
        master.call("CLIENT", "PAUSE", 700, "WRITE")
        lst.append("once")
    assert caplog.text.count("timed out after 0.2 s waiting for the reply") == 2
    assert observer.get("{paused}:n") == b"2"
    assert observer.lrange("{paused}:l", 0, -1) == [b'"once"']


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_routes_on_its_own_connections(fresh, handler, observer):
    tags = list(tags_on_each_master(fresh, "fork").values())
    for tag in tags:
        handler.incr(f"{{{tag}}}:n")  # the parent holds a map and a pool per primary
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: use the handler on every primary, report, exit
        try:
            for tag in tags:
                handler.incr(f"{{{tag}}}:n")
            os.write(report_w, b"ok")
        except BaseException as exc:
            os.write(report_w, repr(exc).encode()[:500])
        finally:
            os._exit(0)
    child_said = os.read(report_r, 1000)
    os.waitpid(pid, 0)
    assert child_said == b"ok"
    for tag in tags:
        assert handler.incr(f"{{{tag}}}:n") == 3
        assert observer.get(f"{{{tag}}}:n") == b"3"


def _operations(h: PyCacheHandler, tags: list[str]) -> None:
    for tag in tags:
        h.set(f"{{{tag}}}:s", "v")
        h.get(f"{{{tag}}}:s")
        h.incr(f"{{{tag}}}:n")
        d = h.create_dict(f"{{{tag}}}:d")
        d["a"] = 1
        _ = d["a"], len(d), "a" in d, d.to_dict()
        lst = h.create_list(f"{{{tag}}}:l")
        lst.append(1)
        _ = len(lst), lst[0], lst.to_list()
        lock = h.create_lock(f"{{{tag}}}:lock")
        lock.acquire()
        lock.release()


@pytest.mark.parametrize("client_cache", [False, True], ids=["pool", "client-cache"])
def test_one_round_trip_per_operation_once_the_map_is_warm(fresh, client_cache):
    """The same operations send the same commands to a cluster's primaries,
    summed, as to one server: no CLUSTER SLOTS, no ASKING, no redirection
    (with the client-side cache: the same reads answered from memory)."""
    handler = PyCacheHandler.from_url(fresh.url, client_cache=client_cache)
    tags = list(tags_on_each_master(fresh, "trips").values())
    _operations(handler, tags)  # the map and every node's scripts warm
    masters = [redis.Redis(host=m.host, port=m.port) for m in fresh.masters()]
    on_cluster = round_trips_over(masters, lambda: _operations(handler, tags))
    handler.close()
    with PrivateServer(fresh.kind) as one:
        alone = PyCacheHandler.from_url(one.url, client_cache=client_cache)
        _operations(alone, tags)
        raw = redis.Redis(host=one.host, port=one.port)
        on_one = round_trips_over([raw], lambda: _operations(alone, tags))
    assert sorted(on_cluster.items()) == sorted(on_one.items())
    assert "cluster|slots" not in on_cluster and "asking" not in on_cluster


def _listener_nodes(cluster: PrivateCluster) -> list[ClusterNode]:
    found = []
    for node in cluster.nodes:
        if node.running and b"name=madsci_cache_rs-lock-listener" in node.call("CLIENT", "LIST"):
            found.append(node)
    return found


def _wait_once(url: str, key: str, conn) -> None:
    lock = Redlock(key=key, masters=[PyCacheHandler.from_url(url)], poll_interval=30.0)
    conn.send("waiting")
    conn.send(lock.acquire(timeout=15))


def _wait_for_listener(cluster: PrivateCluster, where) -> list[ClusterNode]:
    deadline = time.monotonic() + 10
    while not (found := [n for n in _listener_nodes(cluster) if where(n)]):
        assert time.monotonic() < deadline, "no listener subscribed"
        time.sleep(0.05)
    return found


def test_releases_are_heard_from_any_node(fresh):
    """Classic Pub/Sub reaches every node: a waiter's listener subscribes on
    a primary of the slot map (not on the replica the URL names first), here
    maybe another than the lock's. The waiter runs in a child process (a
    release in this process would wake it directly) and polls every 30 s:
    only a heard release ends its 15 s wait with the lock."""
    key = "lab:arm"
    lock_master = fresh.master_for_slot(key_slot(f"redlock:{key}"))
    replica = next(r for r in fresh.replicas() if r not in fresh.replicas(lock_master))
    others = [n.address for n in fresh.nodes if n is not replica]
    url = "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in [replica.address, *others])
    holder = PyCacheHandler.from_url(url).create_lock(key, auto_release_time=300.0)
    holder.acquire()
    with SpawnedWaiter(_wait_once, url, key) as child:
        child.wait_until_waiting()
        masters = fresh.masters()
        _wait_for_listener(fresh, lambda n: n in masters)
        holder.release()
        assert child.result() is True


def _subscribed_nodes(cluster: PrivateCluster) -> list[ClusterNode]:
    """The running nodes with a subscriber on the release channel (NUMSUB
    counts a node's own subscribers only)."""
    return [
        n for n in cluster.nodes if n.running and n.call("PUBSUB", "NUMSUB", RELEASE_CHANNEL)[1] > 0
    ]


def _wait_for_subscriber(cluster: PrivateCluster, where) -> ClusterNode:
    deadline = time.monotonic() + 15
    while len(found := [n for n in _subscribed_nodes(cluster) if where(n)]) != 1:
        assert time.monotonic() < deadline, f"subscribed on {found}, not on one node as asked"
        time.sleep(0.05)
    return found[0]


def _wait_twice(url: str, key: str, conn) -> None:
    """`_wait_once`, then again when told, in one process (its slot map
    kept): a lock got is given back at once."""
    lock = Redlock(key=key, masters=[PyCacheHandler.from_url(url)], poll_interval=30.0)
    for turn in range(2):
        if turn:
            assert conn.recv() == "again"
        conn.send("waiting")
        got = lock.acquire(timeout=15)
        if got:
            lock.release()
        conn.send(got)


def test_a_one_seed_listener_listens_on_the_slot_maps_nodes_and_follows_them(fresh):
    """A URL naming one node (a replica of another primary than the lock's):
    once the waiter's handler has its slot map, the listener is on a node of
    the map, so killing the seed leaves releases heard; when the node it is
    on dies too (a primary: the map changes), it moves to another node of
    the map read again, the seed still dead. The waiter polls every 30 s and
    gives up after 15 s, and the holder's lease outlives the test: only a
    heard release ends a wait with the lock."""
    key = "lab:gripper"
    lock_master = fresh.master_for_slot(key_slot(f"redlock:{key}"))
    seed = next(r for r in fresh.replicas() if r not in fresh.replicas(lock_master))
    one_seed = f"redis+cluster://{seed.host}:{seed.port}"
    holder = PyCacheHandler.from_url(fresh.url).create_lock(key, auto_release_time=300.0)
    killed = []
    try:
        holder.acquire()
        with SpawnedWaiter(_wait_twice, one_seed, key) as child:
            child.wait_until_waiting()
            _wait_for_subscriber(fresh, lambda n: True)
            fresh.kill(seed)
            killed.append(seed)
            _wait_for_subscriber(fresh, lambda n: n is not seed)
            holder.release()
            assert child.answer() is True
            holder.acquire()
            child.tell("again")
            child.wait_until_waiting()
            first = _wait_for_subscriber(fresh, lambda n: True)
            fresh.kill(first)
            killed.append(first)
            _wait_for_subscriber(fresh, lambda n: n is not first)
            holder.release()
            assert child.result() is True
    finally:
        for node in killed:
            fresh.restart(node)


class Load:
    """Threads that INCR one counter and RPUSH unique items to one list (both
    on `tag`'s slot) through `handler` until stopped, keeping what was
    acknowledged, what ended with an unknown outcome, and what failed
    without running."""

    def __init__(self, handler: PyCacheHandler, tag: str, threads: int = 4) -> None:
        self.counter = f"{{{tag}}}:n"
        self.items = f"{{{tag}}}:items"
        self.handler = handler
        self.stop_event = threading.Event()
        self.acked = [0] * threads
        self.unknown = [0] * threads
        self.acked_items: list[set[str]] = [set() for _ in range(threads)]
        self.unknown_items: list[set[str]] = [set() for _ in range(threads)]
        self.not_run: list[BaseException] = []
        self.other: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(t,)) for t in range(threads)]

    def _run(self, t: int) -> None:
        lst = self.handler.create_list(self.items)
        i = 0
        while not self.stop_event.is_set():
            try:
                self.handler.incr(self.counter)
                self.acked[t] += 1
            except CacheOutcomeUnknownError:
                self.unknown[t] += 1
            except CacheConnectionError as exc:
                self.not_run.append(exc)
            except BaseException as exc:  # reported by check()
                self.other.append(exc)
                return
            item = f"{t}:{i}"
            i += 1
            try:
                lst.append(item)
                self.acked_items[t].add(item)
            except CacheOutcomeUnknownError:
                self.unknown_items[t].add(item)
            except CacheConnectionError as exc:
                self.not_run.append(exc)
            except BaseException as exc:
                self.other.append(exc)
                return

    def __enter__(self) -> Load:
        for th in self.threads:
            th.start()
        return self

    def progress(self, ops: int, timeout: float = 60) -> None:
        """Wait until every thread has had `ops` more increments acknowledged."""
        target = [n + ops for n in self.acked]
        deadline = time.monotonic() + timeout
        while any(n < want for n, want in zip(self.acked, target, strict=True)):
            assert not self.other, self.other
            assert time.monotonic() < deadline, f"no progress: {self.acked} < {target}"
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for th in self.threads:
            th.join(60)

    def outcome(self, observer: redis.cluster.RedisCluster) -> dict[str, int]:
        assert not self.other, self.other
        stored = int(observer.get(self.counter) or 0)
        items = [b.decode() for b in observer.lrange(self.items, 0, -1)]
        acked, unknown = sum(self.acked), sum(self.unknown)
        acked_items = set().union(*self.acked_items)
        unknown_items = set().union(*self.unknown_items)
        duplicates = [item for item, n in Counter(items).items() if n > 1]
        stored_items = {item.strip('"') for item in items}
        return {
            "acked": acked,
            "stored": stored,
            "unknown": unknown,
            "lost_incr": max(0, acked - stored),
            "acked_items": len(acked_items),
            "stored_items": len(items),
            "unknown_items": len(unknown_items),
            "lost_items": len(acked_items - stored_items),
            "duplicate_items": len(duplicates),
            "unacked_stored_items": len(stored_items - acked_items - unknown_items),
            "not_run": len(self.not_run),
        }


def _reset_stats(cluster: PrivateCluster) -> None:
    for node in cluster.nodes:
        if node.running:
            node.call("CONFIG", "RESETSTAT")


def _refusals(cluster: PrivateCluster) -> dict[str, int]:
    """The redirections and "not now" answers the running nodes gave since
    `_reset_stats` (``INFO errorstats``)."""
    seen: Counter[str] = Counter()
    for node in cluster.nodes:
        if node.running:
            stats = redis.Redis(host=node.host, port=node.port).info("errorstats")
            for name, value in stats.items():
                seen[name.removeprefix("errorstat_")] += value["count"]
    return dict(seen)


def _report(cluster: PrivateCluster, what: str, outcome: dict[str, int], seconds: float) -> None:
    print(f"\n[{cluster.kind}] {what} ({seconds:.1f} s): {outcome}; replies: {_refusals(cluster)}")


def _never_twice(outcome: dict[str, int]) -> None:
    assert outcome["stored"] <= outcome["acked"] + outcome["unknown"], outcome
    assert outcome["duplicate_items"] == 0, outcome
    assert outcome["unacked_stored_items"] == 0, outcome


def test_a_slot_migrated_under_load_applies_every_write_once(fresh, loaded, observer, capsys):
    """The classic reshard: IMPORTING on the target, MIGRATING on the
    source, MIGRATE in batches, SETSLOT NODE. Reads follow ASK meanwhile;
    writes (a once-form script whose record key does not exist yet) are
    answered TRYAGAIN until the slot has moved, and wait."""
    _reset_stats(fresh)
    started = time.monotonic()
    tag = "reshard"
    slot = key_slot(tag)
    source = fresh.master_for_slot(slot)
    target = next(m for m in fresh.masters() if m is not source)
    fillers = [f"{{{tag}}}:f{i}" for i in range(200)]
    for key in fillers:
        loaded.set(key, "x")
    with Load(loaded, tag) as load:
        load.progress(20)
        target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        # The data keys first, so that reads must follow ASK while the
        # fillers still move.
        source.call(
            "MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", load.counter, load.items
        )
        asking_before = _calls(target, "asking")
        assert int(loaded.get(load.counter)) >= sum(load.acked)
        assert loaded.get(fillers[-1]) == "x"
        assert len(loaded.create_list(load.items)) >= 1
        assert _calls(target, "asking") > asking_before, "the reads followed ASK"
        while keys := source.call("CLUSTER", "GETKEYSINSLOT", slot, 20):
            source.call("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
        for node in fresh.masters():
            node.call("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
        fresh.wait_converged()
        load.progress(20)
    assert fresh.master_for_slot(slot) is target
    outcome = load.outcome(observer)
    _report(fresh, "slot migrated under load", outcome, time.monotonic() - started)
    _never_twice(outcome)
    assert outcome["stored"] == outcome["acked"] and outcome["unknown"] == 0, outcome
    assert outcome["lost_items"] == 0 and outcome["not_run"] == 0, outcome


def test_an_atomic_slot_migration_under_load_applies_every_write_once(
    fresh, handler, observer, capsys
):
    """Valkey 9's CLUSTER MIGRATESLOTS moves the keys and the ownership in
    one operation: clients see MOVED only (or wait while the slot is handed
    over)."""
    reason = fresh.atomic_migration_unsupported()
    if reason is not None:
        pytest.skip(reason)
    _reset_stats(fresh)
    started = time.monotonic()
    tag = "atomic"
    slot = key_slot(tag)
    target = next(m for m in fresh.masters() if m is not fresh.master_for_slot(slot))
    for i in range(200):
        handler.set(f"{{{tag}}}:f{i}", "x")
    with Load(handler, tag) as load:
        load.progress(20)
        fresh.migrate_slot_atomic(slot, target)
        load.progress(20)
    assert fresh.master_for_slot(slot) is target
    outcome = load.outcome(observer)
    _report(fresh, "atomic slot migration under load", outcome, time.monotonic() - started)
    _never_twice(outcome)
    assert outcome["stored"] == outcome["acked"] and outcome["unknown"] == 0, outcome
    assert outcome["lost_items"] == 0 and outcome["not_run"] == 0, outcome


def _calls(node: ClusterNode, command: str) -> int:
    stats = redis.Redis(host=node.host, port=node.port).info("commandstats")
    return stats.get(f"cmdstat_{command}", {}).get("calls", 0)


def test_a_manual_failover_under_load_loses_nothing(fresh, loaded, observer, capsys):
    _reset_stats(fresh)
    started = time.monotonic()
    tag = "failover"
    master = fresh.master_for_slot(key_slot(tag))
    replica = fresh.replicas(master)[0]
    with Load(loaded, tag) as load:
        load.progress(20)
        fresh.failover(replica)
        load.progress(20)
    assert fresh.master_for_slot(key_slot(tag)) is replica
    outcome = load.outcome(observer)
    _report(fresh, "CLUSTER FAILOVER under load", outcome, time.monotonic() - started)
    _never_twice(outcome)
    assert outcome["stored"] == outcome["acked"] and outcome["unknown"] == 0, outcome
    assert outcome["lost_items"] == 0 and outcome["not_run"] == 0, outcome


def test_a_master_killed_under_load_never_applies_a_write_twice(fresh, loaded, observer, capsys):
    """SIGKILL a primary; its replica takes over. Replication is
    asynchronous, so writes acknowledged just before the crash may be lost:
    they are counted and reported, not hidden. What must hold: nothing is
    applied twice, and the loaded carries on."""
    _reset_stats(fresh)
    started = time.monotonic()
    tag = "crash"
    master = fresh.master_for_slot(key_slot(tag))
    replica = fresh.replicas(master)[0]
    try:
        with Load(loaded, tag) as load:
            load.progress(20)
            fresh.kill(master)
            fresh.wait_converged()
            load.progress(20)
        assert fresh.master_for_slot(key_slot(tag)) is replica
        outcome = load.outcome(observer)
        _report(fresh, "primary SIGKILLed under load", outcome, time.monotonic() - started)
        _never_twice(outcome)
    finally:
        fresh.restart(master)
    assert loaded.incr(load.counter) == outcome["stored"] + 1
