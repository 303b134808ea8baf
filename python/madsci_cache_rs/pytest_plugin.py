"""pytest plugin: run madsci's code and test suites on this package.

Active when asked: ``pytest -p madsci_cache_rs.pytest_plugin``, or with the
environment variable ``MADSCI_CACHE_RS=1``. It is also registered as a
``pytest11`` entry point so the fixtures are always available, but it swaps
nothing unless asked. When active it calls ``install()`` before the first
conftest is imported (conftests bind madsci's names at import time) and
``uninstall()`` when the run ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from madsci_cache_rs import InMemoryCacheHandler, install, uninstall

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
    from madsci_cache_rs.testing import PrivateServer, ServerUnavailable

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
