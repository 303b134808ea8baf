"""``Redlock`` on real Valkey and Redis: pottery's semantics one by one,
pottery interop both ways, mutual exclusion under threads and processes,
hand-off (measured, reported, not asserted), a server restart, a lost reply."""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import statistics
import threading
import time
import uuid

import pottery
import pytest
import redis
from helpers import SpawnedWaiter, assert_ctrl_c_ends_a_lock_wait

from madsci_cache_rs import (
    CacheConnectionError,
    ExtendUnlockedLock,
    InMemoryCacheHandler,
    PyCacheHandler,
    QuorumNotAchieved,
    Redlock,
    ReleaseUnlockedLock,
    TooManyExtensions,
)
from madsci_cache_rs.testing import PrivateServer


@pytest.fixture
def pottery_client(server, raw):
    """The client madsci builds for pottery."""
    client = redis.Redis(host=server.host, port=server.port, decode_responses=True)
    yield client
    client.close()


def pottery_lock(client: redis.Redis, key: str, auto_release_time: float = 10) -> pottery.Redlock:
    return pottery.Redlock(key=key, masters={client}, auto_release_time=auto_release_time)


# --- wire format and construction -------------------------------------------------


def test_wire_format_is_potterys(handler, raw):
    lock = handler.create_lock("node:1", auto_release_time=2.5)
    assert lock.key == "redlock:node:1" and repr(lock) == "<Redlock key=redlock:node:1>"
    assert raw.keys() == []  # construction sends nothing
    assert lock.acquire() is True
    stored = raw.get("redlock:node:1").decode()
    assert str(uuid.UUID(stored)) == stored and uuid.UUID(stored).version == 4
    assert 2000 < raw.pttl("redlock:node:1") <= 2500
    lock.release()
    assert raw.exists("redlock:node:1") == 0


def test_each_acquisition_stores_a_new_token(handler, raw):
    lock = handler.create_lock("k")
    tokens = set()
    for _ in range(3):
        with lock:
            tokens.add(raw.get("redlock:k"))
    assert len(tokens) == 3


def test_constructor_takes_potterys_arguments(server, raw, handler):
    client = redis.Redis(host=server.host, port=server.port)
    for masters in ({client}, [handler], server.url):
        lock = Redlock(key="k", masters=masters, auto_release_time=0.5, num_extensions=1)
        assert (lock.auto_release_time, lock.num_extensions) == (0.5, 1)
        with lock:
            assert raw.get("redlock:k") is not None
        assert raw.exists("redlock:k") == 0
    # The same server twice is one master (pottery would count two, and
    # never get both: test_redlock_masters.py has several servers).
    with Redlock(key="k", masters=[client, handler]):
        assert raw.get("redlock:k") is not None
    with pytest.raises(ValueError, match="non-blocking"):
        Redlock(
            key="k", masters={client}, context_manager_blocking=False, context_manager_timeout=1
        )
    with pytest.raises(ValueError):
        handler.create_lock("k", auto_release_time=0)
    with pytest.raises(TypeError):
        handler.create_lock(b"k")
    assert handler.create_lock("k").auto_release_time == 60  # madsci's default


def test_acquire_argument_rules(handler):
    lock = handler.create_lock("k")
    with pytest.raises(ValueError, match="non-blocking"):
        lock.acquire(blocking=False, timeout=1)
    with pytest.raises(ValueError):
        lock.acquire(timeout=-2)
    assert lock.acquire(blocking=False) is True
    lock.release()


# --- semantics ----------------------------------------------------------------------


def test_not_reentrant(handler, raw):
    """As pottery: a second acquire on the holder draws a new token and
    fails; the first lease is orphaned, so release then finds no lease of ours."""
    lock = handler.create_lock("k")
    assert lock.acquire()
    first = raw.get("redlock:k")
    assert lock.acquire(blocking=False) is False
    assert lock.acquire(timeout=0.05) is False
    assert raw.get("redlock:k") == first
    with pytest.raises(ReleaseUnlockedLock):
        lock.release()
    assert raw.get("redlock:k") == first


def test_a_held_lock_excludes_other_objects(handler):
    a, b = handler.create_lock("k"), handler.create_lock("k")
    assert a.acquire()
    assert b.acquire(blocking=False) is False
    assert handler.create_lock("other").acquire(blocking=False) is True
    a.release()
    assert b.acquire(blocking=False) is True
    b.release()


