"""``Redlock`` on several independent masters (pottery's multi-master
``Redlock``), on three private servers of each kind: quorum and validity as
pottery's, mutual exclusion with pottery on the same masters both ways,
masters down (one: still a quorum; two: refused at once, no key left), a
master holding the key for someone else, an acquire that took too long, and
release/extend/locked outcomes compared with pottery's side by side."""

from __future__ import annotations

import _thread
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pottery
import pytest
import redis
from helpers import SpawnedWaiter, assert_ctrl_c_ends_a_lock_wait
from pottery.exceptions import QuorumIsImpossible
from redis.backoff import NoBackoff
from redis.retry import Retry

from madsci_cache_rs import (
    CacheConnectionError,
    ExtendUnlockedLock,
    PyCacheHandler,
    QuorumNotAchieved,
    Redlock,
    ReleaseUnlockedLock,
    TooManyExtensions,
)
from madsci_cache_rs.testing import LoopbackProxy, PrivateServer, ServerUnavailable

KINDS = ("valkey", "redis")


@pytest.fixture(scope="module", params=KINDS)
def trio(request: pytest.FixtureRequest) -> Iterator[list[PrivateServer]]:
    servers: list[PrivateServer] = []
    try:
        for _ in range(3):
            servers.append(PrivateServer(request.param).start())
    except ServerUnavailable as exc:
        for srv in servers:
            srv.close()
        pytest.skip(f"no {request.param} server on this machine: {exc}")
    yield servers
    for srv in servers:
        srv.close()


@pytest.fixture
def masters(trio: list[PrivateServer]) -> Iterator[list[PrivateServer]]:
    """The three masters, running and empty; whatever a test stopped or
    paused is brought back after it."""
    for srv in trio:
        srv.start()
        srv.flushall()
    yield trio
    for srv in trio:
        srv.resume()
        srv.start()


@pytest.fixture
def raws(masters: list[PrivateServer]) -> Iterator[list[redis.Redis]]:
    """Observers, and the clients pottery is given: without redis-py's
    retries, which only make pottery slow (about 4 s per call on a stopped
    master), not different."""
    clients = [redis.Redis(host=s.host, port=s.port, retry=Retry(NoBackoff(), 0)) for s in masters]
    yield clients
    for c in clients:
        c.close()


@pytest.fixture(autouse=True)
def quiet_pottery() -> Iterator[None]:
    # pottery logs a traceback per master error; the tests stop masters.
    log = logging.getLogger("pottery")
    level = log.level
    log.setLevel(logging.CRITICAL)
    yield
    log.setLevel(level)


def ours(masters: list[PrivateServer], key: str = "k", **kw) -> Redlock:
    return Redlock(key=key, masters=[s.url for s in masters], **kw)


def potterys(raws: list[redis.Redis], key: str = "k", **kw) -> pottery.Redlock:
    return pottery.Redlock(key=key, masters=set(raws), **kw)


def stored(raws: list[redis.Redis], key: str = "redlock:k") -> list[bytes | None]:
    return [r.get(key) for r in raws]


