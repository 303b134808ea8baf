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
from hostile_server import HANDSHAKE, LoopbackListener, read_command
from redis.sentinel import Sentinel

from madsci_cache_rs import (
    CacheAuthenticationError,
    CacheConnectionError,
    CacheOutcomeUnknownError,
    PyCacheHandler,
    Redlock,
)
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


class FakeSentinel(LoopbackListener):
    """A sentinel that names ``primary`` for the service ``lab`` and, on
    ``switch``, names another and announces it on ``+switch-master``, while
    the old primary stays a primary: only the announcement says it changed
    (a real failover also demotes the old primary and kills its clients)."""

    def __init__(self, primary: PrivateServer) -> None:
        self.primary = primary
        self.queries = 0  # SENTINEL commands answered
        self.subscribers: list[socket.socket] = []
        super().__init__()

    @staticmethod
    def _bulks(*items: bytes) -> bytes:
        return b"*%d\r\n" % len(items) + b"".join(b"$%d\r\n%s\r\n" % (len(i), i) for i in items)

    def serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            try:
                while (cmd := read_command(f)) is not None:
                    name = cmd[0].upper()
                    if name == b"SENTINEL":
                        self.queries += 1
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


class FirstByteSentinel(LoopbackListener):
    """A listener in a sentinel's place that only notes how each client
    opens its connection, TLS (a handshake record, 0x16) or plain RESP
    (``*``), and hangs up: no TLS server needed to tell which one a client
    speaks to the sentinels."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                first = conn.recv(1)
            except OSError:
                return
            self.seen.append({b"\x16": "tls", b"*": "plain"}.get(first, repr(first)))

    def first_seen(self, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while not self.seen:
            assert time.monotonic() < deadline, "no client came to the sentinel"
            time.sleep(0.01)
        return self.seen[0]


def failing_ping(client: redis.Redis) -> None:
    try:
        client.ping()
    except redis.RedisError:
        pass


SENTINEL_TLS_CASES = [
    # (data-node options, sentinel_kwargs, the sentinels' protocol, data nodes' TLS)
    ({}, None, "plain", False),
    ({"ssl": True, "ssl_cert_reqs": "none"}, None, "plain", True),
    ({}, {"ssl": True, "ssl_cert_reqs": "none"}, "tls", False),
    (
        {"ssl": True, "ssl_cert_reqs": "none"},
        {"ssl": True, "ssl_cert_reqs": "none"},
        "tls",
        True,
    ),
]


@pytest.mark.parametrize(
    ("data", "sentinel_kwargs", "sentinels_speak", "data_tls"), SENTINEL_TLS_CASES
)
def test_a_redis_py_sentinel_client_keeps_the_sentinels_tls_apart_from_the_data_nodes(
    monkeypatch, data, sentinel_kwargs, sentinels_speak, data_tls
):
    """redis-py's ``Sentinel(..., ssl=True)`` speaks TLS to the data nodes
    only: the sentinels are clients of their own, built from
    ``sentinel_kwargs``. A handler built from such a client talks to the
    sentinels as redis-py does (seen by a stand-in sentinel) and to the data
    nodes with TLS exactly when redis-py would (its URL's scheme)."""
    monkeypatch.setenv("MADSCI_CACHE_RS_RETRY_WINDOW", "0")
    theirs, ours = FirstByteSentinel(), FirstByteSentinel()
    try:
        for fake, check in ((theirs, "redis-py"), (ours, "ours")):
            client = Sentinel(
                [("127.0.0.1", fake.port)],
                sentinel_kwargs=sentinel_kwargs,
                socket_timeout=2,
                **data,
            ).master_for("lab", socket_timeout=2)
            if check == "redis-py":
                # It fails, after seconds of retries; only its first
                # connection is of interest, so it is not waited for.
                threading.Thread(target=failing_ping, args=(client,), daemon=True).start()
                fake.first_seen()
            else:
                h = PyCacheHandler(client)
                try:
                    scheme = "rediss+sentinel://" if data_tls else "redis+sentinel://"
                    assert h.url.startswith(scheme), h.url
                    with pytest.raises(CacheConnectionError):
                        h.set("k", "v")
                finally:
                    h.close()
        assert theirs.first_seen() == sentinels_speak, "redis-py itself does otherwise"
        assert ours.first_seen() == sentinels_speak
    finally:
        theirs.close()
        ours.close()


SENTINEL_SECRET = "s3ntinel-only"


@pytest.mark.parametrize("kind", KINDS)
def test_sentinels_with_their_own_password(kind, caplog):
    """Sentinels with a ``requirepass`` of their own (the data nodes have
    none): ``sentinel_password`` in the URL, as a keyword, or in redis-py's
    ``sentinel_kwargs`` logs in to them; a wrong one is an authentication
    error that never shows the password."""
    try:
        group = PrivateSentinelGroup(kind, sentinel_password=SENTINEL_SECRET).start()
    except ServerUnavailable as exc:
        pytest.skip(f"no {kind} server on this machine: {exc}")
    with group:
        assert f"sentinel_password={SENTINEL_SECRET}" in group.url
        bare_url = group.url.split("?")[0]
        handlers = [
            PyCacheHandler.from_url(group.url),
            PyCacheHandler.from_url(bare_url, sentinel_password=SENTINEL_SECRET),
            PyCacheHandler(
                Sentinel(group.sentinels, sentinel_kwargs={"password": SENTINEL_SECRET}).master_for(
                    group.service
                )
            ),
        ]
        for n, h in enumerate(handlers):
            try:
                h.set(f"k{n}", str(n))
                assert h.get(f"k{n}") == str(n)
                assert SENTINEL_SECRET not in repr(h) and SENTINEL_SECRET not in h.url
            finally:
                h.close()
        assert on_primary(group).get("k2") == b"2"

        caplog.set_level("DEBUG", logger="madsci_cache_rs")
        for wrong in (
            lambda: PyCacheHandler.from_url(
                f"{bare_url}?sentinel_password=not-{SENTINEL_SECRET}", retry_window=0
            ),
            lambda: PyCacheHandler.from_url(bare_url, retry_window=0),
        ):
            with pytest.raises(CacheAuthenticationError) as err:
                h = wrong()
                try:
                    h.set("k", "v")
                finally:
                    h.close()
            assert SENTINEL_SECRET not in str(err.value) and SENTINEL_SECRET not in repr(err.value)
        assert SENTINEL_SECRET not in caplog.text


def readonly_errors(server: PrivateServer) -> int:
    """How many commands ``server`` refused with READONLY (``INFO errorstats``)."""
    stat = server.info("errorstats").get("errorstat_READONLY", "count=0")
    return int(stat.split(",")[0].split("=")[1])


@pytest.mark.parametrize("kind", KINDS)
def test_a_node_named_by_a_sentinel_that_is_a_replica_is_not_written_to(kind):
    """The ROLE check alone: the sentinel names a replica that takes writes
    (``replica-read-only no``, so no READONLY would give it away) until it
    names the real primary. The write waits for that and lands on the
    primary only."""
    with PrivateServer(kind) as replica, PrivateServer(kind) as primary:
        replica.call("REPLICAOF", primary.host, str(primary.port))
        replica.call("CONFIG", "SET", "replica-read-only", "no")
        fake = FakeSentinel(replica)
        h = PyCacheHandler.from_url(f"redis+sentinel://127.0.0.1:{fake.port}/lab", retry_window=10)
        try:

            def name_the_primary_later() -> None:
                time.sleep(0.7)
                fake.primary = primary

            threading.Thread(target=name_the_primary_later, daemon=True).start()
            h.create_list("queue").append("job")
            assert primary.call("LRANGE", "queue", "0", "-1") == [b'"job"']
            assert fake.queries >= 2, "the replica was never named"
            assert readonly_errors(replica) == 0
        finally:
            h.close()
            fake.close()
            # Else the primary's shutdown waits for its replica (seconds).
            replica.call("REPLICAOF", "NO", "ONE")


@pytest.mark.parametrize("kind", KINDS)
def test_a_primary_demoted_without_an_announcement_is_left_at_its_readonly(kind):
    """READONLY alone: the primary a pooled connection is on becomes a
    replica (``REPLICAOF``) with no ``+switch-master`` heard, and the
    sentinel now names the new primary. The write answered READONLY is sent
    again after asking the sentinel, and applied once."""
    with PrivateServer(kind) as old, PrivateServer(kind) as new:
        fake = FakeSentinel(old)
        h = PyCacheHandler.from_url(f"redis+sentinel://127.0.0.1:{fake.port}/lab", retry_window=10)
        try:
            queue = h.create_list("queue")
            queue.append("before")
            assert old.call("LRANGE", "queue", "0", "-1") == [b'"before"']
            fake.primary = new
            old.call("REPLICAOF", new.host, str(new.port))
            queue.append("after")
            assert new.call("LRANGE", "queue", "0", "-1") == [b'"after"']
            assert readonly_errors(old) >= 1, "the pooled connection never met READONLY"
        finally:
            h.close()
            fake.close()
            # Else the new primary's shutdown waits for its replica (seconds).
            old.call("REPLICAOF", "NO", "ONE")


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