def test_with_raises_quorum_not_achieved_when_it_cannot_acquire(handler):
    holder = handler.create_lock("k")
    holder.acquire()
    waiter = handler.create_lock("k")
    waiter.context_manager_timeout = 0.05
    with pytest.raises(QuorumNotAchieved) as err, waiter:
        pass
    assert isinstance(err.value, RuntimeError) and "redlock:k" in str(err.value)
    waiter.context_manager_blocking = False
    waiter.context_manager_timeout = -1
    with pytest.raises(QuorumNotAchieved), waiter:
        pass
    holder.release()
    with waiter:
        assert waiter.locked() > 0
    assert waiter.locked() == 0


def test_release_of_a_lock_not_held(handler):
    lock = handler.create_lock("k")
    with pytest.raises(ReleaseUnlockedLock):
        lock.release()
    lock.acquire()
    lock.release()
    with pytest.raises(ReleaseUnlockedLock):
        lock.release()


def test_locked_reports_seconds_left_on_our_lease_only(handler):
    lock, other = handler.create_lock("k", auto_release_time=5), handler.create_lock("k")
    assert lock.locked() == 0 and type(lock.locked()) is int
    lock.acquire()
    left = lock.locked()
    assert isinstance(left, float) and 4.5 < left < 5
    assert other.locked() == 0
    lock.release()
    assert lock.locked() == 0


def test_extend_renews_at_most_num_extensions_times(handler, raw):
    lock = handler.create_lock("k", auto_release_time=2)
    with pytest.raises(ExtendUnlockedLock):
        lock.extend()
    lock.acquire()
    for _ in range(3):
        raw.pexpire("redlock:k", 500)
        lock.extend()
        assert raw.pttl("redlock:k") > 1500
    with pytest.raises(TooManyExtensions):
        lock.extend()
    lock.release()
    # The count is checked before the server, as pottery does: still too many.
    with pytest.raises(TooManyExtensions):
        lock.extend()
    lock.acquire()  # a new acquisition resets it
    lock.extend()
    lock.release()
    with pytest.raises(ExtendUnlockedLock):
        lock.extend()


def test_an_expired_lease_frees_the_lock_and_is_logged_at_release(handler, caplog):
    caplog.set_level(logging.WARNING, logger="madsci_cache_rs")
    lock = handler.create_lock("k", auto_release_time=0.15)
    other = handler.create_lock("k")
    lock.acquire()
    assert other.acquire(timeout=5) is True  # woken by the lease running out
    assert lock.locked() == 0
    with pytest.raises(ReleaseUnlockedLock):
        lock.release()
    assert any("expired before release" in r.getMessage() for r in caplog.records)
    other.release()


def test_timeout_is_honoured(handler):
    """Correctness, not speed: never gives up early, never hangs."""
    holder = handler.create_lock("k")
    holder.acquire()
    waiter = handler.create_lock("k")
    for timeout in (0.0, 0.05, 0.3):
        start = time.monotonic()
        assert waiter.acquire(timeout=timeout) is False
        elapsed = time.monotonic() - start
        assert timeout <= elapsed < timeout + 2, elapsed
    holder.release()


def test_waiting_releases_the_gil(handler):
    holder = handler.create_lock("k")
    holder.acquire()
    waiter = threading.Thread(target=lambda: handler.create_lock("k").acquire(timeout=1.0))
    waiter.start()
    time.sleep(0.05)
    total = sum(range(100_000))  # Python work, needs the GIL
    still_waiting = waiter.is_alive()
    waiter.join()
    holder.release()
    assert total and still_waiting, "the waiting thread held the GIL"


def test_ctrl_c_interrupts_a_wait(handler):
    assert_ctrl_c_ends_a_lock_wait(lambda: handler.create_lock("k"))


def test_long_waits_are_logged(handler, caplog):
    caplog.set_level(logging.INFO, logger="madsci_cache_rs")
    holder = handler.create_lock("k")
    holder.acquire()
    assert handler.create_lock("k").acquire(timeout=1.2) is False
    holder.release()
    messages = [r.getMessage() for r in caplog.records if r.name == "madsci_cache_rs"]
    assert any("waiting over 1 s for lock redlock:k" in m for m in messages), messages
    assert any("gave up on lock redlock:k" in m for m in messages), messages


