"""Behind Sentinel (`redis+sentinel://`), on private Valkey and Redis groups:
finding the primary, redis-py's Sentinel clients, and failovers under load,
where nothing may be applied twice and, with ``wait_replicas``, nothing
acknowledged may be lost."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis
from helpers import RELEASE_CHANNEL, SpawnedWaiter
from hostile_server import HANDSHAKE, read_command
from redis.sentinel import Sentinel

from madsci_cache_rs import CacheOutcomeUnknownError, PyCacheHandler, Redlock
from madsci_cache_rs.testing import PrivateSentinelGroup, PrivateServer, ServerUnavailable

KINDS = ("valkey", "redis")


def start_group(kind: str) -> PrivateSentinelGroup:
    try:
        return PrivateSentinelGroup(kind).start()
    except ServerUnavailable as exc:
        pytest.skip(f"no {kind} server on this machine: {exc}")


@pytest.fixture(scope="module", params=KINDS)
def group(request: pytest.FixtureRequest) -> Iterator[PrivateSentinelGroup]:
    """A group the tests here share and do not fault."""
    with start_group(request.param) as g:
        yield g


def on_primary(group: PrivateSentinelGroup) -> redis.Redis:
    primary = group.primary()
    return redis.Redis(host=primary.host, port=primary.port)


def test_a_handler_finds_the_primary(group):
    h = PyCacheHandler.from_url(group.url)
    try:
        assert h.url.startswith("redis+sentinel://") and group.service in h.url
        h.set("where", "primary")
        d = h.create_dict("state")
        d["nodes"] = {"a": 1}
        h.create_list("queue").append("job")
        with h.create_lock("lab", auto_release_time=5):
            pass
        raw = on_primary(group)
        assert raw.get("where") == b"primary"
        assert raw.hgetall("state") == {b'"nodes"': b'{"a": 1}'}
        assert raw.lrange("queue", 0, -1) == [b'"job"']
        raw.close()
    finally:
        h.close()


def test_a_redis_py_sentinel_client_is_read(group):
    client = Sentinel(group.sentinels).master_for(group.service)
    h = PyCacheHandler(client)
    try:
        assert h.url.startswith("redis+sentinel://")
        h.set("via", "redis-py")
        assert client.get("via") == b"redis-py"
    finally:
        h.close()
        client.close()


def test_the_environment_url_reaches_unchanged_managers(group, monkeypatch):
    monkeypatch.setenv("MADSCI_CACHE_RS_URL", group.url)
    h = PyCacheHandler.from_settings("ignored-host", 1)
    try:
        h.set("env", "yes")
        assert on_primary(group).get("env") == b"yes"
    finally:
        h.close()


def test_wait_replicas_waits_for_the_replica(group):
    h = PyCacheHandler.from_url(group.url + "?wait_replicas=1&wait_timeout=2")
    try:
        assert h.incr("replicated") == 1
        replica = group.replicas()[0]
        # WAIT returned only once the replica had it.
        assert replica.call("GET", "replicated") == b"1"
    finally:
        h.close()


def test_too_few_replicas_is_an_unknown_outcome_and_a_refused_lock(group):
    h = PyCacheHandler.from_url(group.url + "?wait_replicas=2&wait_timeout=0.2")
    try:
        with pytest.raises(CacheOutcomeUnknownError, match="1 of the 2 replica"):
            h.set("k", "v")
        assert on_primary(group).get("k") == b"v"  # applied on the primary
        lock = Redlock(key="lab", masters={h}, auto_release_time=5, context_manager_timeout=1)
        assert lock.acquire(timeout=1) is False
        assert on_primary(group).get("redlock:lab") is None, "given back"
    finally:
        h.close()


def _waits(group) -> int:
    return on_primary(group).info("commandstats").get("cmdstat_wait", {}).get("calls", 0)


def test_a_lock_release_does_not_wait_for_replicas(group):
    """An unconfirmed release can only come back, after a failover, as a lease
    that expires on its own, never as a second holder: it is sent without
    WAIT and is not an unknown outcome (raised, it halted madsci's workcell
    engine in the miniature lab's killed-primary run)."""
    h = PyCacheHandler.from_url(group.url + "?wait_replicas=1&wait_timeout=0.5")
    replica = group.replicas()[0]
    try:
        lock = h.create_lock("lab-release", 5)
        before = _waits(group)
        assert lock.acquire(blocking=False)  # confirmed by the replica
        assert _waits(group) == before + 1
        replica.pause()
        try:
            lock.release()
        finally:
            replica.resume()
        assert _waits(group) == before + 1, "the release sent a WAIT"
        assert on_primary(group).get("redlock:lab-release") is None
        # Writes still wait, and still say when the replica did not confirm.
        replica.pause()
        try:
            with pytest.raises(CacheOutcomeUnknownError, match="0 of the 1 replica"):
                h.set("after", "v")
        finally:
            replica.resume()
    finally:
        h.close()


def test_wait_replicas_is_refused_where_it_cannot_work(group):
    with pytest.raises(ValueError, match="client_cache"):
        PyCacheHandler.from_url(group.url + "?wait_replicas=1&client_cache=true")
    with pytest.raises(ValueError, match="shorter than socket_timeout"):
        PyCacheHandler.from_url(group.url + "?wait_replicas=1&wait_timeout=5&socket_timeout=2")


@dataclass
class Load:
    """Several threads each incrementing one counter and appending unique
    items, counting what was acknowledged and what had an unknown outcome."""

    handler: PyCacheHandler
    acked: int = 0
    unknown: int = 0
    acked_items: set[str] = field(default_factory=set)
    unknown_items: set[str] = field(default_factory=set)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _work(self, t: int) -> None:
        items = self.handler.create_list("items")
        i = 0
        try:
            while not self._stop.is_set():
                item = f"{t}:{i}"
                i += 1
                counted = self._attempt(lambda: self.handler.incr("n"))
                with self._lock:
                    self.acked += counted == "acked"
                    self.unknown += counted == "unknown"
                counted = self._attempt(lambda: items.append(item))  # noqa: B023 - called at once
                with self._lock:
                    {"acked": self.acked_items, "unknown": self.unknown_items}[counted].add(item)
        except BaseException as exc:  # reported at the end
            self.errors.append(exc)

    @staticmethod
    def _attempt(write) -> str:
        try:
            write()
            return "acked"
        except CacheOutcomeUnknownError:
            return "unknown"

    def run(self, fault, threads: int = 4, before: float = 1.0, after: float = 4.0) -> None:
        workers = [threading.Thread(target=self._work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        try:
            time.sleep(before)
            fault()
            time.sleep(after)
        finally:
            self._stop.set()
            for w in workers:
                w.join(60)
        assert not self.errors, self.errors[:3]


def check_after(group: PrivateSentinelGroup, load: Load, capsys, what: str) -> int:
    """What the new primary holds against what was acknowledged: never more than
    was sent (nothing applied twice); returns the acknowledged writes lost."""
    raw = on_primary(group)
    stored = int(raw.get("n") or 0)
    items = [json.loads(v) for v in raw.lrange("items", 0, -1)]
    raw.close()
    assert len(items) == len(set(items)), "an item appended twice"
    assert set(items) <= load.acked_items | load.unknown_items
    assert stored <= load.acked + load.unknown, "a counter increment applied twice"
    # Unknown outcomes that landed can hide a lost increment: a lower bound.
    lost = max(0, load.acked - stored) + len(load.acked_items - set(items))
    with capsys.disabled():
        print(
            f"\n{group.kind} {what}: {load.acked} + {len(load.acked_items)} acknowledged, "
            f"{load.unknown} + {len(load.unknown_items)} unknown, {lost} lost"
        )
    return lost


@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_primary_is_replaced_under_load(kind, capsys):
    with start_group(kind) as g:
        h = PyCacheHandler.from_url(g.url)
        load = Load(h)
        load.run(lambda: (g.kill_primary(), g.wait_failover()))
        h.close()
        check_after(g, load, capsys, "primary SIGKILLed")


@pytest.mark.parametrize("kind", KINDS)
def test_a_forced_failover_under_load(kind, capsys):
    with start_group(kind) as g:
        h = PyCacheHandler.from_url(g.url)
        load = Load(h)
        load.run(g.failover)
        h.close()
        check_after(g, load, capsys, "forced SENTINEL FAILOVER")


@pytest.mark.parametrize("kind", KINDS)
def test_a_forced_failover_with_wait_replicas_loses_nothing_acknowledged(kind, capsys):
    with start_group(kind) as g:
        h = PyCacheHandler.from_url(g.url + "?wait_replicas=1&wait_timeout=0.5")
        load = Load(h)
        load.run(g.failover)
        h.close()
        assert check_after(g, load, capsys, "forced SENTINEL FAILOVER, wait_replicas=1") == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_coordinated_failover_under_load_loses_nothing(kind, capsys):
    with start_group(kind) as g:
        reason = g.coordinated_failover_unsupported()
        if reason:
            pytest.skip(reason)
        h = PyCacheHandler.from_url(g.url)
        load = Load(h)
        load.run(lambda: g.failover(coordinated=True))
        h.close()
        assert check_after(g, load, capsys, "coordinated SENTINEL FAILOVER") == 0


@pytest.mark.parametrize("kind", KINDS)
def test_the_client_cache_follows_the_primary_through_a_failover(kind):
    """The tracking connection is dropped (and the cache emptied) when the
    sentinels switch the primary, or when the demoted primary answers
    READONLY: writes land on the new primary, and reads see its data."""
    with start_group(kind) as g:
        h = PyCacheHandler.from_url(g.url, client_cache=True)
        try:
            d = h.create_dict("d")
            d["a"] = 1
            h.set("s", "1")
            assert d.to_dict() == {"a": 1} and h.get("s") == "1"
            hits = h.client_cache_hits
            assert d.to_dict() == {"a": 1} and h.client_cache_hits == hits + 1, "held"
            old = g.primary()
            new = g.failover()
            assert new.port != old.port
            # Written on the new primary by another client after the switch.
            other = redis.Redis(host=new.host, port=new.port)
            other.hset("d", '"a"', "2")
            other.close()
            h.set("s", "2")  # a write: never to the demoted primary
            assert d.to_dict() == {"a": 2} and h.get("s") == "2"
            d["b"] = 3
            assert new.call("HGET", "d", '"b"') == b"3"
            assert new.call("GET", "s") == b"2"
            assert d.to_dict() == {"a": 2, "b": 3}
        finally:
            h.close()


class FakeSentinel:
    """A sentinel that names ``primary`` for the service ``lab`` and, on
    ``switch``, names another and announces it on ``+switch-master``, while
    the old primary stays a primary: only the announcement says it changed
    (a real failover also demotes the old primary and kills its clients)."""

    def __init__(self, primary: PrivateServer) -> None:
        self.primary = primary
        self.subscribers: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _bulks(*items: bytes) -> bytes:
        return b"*%d\r\n" % len(items) + b"".join(b"$%d\r\n%s\r\n" % (len(i), i) for i in items)

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            try:
                while (cmd := read_command(f)) is not None:
                    name = cmd[0].upper()
                    if name == b"SENTINEL":
                        p = self.primary
                        conn.sendall(self._bulks(p.host.encode(), str(p.port).encode()))
                    elif name == b"SUBSCRIBE":
                        conn.sendall(
                            b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(cmd[1]), cmd[1])
                        )
                        self.subscribers.append(conn)
                    else:
                        conn.sendall(HANDSHAKE.get(name, b"+OK\r\n"))
            except OSError:
                return

    def switch(self, to: PrivateServer) -> None:
        old, self.primary = self.primary, to
        text = f"lab {old.host} {old.port} {to.host} {to.port}".encode()
        for conn in self.subscribers:
            conn.sendall(self._bulks(b"message", b"+switch-master", text))

    def close(self) -> None:
        self._listener.close()


def test_the_client_cache_leaves_the_old_primary_when_the_sentinels_announce_a_switch():
    """Heard on +switch-master, a switch closes the tracking connection and
    empties the cache at once: nothing more is read from or written to the
    old primary, even while it still takes writes."""
    with PrivateServer("valkey") as old, PrivateServer("valkey") as new:
        fake = FakeSentinel(old)
        h = PyCacheHandler.from_url(
            f"redis+sentinel://127.0.0.1:{fake.port}/lab", client_cache=True
        )
        try:
            new.call("SET", "where", "new")
            old.call("SET", "where", "old")
            assert h.get("where") == "old" and h.get("where") == "old"
            hits = h.client_cache_hits
            assert h.get("where") == "old" and h.client_cache_hits == hits + 1, "held"
            deadline = time.monotonic() + 10
            while not fake.subscribers:  # the failover watch has subscribed
                assert time.monotonic() < deadline, "no failover watch"
                time.sleep(0.01)
            fake.switch(new)
            while h.get("where") != "new":
                assert time.monotonic() < deadline, "still reading the old primary"
                time.sleep(0.01)
            h.set("written", "after the switch")
            assert new.call("GET", "written") == b"after the switch"
            assert old.call("GET", "written") is None
        finally:
            h.close()
            fake.close()


def _wait_once(url: str, key: str, conn) -> None:
    """In a child process (a release in the test's own would wake it
    directly): polls every 30 s and gives up after 15 s, so only a heard
    release ends its wait with the lock."""
    lock = Redlock(key=key, masters=[PyCacheHandler.from_url(url)], poll_interval=30.0)
    conn.send("waiting")
    conn.send(lock.acquire(timeout=15))


def _subscribed(node: PrivateServer) -> int:
    return node.call("PUBSUB", "NUMSUB", RELEASE_CHANNEL)[1]


def _wait_for_subscriber(node: PrivateServer, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while _subscribed(node) == 0:
        assert time.monotonic() < deadline, f"no lock listener on {node!r}"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", KINDS)
def test_the_lock_listener_is_on_the_new_primary_after_a_forced_failover(kind):
    """The listener subscribes on the primary the sentinels name, and after
    a `SENTINEL FAILOVER` it is on the new one (the demoted primary drops
    it when the sentinels reconfigure it, and the failover watch's switch
    moves it), where the release that ends the wait is published."""
    with start_group(kind) as g:
        old = g.primary()
        holder = PyCacheHandler.from_url(g.url).create_lock("arm", auto_release_time=300.0)
        holder.acquire()
        # The replica has the lease before the failover: a write not yet
        # replicated is lost in it (asynchronous replication), and with it
        # the lease (Redis 7.0's replica applied it up to ~0.6 s later).
        replica = next(n for n in g.nodes if n is not old)
        deadline = time.monotonic() + 10
        while replica.call("EXISTS", "redlock:arm") == 0:
            assert time.monotonic() < deadline, "the lease never reached the replica"
            time.sleep(0.05)
        with SpawnedWaiter(_wait_once, g.url, "arm") as child:
            child.wait_until_waiting()
            _wait_for_subscriber(old)
            new = g.failover()
            _wait_for_subscriber(new)
            deadline = time.monotonic() + 15
            while _subscribed(old):
                assert time.monotonic() < deadline, "the listener stayed on the old primary"
                time.sleep(0.05)
            holder.release()
            assert child.result() is True


@pytest.mark.parametrize("kind", KINDS)
def test_the_lock_listener_follows_a_switch_the_old_primary_does_not_end(kind):
    """A switch announced on +switch-master while the old primary stays a
    primary and keeps our connection (in a real failover: one the sentinels
    cannot reach to demote, stalled or cut off): the listener moves to the
    new primary on the announcement, and hears the release made there."""
    try:
        old, new = PrivateServer(kind).start(), PrivateServer(kind).start()
    except ServerUnavailable as exc:
        pytest.skip(f"no {kind} server on this machine: {exc}")
    fake = FakeSentinel(old)
    url = f"redis+sentinel://127.0.0.1:{fake.port}/lab"
    with old, new:
        try:
            # The lock is held on both (as replication would have it).
            on_old = PyCacheHandler.from_url(old.url).create_lock("arm", auto_release_time=300.0)
            on_new = PyCacheHandler.from_url(new.url).create_lock("arm", auto_release_time=300.0)
            assert on_old.acquire() and on_new.acquire()
            with SpawnedWaiter(_wait_once, url, "arm") as child:
                child.wait_until_waiting()
                _wait_for_subscriber(old)
                deadline = time.monotonic() + 10
                while not fake.subscribers:  # the child's failover watch
                    assert time.monotonic() < deadline, "no failover watch"
                    time.sleep(0.01)
                fake.switch(new)
                _wait_for_subscriber(new)
                on_new.release()
                assert child.result() is True
        finally:
            fake.close()