def settled(raws: list[redis.Redis], key: str = "redlock:k") -> list[bytes | None]:
    """``stored`` once it stops showing a lease on its way out: a release
    (ours and pottery's) returns once a quorum answered, and the last
    master's answer may still be coming (up to 2 s)."""
    deadline = time.monotonic() + 2
    while any(stored(raws, key)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return stored(raws, key)


def live_lock_keys(masters: list[PrivateServer]) -> list[list[bytes]]:
    """The ``redlock:`` keys on each running master."""
    out = []
    for srv in masters:
        if srv.running:
            with redis.Redis(host=srv.host, port=srv.port) as r:
                out.append(r.keys("redlock:*"))
    return out


# --- wire format and exclusion ----------------------------------------------------


def test_the_lease_is_on_every_master_in_potterys_format(masters, raws):
    lock = ours(masters, auto_release_time=2.5)
    assert lock.acquire(blocking=False) is True
    on_all_three(raws)  # granted with a quorum; the third answers just after
    tokens = stored(raws)
    assert len(set(tokens)) == 1 and tokens[0] is not None
    token = tokens[0].decode()
    assert str(uuid.UUID(token)) == token and uuid.UUID(token).version == 4
    assert all(0 < r.pttl("redlock:k") <= 2500 for r in raws)
    assert 2.0 < lock.locked() < 2.5
    lock.release()
    assert settled(raws) == [None, None, None]


@pytest.mark.parametrize("first", ["ours", "pottery"])
def test_ours_and_potterys_exclude_each_other_on_the_same_masters(masters, raws, first):
    make: dict[str, Callable[[], object]] = {
        "ours": lambda: ours(masters),
        "pottery": lambda: potterys(raws),
    }
    second = "pottery" if first == "ours" else "ours"
    holder, other = make[first](), make[second]()
    assert holder.acquire(blocking=False) is True
    assert other.acquire(blocking=False) is False
    assert other.acquire(timeout=0.3) is False
    holder.release()
    assert other.acquire(blocking=False) is True
    assert holder.acquire(blocking=False) is False
    other.release()
    assert settled(raws) == [None, None, None]


def test_threads_with_our_locks_and_potterys_never_overlap(masters, raws):
    inside: list[str] = []
    overlaps: list[list[str]] = []
    errors: list[BaseException] = []

    def work(name: str, lock) -> None:
        try:
            for _ in range(6):
                assert lock.acquire(timeout=20)
                inside.append(name)
                if len(inside) > 1:
                    overlaps.append(list(inside))
                time.sleep(0.002)
                inside.remove(name)
                lock.release()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(f"ours{i}", ours(masters))) for i in range(2)
    ] + [threading.Thread(target=work, args=(f"pottery{i}", potterys(raws))) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # No check for keys left: pottery stops waiting for the last master
    # once it has a quorum, and its late SET can land after its release.
    assert errors == [] and overlaps == []


def test_our_threads_leave_no_key_behind_even_when_a_master_answers_late(masters, raws):
    errors: list[BaseException] = []

    def work() -> None:
        lock = ours(masters)
        try:
            for _ in range(30):
                assert lock.acquire(timeout=20)
                lock.release()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert settled(raws) == [None, None, None]


# --- masters down -------------------------------------------------------------------


def test_one_master_down_still_makes_a_quorum(masters, raws):
    masters[2].stop()
    for lock in (ours(masters), potterys(raws)):
        assert lock.acquire(blocking=False) is True
        assert lock.locked() > 9
        lock.extend()
        lock.release()
        assert settled(raws[:2]) == [None, None]


def test_two_masters_down_is_refused_at_once_and_leaves_no_key(masters):
    masters[1].stop()
    masters[2].stop()
    lock = ours(masters)
    # The wait rule, not a benchmark: one try per master, asked at once, so
    # each dead master costs a refused connection (pottery with redis-py's
    # default clients: about 9 s here).
    began = time.monotonic()
    assert lock.acquire(blocking=False) is False
    assert time.monotonic() - began < 1.0
    assert live_lock_keys(masters) == [[]]
    began = time.monotonic()
    with pytest.raises(QuorumNotAchieved):
        with ours(masters, context_manager_blocking=False):
            pass
    assert time.monotonic() - began < 1.0
    with pytest.raises(QuorumNotAchieved):
        with ours(masters, context_manager_timeout=0.2):
            pass
    handler = PyCacheHandler.from_url(masters[0].url)
    began = time.monotonic()
    lock = handler.create_lock("k", 5, masters=[s.url for s in masters])
    assert lock.acquire(timeout=0.2) is False
    assert time.monotonic() - began < 1.0
    assert live_lock_keys(masters) == [[]]


def test_raise_on_redis_errors_raises_when_most_masters_fail(masters, raws):
    masters[1].stop()
    masters[2].stop()
    with pytest.raises(QuorumIsImpossible):
        potterys(raws).acquire(blocking=False, raise_on_redis_errors=True)
    # pottery's QuorumIsImpossible: ours raises the masters' connection error.
    with pytest.raises(CacheConnectionError):
        ours(masters).acquire(blocking=False, raise_on_redis_errors=True)
    with pytest.raises(CacheConnectionError):
        ours(masters, raise_on_redis_errors=True).acquire(blocking=False)
    assert ours(masters).acquire(blocking=False) is False
    assert live_lock_keys(masters) == [[]]


def test_a_master_holding_the_key_for_someone_else_counts_against_the_quorum(masters, raws):
    raws[0].set("redlock:k", "someone-else", px=60_000)
    for lock in (ours(masters), potterys(raws)):
        assert lock.acquire(blocking=False) is True  # two of three
        lock.release()
    masters[2].stop()
    for lock in (ours(masters), potterys(raws)):
        assert lock.acquire(blocking=False) is False  # one of three
        assert stored(raws[:2]) == [b"someone-else", None], "given back on master 1"


def test_a_quorum_reached_after_the_lease_ran_out_is_refused_and_given_back(masters, raws):
    """Master 2 is frozen until after the lease would have run out; master 1
    holds the key for someone else, so the quorum needs master 2's late yes."""
    outcomes = {}
    for name, make in (("ours", lambda: ours(masters, auto_release_time=0.5)),
                       ("pottery", lambda: potterys(raws, auto_release_time=0.5))):  # fmt: skip
        lock = make()
        raws[1].set("redlock:k", "someone-else", px=60_000)
        masters[2].pause()
        thaw = threading.Timer(0.8, masters[2].resume)
        thaw.start()
        got = lock.acquire(blocking=False)
        thaw.join()
        time.sleep(0.05)  # pottery gives back master 2 from its pool thread
        outcomes[name] = (got, stored(raws))
        raws[1].delete("redlock:k")
    assert outcomes["ours"] == outcomes["pottery"] == (False, [None, b"someone-else", None])


# --- release, extend, locked: side by side with pottery ------------------------------


def on_all_three(raws: list[redis.Redis]) -> None:
    """Wait for an acquire's last master (it returns once it has a quorum)."""
    deadline = time.monotonic() + 2
    while not all(stored(raws)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(stored(raws))


def _script(lock, raws: list[redis.Redis]) -> list[object]:
    """One sequence of calls; each step's outcome (a value or an exception's name)."""
    out: list[object] = []

    def step(call: Callable[[], object]) -> None:
        try:
            value = call()
        except Exception as exc:  # the outcome compared
            out.append(type(exc).__name__)
        else:
            out.append(value if not isinstance(value, float) else value > 0)

    step(lock.release)
    step(lock.extend)
    step(lock.locked)
    step(lambda: lock.acquire(blocking=False))
    step(lock.locked)
    for _ in range(4):
        step(lock.extend)
    step(lock.release)
    step(lock.release)
    step(lock.locked)
    # Our lease lost on one master: still a quorum.
    step(lambda: lock.acquire(blocking=False))
    on_all_three(raws)
    raws[0].delete("redlock:k")
    step(lock.locked)
    step(lock.release)
    # Lost on two: no quorum to release, extend or report.
    step(lambda: lock.acquire(blocking=False))
    on_all_three(raws)
    raws[0].delete("redlock:k")
    raws[1].set("redlock:k", "someone-else")
    step(lock.locked)
    step(lock.extend)
    step(lock.release)
    raws[1].delete("redlock:k")
    raws[2].delete("redlock:k")
    return out


def test_release_extend_and_locked_match_potterys(masters, raws):
    ours_out = _script(ours(masters, num_extensions=3), raws)
    pottery_out = _script(potterys(raws, num_extensions=3), raws)
    assert ours_out == pottery_out
    assert ours_out[:5] == ["ReleaseUnlockedLock", "ExtendUnlockedLock", 0, True, True]
    assert ours_out[8] == TooManyExtensions.__name__
    assert ours_out[-3:] == [0, ExtendUnlockedLock.__name__, ReleaseUnlockedLock.__name__]


# --- the handler, waiters -----------------------------------------------------------


def test_create_lock_takes_masters_as_clients_handlers_or_urls(masters, raws):
    handler = PyCacheHandler.from_url(masters[0].url)
    lock = handler.create_lock(
        "k",
        5,
        masters=[handler, redis.Redis(host=masters[1].host, port=masters[1].port), masters[2].url],
    )
    assert lock.acquire(blocking=False) is True
    on_all_three(raws)
    assert len(set(stored(raws))) == 1 and stored(raws)[0] is not None
    assert all(0 < r.pttl("redlock:k") <= 5000 for r in raws)
    assert potterys(raws).acquire(blocking=False) is False
    lock.release()
    # The same server given twice counts once: one master, not a quorum of two.
    twice = handler.create_lock("k", 5, masters=[handler, masters[0].url])
    assert twice.acquire(blocking=False) is True
    assert stored(raws) == [stored(raws)[0], None, None]
    twice.release()
    with pytest.raises(ReleaseUnlockedLock):
        twice.release()


LONG_POLL = 30.0


def _wait_on_masters(urls: list[str], conn) -> None:
    lock = Redlock(key="k", masters=urls, poll_interval=LONG_POLL)
    conn.send("waiting")
    conn.send(lock.acquire(timeout=10))


def test_a_release_wakes_a_waiter_in_another_process(masters):
    """The waiter polls every 30 s and the holder's lease is 60 s: only the
    release message (from any master) can wake it within its 10 s."""
    holder = ours(masters, auto_release_time=60)
    assert holder.acquire()
    with SpawnedWaiter(_wait_on_masters, [s.url for s in masters]) as child:
        child.wait_until_waiting()
        time.sleep(0.5)
        holder.release()
        assert child.result() is True


def test_a_release_wakes_a_waiter_in_this_process(masters):
    holder = ours(masters, auto_release_time=60)
    assert holder.acquire()
    got = []
    waiter = threading.Thread(
        target=lambda: got.append(ours(masters, poll_interval=LONG_POLL).acquire(timeout=10))
    )
    waiter.start()
    time.sleep(0.2)
    holder.release()
    waiter.join()
    assert got == [True]


def test_ctrl_c_interrupts_a_wait_on_several_masters(masters, raws):
    assert_ctrl_c_ends_a_lock_wait(lambda: ours(masters))


def test_ctrl_c_during_a_try_gives_back_what_it_took(masters, raws):
    """Master 2 is frozen, master 1 holds the key for someone else: the try
    waits on master 2 when Ctrl-C comes. What master 0 took is given back at
    once, and what master 2 takes once thawed is given back by its thread."""
    raws[1].set("redlock:k", "someone-else", px=60_000)
    masters[2].pause()
    threading.Timer(0.3, _thread.interrupt_main).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            ours(masters).acquire(blocking=False)
        assert stored(raws[:2]) == [None, b"someone-else"]
    finally:
        masters[2].resume()
    deadline = time.monotonic() + 5
    while raws[2].exists("redlock:k") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stored(raws) == [None, b"someone-else", None]


def test_a_silent_master_costs_its_connect_timeout_not_the_retry_window(masters, raws):
    """A master that takes connections and never answers (a socket nobody
    accepts on): with a quorum without it, the acquire does not wait for it;
    without, the try ends after that master's connect timeout (0.5 s here),
    not after the 30 s retry window of a single-server call."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        port = silent.getsockname()[1]
        urls = [
            masters[0].url,
            masters[1].url,
            f"redis://127.0.0.1:{port}/0?socket_connect_timeout=0.5",
        ]
        lock = Redlock(key="k", masters=urls)
        assert lock.acquire(blocking=False) is True
        lock.release()
        assert settled(raws[:2]) == [None, None]
        masters[1].stop()
        began = time.monotonic()
        assert Redlock(key="k", masters=urls).acquire(blocking=False) is False
        assert time.monotonic() - began < 5
        assert stored(raws[:1]) == [None]
    finally:
        silent.close()


class ReplyLosingProxy(LoopbackProxy):
    """Forwards both ways, but drops the next reply once ``lose_next`` is
    set: the command runs on the server and its answer never arrives."""

    lose_next = False

    def serve(self, client: socket.socket, upstream: socket.socket) -> None:
        def pump(src: socket.socket, dst: socket.socket, replies: bool) -> None:
            try:
                while data := src.recv(65536):
                    if replies and self.lose_next:
                        self.lose_next = False
                        continue
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    s.close()

        threading.Thread(target=pump, args=(client, upstream, False), daemon=True).start()
        pump(upstream, client, True)


def test_a_lost_acquire_reply_is_given_back_too(masters, raws):
    """Master 2's reply to our SET is lost (it ran), master 1 holds the key
    for someone else: refused, and master 2 is given the token back (without
    the acquire waiting for it), not left holding it for the lease."""
    proxy = ReplyLosingProxy(masters[2].port)
    try:
        urls = [
            masters[0].url,
            masters[1].url,
            f"redis://127.0.0.1:{proxy.port}/0?socket_timeout=0.3",
        ]
        lock = Redlock(key="k", masters=urls, auto_release_time=60)
        assert lock.acquire(blocking=False) is True  # connections made
        lock.release()
        assert settled(raws) == [None, None, None]
        raws[1].set("redlock:k", "someone-else", px=60_000)
        proxy.lose_next = True
        assert lock.acquire(blocking=False) is False
        assert proxy.lose_next is False, "master 2's answer was dropped"
        assert settled([raws[0], raws[2]]) == [None, None]
    finally:
        proxy.close()
