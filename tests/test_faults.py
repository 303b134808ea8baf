"""Riding out faults (SPEC section 11): lost replies settled exactly once,
restarts and stalls waited out within the retry window, signals during a
wait, and logging that never changes a call's outcome."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

import pytest
import redis
from helpers import in_threads

from madsci_cache_rs import (
    CacheConnectionError,
    CacheOutcomeUnknownError,
    PyCacheHandler,
)
from madsci_cache_rs.testing import LoopbackProxy, PrivateServer, ServerUnavailable

ONCE_PREFIX = b"madsci-cache-rs:once:"


class ReplyLoser(LoopbackProxy):
    """Forwards everything, except that after ``lose(n)`` the server's
    replies to the next ``n`` requests are dropped once the server has
    answered (so each of those commands ran): ``mode='close'`` then closes
    the client's connection, ``mode='hold'`` keeps it open and silent."""

    def __init__(self, upstream_port: int, mode: str) -> None:
        self.mode = mode
        self.to_lose = 0
        self.lost = 0
        self.guard = threading.Lock()
        super().__init__(upstream_port)

    def lose(self, n: int = 1) -> None:
        with self.guard:
            self.to_lose = n

    def serve(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                with self.guard:
                    drop = self.to_lose > 0
                    if drop:
                        self.to_lose -= 1
                upstream.sendall(data)
                reply = upstream.recv(65536)  # the server answered: it ran
                if not drop:
                    client.sendall(reply)
                    continue
                self.lost += 1
                if self.mode == "close":
                    client.close()
                    upstream.close()
                    return
                # hold: silent until the client gives up on this connection
                while client.recv(65536):
                    pass
                return
        except OSError:
            pass


def records(raw: redis.Redis) -> list[bytes]:
    return list(raw.scan_iter(match=ONCE_PREFIX + b"*"))


@pytest.fixture(params=["close", "hold"])
def lossy(request, server):
    proxy = ReplyLoser(server.port, request.param)
    yield proxy
    proxy.close()


@pytest.fixture(params=[False, True], ids=["pool", "client-cache"])
def via_proxy(request, lossy):
    h = PyCacheHandler.from_settings(
        "127.0.0.1", lossy.port, socket_timeout=0.5, client_cache=request.param
    )
    yield h
    h.close()


def lose_one_reply(proxy: ReplyLoser, action):
    """Run ``action`` (already run once, so its script is loaded) with the
    reply to its first request lost; its result."""
    before = proxy.lost
    proxy.lose(1)
    result = action()
    assert proxy.lost == before + 1, "the reply was lost"
    return result


def test_incr_lands_once_and_answers(via_proxy, lossy, raw):
    via_proxy.incr("n")
    assert lose_one_reply(lossy, lambda: via_proxy.incr("n", 5)) == 6
    assert raw.get("n") == b"6"
    assert len(records(raw)) >= 1, "writes leave a short-lived record"


def test_append_and_insert_land_once(via_proxy, lossy, raw):
    lst = via_proxy.create_list("l")
    lst.append("a")
    lst.insert(0, "z")
    lose_one_reply(lossy, lambda: lst.append("b"))
    lose_one_reply(lossy, lambda: lst.insert(1, "y"))
    lose_one_reply(lossy, lambda: lst.pop(0))
    assert raw.lrange("l", 0, -1) == [b'"y"', b'"a"', b'"b"']


def test_dict_update_lands_once(via_proxy, lossy, raw):
    d = via_proxy.create_dict("d")
    d.update({"a": 1})
    assert d.to_dict() == {"a": 1}
    lose_one_reply(lossy, lambda: d.update({"b": 2, "c": [3]}))
    lose_one_reply(lossy, lambda: d.__delitem__("a"))  # no KeyError from a re-send
    assert d.to_dict() == {"b": 2, "c": [3]}
    assert raw.hgetall("d") == {b'"b"': b"2", b'"c"': b"[3]"}


def test_set_lands_once(via_proxy, lossy, raw):
    via_proxy.set("k", "v0")
    lose_one_reply(lossy, lambda: via_proxy.set("k", "v1"))
    assert raw.get("k") == b"v1"


def test_lock_acquire_and_release_are_settled_by_token(via_proxy, lossy, raw):
    lock = via_proxy.create_lock("job", auto_release_time=30)
    with lock:
        pass
    assert lose_one_reply(lossy, lock.acquire) is True
    assert lock.locked() > 0
    lose_one_reply(lossy, lock.release)  # no ReleaseUnlockedLock from a re-send
    assert raw.exists("redlock:job") == 0
    other = via_proxy.create_lock("job")
    assert other.acquire(blocking=False) is True
    other.release()


def test_a_write_whose_replies_never_come_is_an_unknown_outcome(server, raw):
    proxy = ReplyLoser(server.port, "close")
    try:
        h = PyCacheHandler.from_settings(
            "127.0.0.1", proxy.port, socket_timeout=0.3, retry_window=1.0
        )
        h.incr("n")
        proxy.lose(1000)
        started = time.monotonic()
        with pytest.raises(CacheOutcomeUnknownError, match="may or may not have run") as err:
            h.incr("n")
        assert time.monotonic() - started < 10
        assert isinstance(err.value, CacheConnectionError)
        assert "INCRBY" in str(err.value) and f"127.0.0.1:{proxy.port}" in str(err.value)
        assert raw.get("n") == b"2", "every re-send carried the same token: applied once"
        assert proxy.lost >= 2
    finally:
        proxy.close()


def test_reads_are_sent_again_after_a_lost_reply(via_proxy, lossy, raw):
    assert via_proxy.get("warm") is None
    raw.set("k", "v")
    raw.hset("h", '"x"', "1")
    assert lose_one_reply(lossy, lambda: via_proxy.get("k")) == "v"
    assert lose_one_reply(lossy, lambda: via_proxy.create_dict("h").to_dict()) == {"x": 1}


# --- real outages ----------------------------------------------------------------


def hammer(h: PyCacheHandler, stop: threading.Event, errors: list[BaseException]) -> dict:
    """Write from a thread until ``stop``: counts of acknowledged writes."""
    done = {"incr": 0, "append": 0, "update": 0}
    lst, d = h.create_list("l"), h.create_dict("d")

    def run() -> None:
        try:
            while not stop.is_set():
                h.incr("n")
                done["incr"] += 1
                lst.append(done["append"])
                done["append"] += 1
                d.update({str(done["update"]): done["update"]})
                done["update"] += 1
                time.sleep(0.002)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    done["thread"] = thread
    return done


@pytest.mark.parametrize("kind", ["valkey", "redis"])
@pytest.mark.parametrize("fault", ["restart-1s", "crash-restart", "stop-3s"], ids=lambda f: f)
@pytest.mark.parametrize("client_cache", [False, True], ids=["pool", "client-cache"])
def test_writes_ride_out_an_outage_exactly_once(kind, fault, client_cache):
    try:
        # fsync always: a crash keeps every acknowledged write
        srv = PrivateServer(kind, appendonly=True, appendfsync="always")
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    with srv:
        h = PyCacheHandler.from_settings(
            "127.0.0.1", srv.port, socket_timeout=1.0, client_cache=client_cache
        )
        stop, errors = threading.Event(), []
        done = hammer(h, stop, errors)
        time.sleep(0.3)
        if fault == "restart-1s":
            srv.restart(down_for=1.0)
        elif fault == "crash-restart":
            srv.restart(down_for=0.5, crash=True)
        else:
            srv.pause()
            time.sleep(3.0)
            srv.resume()
        time.sleep(0.5)
        stop.set()
        done["thread"].join(timeout=60)
        assert errors == []
        r = redis.Redis(port=srv.port)
        assert int(r.get("n")) == done["incr"]
        assert [int(x) for x in r.lrange("l", 0, -1)] == list(range(done["append"]))
        assert r.hlen("d") == done["update"]
        assert done["incr"] > 10
        h.close()


def test_the_window_bounds_a_call_to_a_server_that_stays_down():
    with PrivateServer("valkey") as srv:
        h = PyCacheHandler.from_settings("127.0.0.1", srv.port, retry_window=0.5)
        h.set("k", "v")
        srv.stop()
        started = time.monotonic()
        with pytest.raises(CacheConnectionError, match="connection refused") as err:
            h.get("k")
        waited = time.monotonic() - started
        assert 0.2 < waited < 5, waited  # the window, less the backoff that would pass it
        assert "gave up after" in str(err.value)
        assert h.ping() is False


def test_retry_window_from_the_environment(monkeypatch):
    monkeypatch.setenv("MADSCI_CACHE_RS_RETRY_WINDOW", "soon")
    with pytest.raises(ValueError, match="MADSCI_CACHE_RS_RETRY_WINDOW"):
        PyCacheHandler.from_settings("127.0.0.1", 1)
    monkeypatch.setenv("MADSCI_CACHE_RS_RETRY_WINDOW", "0.2")
    h = PyCacheHandler.from_settings("127.0.0.1", 1)
    started = time.monotonic()
    with pytest.raises(CacheConnectionError):
        h.get("k")
    assert time.monotonic() - started < 3
    with pytest.raises(ValueError, match="retry_window"):
        PyCacheHandler.from_settings("127.0.0.1", 1, retry_window=-1)


def test_one_outage_is_logged_once_at_its_start_and_end(caplog):
    with PrivateServer("valkey") as srv:
        h = PyCacheHandler.from_settings("127.0.0.1", srv.port)
        h.set("k", "v")
        caplog.set_level(logging.INFO, logger="madsci_cache_rs")
        srv.stop()
        threading.Timer(1.0, srv.start).start()

        def writer(_: int) -> None:
            for _ in range(3):
                h.incr("n")

        assert in_threads(writer, 4) == []
        messages = [r.getMessage() for r in caplog.records if r.name == "madsci_cache_rs"]
        assert len([m for m in messages if "is not answering" in m]) == 1, messages
        assert len([m for m in messages if "answers again after" in m]) == 1, messages


# --- signals and logging ----------------------------------------------------------


def interrupt_main_after(seconds: float) -> threading.Timer:
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(seconds, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    return timer


@pytest.mark.parametrize("client_cache", [False, True], ids=["pool", "client-cache"])
def test_ctrl_c_during_a_wait_on_a_stalled_server_raises_keyboard_interrupt(client_cache):
    with PrivateServer("valkey") as srv:
        h = PyCacheHandler.from_settings("127.0.0.1", srv.port, client_cache=client_cache)
        h.set("k", "v")
        srv.pause()
        try:
            for call in (lambda: h.get("k"), lambda: h.incr("n"), h.ping):
                interrupt_main_after(0.3)
                started = time.monotonic()
                with pytest.raises(KeyboardInterrupt):
                    call()
                # Measured, not asserted: the spec asks for under 100 ms.
                print(f"KeyboardInterrupt after {time.monotonic() - started - 0.3:.3f} s")
        finally:
            srv.resume()
        assert h.get("k") == "v"


def test_ctrl_c_while_waiting_for_a_lock_held_on_a_stalled_server():
    with PrivateServer("valkey") as srv:
        h = PyCacheHandler.from_settings("127.0.0.1", srv.port)
        holder = h.create_lock("busy", auto_release_time=30)
        holder.acquire()
        waiter = h.create_lock("busy")
        interrupt_main_after(0.3)
        with pytest.raises(KeyboardInterrupt):
            waiter.acquire(timeout=20)
        holder.release()


class Raising(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        raise RuntimeError("a broken logging filter")


def test_a_raising_logging_filter_never_changes_a_call_outcome():
    logger = logging.getLogger("madsci_cache_rs")
    flt = Raising()
    logger.addFilter(flt)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    seen = []
    old_hook = __import__("sys").unraisablehook
    __import__("sys").unraisablehook = lambda u: seen.append(u.exc_value)
    try:
        with PrivateServer("valkey") as srv:
            h = PyCacheHandler.from_url(srv.url)
            assert h.incr("n") == 1  # logs "connected": the filter raises
            srv.restart(down_for=0.3)
            assert h.incr("n") == 1  # an outage logged twice; still a result
            assert h.get("n") == "1"
    finally:
        __import__("sys").unraisablehook = old_hook
        logger.removeFilter(flt)
        logger.setLevel(old_level)
    assert seen and all(isinstance(e, RuntimeError) for e in seen)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_during_an_outage_works():
    with PrivateServer("valkey") as srv:
        h = PyCacheHandler.from_settings("127.0.0.1", srv.port)
        h.incr("n")
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if h.incr("n") >= 2 else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert h.get("n") == "2"


# --- fork --------------------------------------------------------------------------


# Eight forks per case: a child that inherits a lock state a vanished thread
# held hangs only now and then (parking_lot's parking table did, about once in
# 150 forks under load; see src/sync.rs), so each case forks more than once.
FORKS = 8


def wait_child(pid: int, timeout: float) -> int:
    """The child's exit code; kill it and fail the test if it hangs."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"forked child {pid} hung")
        time.sleep(0.01)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("client_cache", [False, True], ids=["pool", "client-cache"])
def test_children_forked_while_threads_call_hold_and_wait_finish(client_cache):
    """Forks land while other threads are mid-call, hold the lock and wait
    for it (parked on its queue): each child still takes the lock, writes
    and exits, through its own pool, cache, waiters and listener."""
    with PrivateServer("valkey") as srv:
        h = PyCacheHandler.from_settings("127.0.0.1", srv.port, client_cache=client_cache)
        stop, errors = threading.Event(), []

        def work(i: int) -> None:
            lock, d = h.create_lock("shared", auto_release_time=5), h.create_dict("d")
            try:
                while not stop.is_set():
                    with lock:
                        h.incr("n")
                        time.sleep(0.002)
                    d[str(i)] = i
                    h.get("n")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        try:
            for k in range(FORKS):
                time.sleep(0.03)
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        lock = h.create_lock("shared", auto_release_time=5)
                        got = lock.acquire(timeout=10)
                        h.incr("child")
                        lock.release()
                        h.create_dict("d")[f"child{k}"] = k
                        code = 0 if got and h.get("n") is not None else 2
                    finally:
                        os._exit(code)
                assert wait_child(pid, 30) == 0, f"child {k}"
        finally:
            stop.set()
            for th in threads:
                th.join()
        assert errors == []
        r = redis.Redis(port=srv.port)
        assert r.get("child") == str(FORKS).encode()
        assert r.hlen("d") == 4 + FORKS
        h.close()


# --- the client-side cache and expiring keys ------------------------------------------


def test_the_client_cache_never_serves_a_key_past_its_ttl(server, raw):
    """Another process writes a key with a 300 ms TTL. With many expiring keys the
    server deletes (and announces) it late, so a kept copy would outlive its TTL."""
    pipe = raw.pipeline(transaction=False)
    for i in range(100_000):
        pipe.set(f"filler:{i}", "x", ex=3600)
    pipe.execute()
    h = PyCacheHandler.from_settings("127.0.0.1", server.port, client_cache=True)
    raw.set("k", "v", px=300)
    assert h.get("k") == "v"
    assert h.get("k") == "v"
    time.sleep(0.6)
    assert h.get("k") is None
    raw.set("plain", "p")
    assert h.get("plain") == "p"
    hits = h.client_cache_hits
    assert h.get("plain") == "p"
    assert h.client_cache_hits == hits + 1, "keys without a TTL are still kept"
    h.close()


def test_long_writes_go_out_once_too(handler, raw):
    """A once-form unpacks its arguments in chunks (Lua's limit is ~8,000)."""
    d, lst = handler.create_dict("big"), handler.create_list("biglist")
    d.update({f"k{i}": i for i in range(20_000)})
    lst.extend(range(30_000))
    lst.extend(["tail"])
    assert raw.hlen("big") == 20_000 and raw.llen("biglist") == 30_001
    assert raw.lrange("biglist", 0, 2) == [b"0", b"1", b"2"]
    assert raw.lindex("biglist", -1) == b'"tail"'
    assert d["k19999"] == 19_999
    del d["k0"]
    assert len(d) == 19_999
