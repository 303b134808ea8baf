"""pytest plugin: ``pytest -p madsci_cache_rs.pytest_plugin``.

Fixtures for running a madsci user's own tests on a real server with one
fixture: ``madsci_cache_server`` (a private Valkey for the session, on a free
loopback port, stopped by PID) and ``madsci_cache_handler`` (a
``PyCacheHandler`` on it, with an empty database for each test).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from madsci_cache_rs import PyCacheHandler
from madsci_cache_rs.testing import PrivateServer, ServerUnavailable


def _flushall(server: PrivateServer) -> None:
    """Empty every database, on a plain socket (no client library needed)."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        request = b"*1\r\n$8\r\nFLUSHALL\r\n"
        if server.password:
            pw = server.password.encode()
            request = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(pw), pw) + request
        sock.sendall(request)
        expected = 2 if server.password else 1
        replies = b""
        while replies.count(b"\r\n") < expected:
            chunk = sock.recv(256)
            if not chunk:
                break
            replies += chunk
    if not replies.endswith(b"+OK\r\n"):
        raise RuntimeError(f"FLUSHALL failed: {replies!r}")


@pytest.fixture(scope="session")
def madsci_cache_server() -> Iterator[PrivateServer]:
    """A private Valkey server for the test session."""
    try:
        server = PrivateServer("valkey")
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
def madsci_cache_handler(madsci_cache_server: PrivateServer) -> Iterator[PyCacheHandler]:
    """A ``PyCacheHandler`` on the private server, its data empty."""
    _flushall(madsci_cache_server)
    handler = PyCacheHandler.from_url(madsci_cache_server.url)
    yield handler
    handler.close()
