"""The connection layer under stress: many threads, a server restart, a
lost reply (the write must land exactly once), fork, logging."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import pytest
import redis
from helpers import in_threads

from madsci_cache_rs import CacheConnectionError, PyCacheHandler
from madsci_cache_rs.testing import LoopbackProxy, PrivateServer


def test_eight_threads_share_one_handler(handler, raw):
    # Other tests' handlers may still hold connections to this server.
    before = raw.info("clients")["connected_clients"]
    d = handler.create_dict("d")
    lst = handler.create_list("l")

    def work(t: int) -> None:
        for i in range(150):
            handler.incr("n")
            lst.append([t, i])
            d[f"{t}:{i}"] = i
            assert handler.get(f"missing{t}") is None
            assert d[f"{t}:{i}"] == i

    assert in_threads(work, 8) == []
    assert raw.get("n") == b"1200"
    assert len(lst) == 1200 and len(d) == 1200
    assert sorted(map(tuple, lst)) == [(t, i) for t in range(8) for i in range(150)]
    # The pool opened several connections (threads did not queue on one),
    # and keeps them for reuse.
    assert 1 < raw.info("clients")["connected_clients"] - before <= 8 + 1


def test_same_objects_work_after_the_server_restarts():
    with PrivateServer("valkey") as srv:
        # A short window: this is about the objects after the restart.
        h = PyCacheHandler.from_url(srv.url, retry_window=0.3)
        d, lst = h.create_dict("d"), h.create_list("l")
        h.set("k", "v")
        d["a"] = 1
        lst.append(1)
        srv.kill()
        assert h.ping() is False
        with pytest.raises(CacheConnectionError):
            d["a"]
        with pytest.raises(CacheConnectionError):
            h.incr("n")
        srv.start()  # same port, empty (no persistence)
        assert h.ping() is True
        assert h.get("k") is None
        assert h.incr("n") == 1
        d["b"] = 2
        lst.append(2)
        assert d.to_dict() == {"b": 2} and lst.to_list() == [2]
        assert redis.Redis(port=srv.port).get("n") == b"1"


def test_stale_pooled_connections_are_dropped_without_resending():
    """Kill the server while connections sit idle in the pool: the next
    command must go out once, on a fresh connection."""
    with PrivateServer("valkey") as srv:
        h = PyCacheHandler.from_url(srv.url)
        barrier = threading.Barrier(4)

        def warm() -> None:
            barrier.wait()
            for _ in range(20):
                h.incr("warm")

        threads = [threading.Thread(target=warm) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        srv.kill()
        srv.start()
        assert h.incr("n") == 1
        assert h.create_list("l").append("x") is None
        r = redis.Redis(port=srv.port)
        assert r.get("n") == b"1" and r.llen("l") == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_uses_the_parents_sockets(handler, raw):
    handler.set("k", "parent")
    handler.incr("warm")  # the parent's pool now holds a connection
    before = {c["id"] for c in raw.client_list()}
    report_r, report_w = os.pipe()
    exit_r, exit_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: use the handler, report, wait to be told to exit
        try:
            ok = all(handler.get("k") == "parent" for _ in range(20))
            handler.incr("child")
            os.write(report_w, b"ok" if ok else b"bad")
        except BaseException as exc:
            os.write(report_w, repr(exc).encode()[:500])
        finally:
            os.read(exit_r, 1)
            os._exit(0)
    try:
        child_said = os.read(report_r, 1000)
        during = {c["id"] for c in raw.client_list()}
    finally:
        os.write(exit_w, b"x")
        os.waitpid(pid, 0)
    assert child_said == b"ok"
    assert raw.get("child") == b"1"
    # The child opened its own connection; the parent's is still there and works.
    assert during - before, "the child used an inherited socket"
    assert before <= during
    assert handler.incr("warm") == 2
    assert handler.get("k") == "parent"


@pytest.mark.parametrize("client_cache", [False, True], ids=["pool", "client-cache"])
def test_connects_and_reconnects_are_logged(caplog, client_cache):
    caplog.set_level(logging.DEBUG, logger="madsci_cache_rs")
    with PrivateServer("valkey") as srv:
        h = PyCacheHandler.from_url(srv.url, client_cache=client_cache)
        h.ping()
        srv.kill()
        srv.start()
        h.ping()
    messages = [r.getMessage() for r in caplog.records if r.name == "madsci_cache_rs"]
    assert f"connected to 127.0.0.1:{srv.port}" in messages
    assert f"reconnected to 127.0.0.1:{srv.port}" in messages


class SlowProxy(LoopbackProxy):
    """Forwards each command after ``delay`` seconds: a reply that is late
    enough for a spinning client to show it in its CPU time."""

    delay = 0.05

    def serve(self, client: socket.socket, upstream: socket.socket) -> None:
        while data := client.recv(65536):
            time.sleep(self.delay)
            upstream.sendall(data)
            client.sendall(upstream.recv(65536))


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: spinning is always off")
@pytest.mark.parametrize(
    ("how", "spins"),
    [
        ({"spin_wait": 1.0}, True),
        ({"spin_wait": 0}, False),
        ({"spin_wait": None}, False),
        ({"env": "1.0"}, True),
        ({"env": "0"}, False),
    ],
    ids=["option-on", "option-zero", "option-none", "env-on", "env-zero"],
)
def test_spin_wait_polls_for_a_reply_before_sleeping(server, monkeypatch, how, spins):
    proxy = SlowProxy(server.port)
    try:
        if "env" in how:
            monkeypatch.setenv("MADSCI_CACHE_RS_SPIN_WAIT", how["env"])
            h = PyCacheHandler.from_settings("127.0.0.1", proxy.port)
        else:
            h = PyCacheHandler.from_settings("127.0.0.1", proxy.port, **how)
        h.set("spin", "v")  # connects first, so only the wait is measured
        cpu = time.thread_time()
        assert h.get("spin") == "v"
        used = time.thread_time() - cpu
        h.close()
    finally:
        proxy.close()
    # Spinning through a 50 ms wait takes CPU; sleeping through it takes none.
    assert (used > SlowProxy.delay / 3) is spins, used


def test_spin_wait_rejects_bad_values_naming_them(server, monkeypatch):
    with pytest.raises(ValueError, match="spin_wait"):
        PyCacheHandler.from_url(server.url, spin_wait=-1)
    monkeypatch.setenv("MADSCI_CACHE_RS_SPIN_WAIT", "soon")
    with pytest.raises(ValueError, match=r"MADSCI_CACHE_RS_SPIN_WAIT.*soon"):
        PyCacheHandler.from_url(server.url)