def test_the_release_listeners_records_wait_for_the_next_call(caplog):
    """The listener thread never attaches to the interpreter (which it may
    outlive: tests/test_exit.py), so its records are queued and the next
    call into the library emits them."""
    caplog.set_level(logging.DEBUG, logger="madsci_cache_rs")
    with PrivateServer("valkey") as srv:
        h = PyCacheHandler.from_url(srv.url)
        try:
            holder = h.create_lock("k")
            assert holder.acquire()
            assert h.create_lock("k").acquire(timeout=0.3) is False  # starts the listener

            def listener_says(what: str) -> bool:
                return any(what in r.getMessage() for r in caplog.records)

            for _ in range(200):
                if listener_says("listening for lock releases"):
                    break
                h.ping()
                time.sleep(0.05)
            assert listener_says("listening for lock releases"), caplog.text
            srv.kill()
            time.sleep(0.5)  # the listener has seen the connection close by now
            assert not listener_says("lost its connection"), "emitted from the listener thread"
            h.ping()  # a call: it emits what the listener queued
            assert listener_says("lost its connection"), caplog.text
            srv.start()
        finally:
            h.close()


# --- pottery interop ----------------------------------------------------------------


def test_potterys_lock_excludes_ours_and_ours_takes_it_after_release(handler, pottery_client):
    theirs = pottery_lock(pottery_client, "shared")
    assert theirs.acquire()
    ours = handler.create_lock("shared")
    assert ours.acquire(blocking=False) is False
    got = []
    waiter = threading.Thread(target=lambda: got.append(ours.acquire(timeout=10)))
    waiter.start()
    time.sleep(0.05)
    theirs.release()  # no message: found by the bounded poll
    waiter.join()
    assert got == [True]
    assert theirs.acquire(blocking=False) is False
    ours.release()


def test_our_lock_excludes_potterys(handler, pottery_client):
    ours = handler.create_lock("shared", auto_release_time=5)
    theirs = pottery_lock(pottery_client, "shared")
    ours.acquire()
    assert theirs.acquire(blocking=False) is False
    assert theirs.locked() == 0
    with pytest.raises(pottery.ReleaseUnlockedLock):
        theirs.release()
    ours.release()
    assert theirs.acquire(blocking=False) is True
    assert ours.acquire(blocking=False) is False
    theirs.release()


# --- mutual exclusion ---------------------------------------------------------------


@pytest.mark.parametrize("threads", [4, 8])
def test_mutual_exclusion_under_threads(handler, threads):
    inside = 0
    overlaps = 0
    counter = {"n": 0}
    errors: list[BaseException] = []

    def work() -> None:
        nonlocal inside, overlaps
        try:
            for _ in range(40):
                with handler.create_lock("k"):
                    inside += 1
                    if inside > 1:
                        overlaps += 1
                    n = counter["n"]
                    time.sleep(0)  # invite a race
                    counter["n"] = n + 1
                    inside -= 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == [] and overlaps == 0
    assert counter["n"] == 40 * threads


def _count_in_lock(url: str, rounds: int) -> None:
    """One process of the multi-process test: a read-modify-write of a
    server counter that only the lock makes safe."""
    h = PyCacheHandler.from_url(url)
    for _ in range(rounds):
        with h.create_lock("counter-lock"):
            n = int(h.get("counter") or 0)
            h.set("counter", n + 1)


def test_mutual_exclusion_across_processes(server, raw):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_count_in_lock, args=(server.url, 40)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    assert raw.get("counter") == b"160"


def test_a_releaser_does_not_starve_a_local_waiter(handler):
    """A thread looping release/re-acquire must let a waiter in while it
    is still looping, not only once it stops."""
    stop = threading.Event()
    cycles = [0]

    def hog() -> None:
        lock = handler.create_lock("k")
        while not stop.is_set() and cycles[0] < 5000:
            with lock:
                cycles[0] += 1

    hogger = threading.Thread(target=hog)
    hogger.start()
    while cycles[0] < 10:
        time.sleep(0.001)
    waiter = handler.create_lock("k")
    got = waiter.acquire(timeout=60)
    at = cycles[0]
    stop.set()
    if got:
        waiter.release()
    hogger.join()
    assert got is True and at < 5000, at


def test_local_waiters_are_served_in_arrival_order(handler):
    holder = handler.create_lock("k")
    holder.acquire()
    order: list[int] = []

    def waiter(n: int) -> None:
        lock = handler.create_lock("k")
        assert lock.acquire(timeout=30)
        order.append(n)
        lock.release()

    threads = []
    for n in range(4):
        threads.append(threading.Thread(target=waiter, args=(n,)))
        threads[-1].start()
        time.sleep(0.1)  # each is queued before the next arrives
    holder.release()
    for t in threads:
        t.join()
    assert order == [0, 1, 2, 3]


# --- hand-off -----------------------------------------------------------------------


def pause() -> None:
    """5-25 ms, at random: a release at a fixed delay after the waiter's
    first try would line up with its fallback poll and hide a missed wake."""
    time.sleep(random.uniform(0.005, 0.025))


# Waiters that poll every 30 s instead of 10 ms: only a release message can
# wake them in time.
LONG_POLL = 30.0


