"""pytest plugin: run madsci's code and test suites on this package.

Active when asked: ``pytest -p madsci_cache_rs.pytest_plugin``, or with the
environment variable ``MADSCI_CACHE_RS=1``. It is also registered as a
``pytest11`` entry point so the fixtures are always available, but it swaps
nothing unless asked. When active it calls ``install()`` before the first
conftest is imported (conftests bind madsci's names at import time) and
``uninstall()`` when the run ends.

Fixtures: ``madsci_cache_handler`` / ``madsci_strict_cache_handler`` (in-memory
handlers), and for a madsci user's own tests on a real server
``madsci_cache_server`` (a private Valkey for the session, on a free loopback
port, stopped by PID) with ``madsci_server_cache_handler`` (a
``PyCacheHandler`` on it, with an empty database for each test).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from madsci_cache_rs import InMemoryCacheHandler, PyCacheHandler, install, uninstall
from madsci_cache_rs.testing import PrivateServer, ServerUnavailable

PLUGIN_NAME = "madsci_cache_rs.pytest_plugin"
ENV_FLAG = "MADSCI_CACHE_RS"

_active = False


def _asked(config: pytest.Config) -> bool:
    if os.environ.get(ENV_FLAG, "").strip().lower() in {"1", "true", "yes", "on"}:
        return True
    requested = getattr(config.known_args_namespace, "plugins", None) or []
    return PLUGIN_NAME in requested


def _activate(config: pytest.Config) -> None:
    global _active
    if not _active and _asked(config):
        install()
        _active = True


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: Any, args: Any) -> None:
    _activate(early_config)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    _activate(config)


def pytest_report_header(config: pytest.Config) -> str | None:
    return "madsci-cache-rs: installed into madsci" if _active else None


def pytest_unconfigure(config: pytest.Config) -> None:
    global _active
    if _active:
        uninstall()
        _active = False


@pytest.fixture
def madsci_cache_handler() -> Iterator[InMemoryCacheHandler]:
    """A fresh default-mode in-memory handler (madsci's behaviour)."""
    handler = InMemoryCacheHandler()
    yield handler
    handler.close()


@pytest.fixture(scope="session")
def madsci_cache_server() -> Iterator[Any]:
    """A private valkey on a free loopback port for the whole session
    (``madsci_cache_rs.testing.PrivateServer``: ``.host``, ``.port``, ``.url``);
    skips when no server binary is installed."""
    try:
        server = PrivateServer()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
def madsci_strict_cache_handler() -> Iterator[InMemoryCacheHandler]:
    """A fresh strict in-memory handler (a server's behaviour)."""
    handler = InMemoryCacheHandler(strict=True)
    yield handler
    handler.close()


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


@pytest.fixture
def madsci_server_cache_handler(madsci_cache_server: PrivateServer) -> Iterator[PyCacheHandler]:
    """A ``PyCacheHandler`` on the private server, its data empty."""
    _flushall(madsci_cache_server)
    handler = PyCacheHandler.from_url(madsci_cache_server.url)
    yield handler
    handler.close()