def long_poll_lock(server, key: str) -> Redlock:
    return Redlock(key=key, masters=[server], poll_interval=LONG_POLL)


def test_a_release_wakes_a_waiter_in_this_process(handler):
    holder = handler.create_lock("k")
    holder.acquire()
    got = []
    waiter = threading.Thread(
        target=lambda: got.append(long_poll_lock(handler, "k").acquire(timeout=10))
    )
    waiter.start()
    time.sleep(0.2)
    holder.release()
    waiter.join()
    assert got == [True]


def _wait_once(url: str, conn) -> None:
    lock = long_poll_lock(PyCacheHandler.from_url(url), "k")
    conn.send("waiting")
    conn.send(lock.acquire(timeout=10))


def test_a_release_wakes_a_waiter_in_another_process(server, handler):
    holder = handler.create_lock("k")
    holder.acquire()
    with SpawnedWaiter(_wait_once, server.url) as child:
        child.wait_until_waiting()
        time.sleep(0.5)
        holder.release()
        assert child.result() is True


def _acquire_and_stamp(lock: Redlock, stamps: list[float]) -> None:
    lock.acquire()
    stamps.append(time.monotonic())


def _handoffs_in_process(handler: PyCacheHandler, rounds: int) -> list[float]:
    holder, waiter = handler.create_lock("h"), handler.create_lock("h")
    latencies = []
    for _ in range(rounds):
        holder.acquire()
        got: list[float] = []
        t = threading.Thread(target=_acquire_and_stamp, args=(waiter, got))
        t.start()
        pause()  # the waiter is blocked by now
        released = time.monotonic()
        holder.release()
        t.join()
        assert got and got[0] >= released
        waiter.release()
        latencies.append(got[0] - released)
    return latencies


def _waiter_process(url: str, conn) -> None:
    h = PyCacheHandler.from_url(url)
    lock = h.create_lock("h")
    while conn.recv() == "go":
        conn.send("waiting")
        lock.acquire()
        conn.send(time.monotonic())
        lock.release()


def _handoffs_across_processes(url: str, handler: PyCacheHandler, rounds: int) -> list[float]:
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_waiter_process, args=(url, there))
    proc.start()
    holder = handler.create_lock("h")
    latencies = []
    try:
        for _ in range(rounds):
            holder.acquire()
            here.send("go")
            assert here.recv() == "waiting"
            pause()  # let it reach the wait
            released = time.monotonic()
            holder.release()
            acquired = here.recv()
            assert acquired >= released
            latencies.append(acquired - released)
    finally:
        here.send("stop")
        proc.join(30)
    assert proc.exitcode == 0
    return latencies


def _report(capsys, server, what: str, latencies: list[float]) -> None:
    latencies.sort()
    with capsys.disabled():
        print(
            f"\n[{server.kind}] hand-off {what}: median "
            f"{statistics.median(latencies) * 1e3:.2f} ms, max {latencies[-1] * 1e3:.2f} ms "
            f"over {len(latencies)} (measured; the benchmark reports p99)"
        )


def test_handoff_in_one_process_is_measured(server, handler, capsys):
    _report(capsys, server, "in one process", _handoffs_in_process(handler, 30))


def test_handoff_across_processes_is_measured(server, handler, capsys):
    _report(capsys, server, "across processes", _handoffs_across_processes(server.url, handler, 20))


def _listeners(raw: redis.Redis) -> list[dict]:
    return [c for c in raw.client_list() if c.get("name") == "madsci_cache_rs-lock-listener"]


def test_a_wait_starts_one_listener_which_stops_when_idle(handler, raw):
    """Releases by other processes arrive on one subscribed connection per
    process, opened for the wait and closed a little after the last one."""
    holder = handler.create_lock("k")
    holder.acquire()
    seen: list[list[dict]] = []

    def waiter() -> None:
        lock = handler.create_lock("k")
        if lock.acquire(timeout=10):
            lock.release()

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while not seen or not seen[-1]:
        seen.append(_listeners(raw))
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    holder.release()
    for t in threads:
        t.join()
    assert len(seen[-1]) == 1 and seen[-1][0]["sub"] == "1", seen[-1]
    deadline = time.monotonic() + 30
    while _listeners(raw) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _listeners(raw) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_hears_releases_on_its_own_listener(handler, raw):
    """The parent's listener thread does not exist in a fork: the child
    must start its own and still be woken by the parent's release."""
    _handoffs_in_process(handler, 2)  # the parent now has a listener
    holder = handler.create_lock("f", auto_release_time=60)
    holder.acquire()
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()
    child = ctx.Process(target=lambda: result.put(long_poll_lock(handler, "f").acquire(timeout=20)))
    child.start()
    time.sleep(0.2)
    holder.release()
    child.join(30)
    assert child.exitcode == 0 and result.get(timeout=5) is True


def _wait_and_stamp(url: str, conn) -> None:
    lock = long_poll_lock(PyCacheHandler.from_url(url), "k")
    conn.send("waiting")
    got = lock.acquire(timeout=30)
    conn.send((got, time.monotonic()))


def _listeners_within(raw: redis.Redis, seconds: float) -> list[dict]:
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = _listeners(raw)
        except redis.ConnectionError:
            found = []
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_a_listener_whose_server_restarts_subscribes_again(server):
    """The subscription dies with the server: the listener opens another,
    and a release after the restart still wakes a waiter in another process
    (one that polls every 30 s). The lock is kept across the restart by an
    append-only file, so the resubscription's wake-up finds it held."""
    with PrivateServer(server.kind, appendonly=True, appendfsync="always") as srv:
        raw = redis.Redis(host=srv.host, port=srv.port)
        holder = PyCacheHandler.from_url(srv.url).create_lock("k", auto_release_time=60)
        holder.acquire()
        with SpawnedWaiter(_wait_and_stamp, srv.url) as child:
            child.wait_until_waiting()
            assert _listeners_within(raw, 10), "the waiter's listener subscribed"
            srv.kill()
            srv.start()
            assert _listeners_within(raw, 10), "the listener subscribed again"
            assert not child.answered_within(0.2), "the lock survived the restart: still waiting"
            released = time.monotonic()
            holder.release()
            got, woken = child.result()
        raw.close()
        assert got is True
        assert woken - released < 5, "woken by the poll, not by the release"


def _try_after_parent(handler: PyCacheHandler, parent_holds, result) -> None:
    parent_holds.wait(10)
    result.put(handler.create_lock("forked").acquire(blocking=False))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_draws_its_own_tokens(handler):
    """A child inherits the token generator's state: it must still never
    draw the parent's next token (or it would count the parent's lock as
    its own)."""
    with handler.create_lock("warm"):  # the generator is seeded before the fork
        pass
    ctx = multiprocessing.get_context("fork")
    parent_holds, result = ctx.Event(), ctx.Queue()
    child = ctx.Process(target=_try_after_parent, args=(handler, parent_holds, result))
    child.start()
    lock = handler.create_lock("forked")
    assert lock.acquire()
    parent_holds.set()
    child.join(30)
    assert result.get(timeout=5) is False
    lock.release()


# --- failures -----------------------------------------------------------------------


def test_a_server_restart_while_a_lock_is_held(server):
    with PrivateServer(server.kind) as srv:
        h = PyCacheHandler.from_url(srv.url, retry_window=1)
        lock, other = h.create_lock("k"), h.create_lock("k")
        lock.acquire()
        got = []
        waiter = threading.Thread(target=lambda: got.append(other.acquire(timeout=30)))
        waiter.start()
        time.sleep(0.05)
        srv.kill()
        with pytest.raises(CacheConnectionError):
            lock.locked()
        srv.start()  # empty: the lease is gone with the old process
        waiter.join()
        assert got == [True], "the waiter rides over the restart"
        with pytest.raises(ReleaseUnlockedLock):
            lock.release()
        other.release()
        assert lock.acquire(blocking=False) is True


# --- strict in-memory mode shares the rules -----------------------------------------


@pytest.fixture(params=["server", "strict"])
def any_handler(request, handler):
    return handler if request.param == "server" else InMemoryCacheHandler(strict=True)


def test_strict_mode_has_the_same_lock_rules(any_handler):
    lock, other = any_handler.create_lock("r", auto_release_time=5), any_handler.create_lock("r")
    with pytest.raises(ReleaseUnlockedLock):
        lock.release()
    assert lock.locked() == 0
    assert lock.acquire() and other.acquire(blocking=False) is False
    assert lock.acquire(blocking=False) is False  # not reentrant
    with pytest.raises(ReleaseUnlockedLock):
        lock.release()  # its first lease was orphaned
    assert other.acquire(timeout=0.05) is False
    with pytest.raises(ValueError):
        other.acquire(blocking=False, timeout=1)
    third = any_handler.create_lock("s", auto_release_time=5)
    third.acquire()
    assert 4.5 < third.locked() < 5 and other.locked() == 0
    for _ in range(3):
        third.extend()
    with pytest.raises(TooManyExtensions):
        third.extend()
    third.release()
    with pytest.raises(ExtendUnlockedLock):
        any_handler.create_lock("s").extend()
