"""A tiny RESP server that answers with bytes a test chooses: the broken or
hostile peer of ``test_hostile.py``.

It answers the commands a client sends while it connects (``AUTH``,
``SELECT``, ``HELLO``, ``CLIENT``, ``PING``) as a server would, so the
client gets as far as sending a real command, and every other command with
the next of its ``replies`` (the last one repeating).
"""

from __future__ import annotations

import socket
import threading
from typing import BinaryIO

# HELLO 3 answered with an empty map: RESP3 is on and the client-side cache
# may track (CLIENT TRACKING answers +OK).
HANDSHAKE = {
    b"AUTH": b"+OK\r\n",
    b"SELECT": b"+OK\r\n",
    b"HELLO": b"%0\r\n",
    b"CLIENT": b"+OK\r\n",
    b"PING": b"+PONG\r\n",
}


def read_command(f: BinaryIO) -> list[bytes] | None:
    """One command as a client packs it; ``None`` when the client is gone."""
    line = f.readline()
    if not line.startswith(b"*"):
        return None
    args = []
    for _ in range(int(line[1:])):
        length = int(f.readline()[1:])
        args.append(f.read(length + 2)[:-2])
    return args


class LoopbackListener:
    """Accepts on a free loopback port until ``close()``, serving each
    connection with ``serve`` on a thread of its own. A subclass sets its
    own attributes before calling ``__init__``: accepting starts there."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._listener.close()


class HostileServer:
    """Listens on a free loopback port while in a ``with`` block.

    ``close=True`` closes each connection right after its first chosen reply
    (for replies cut mid-frame). ``connections`` counts accepted sockets.
    """

    def __init__(self, *replies: bytes, close: bool = False) -> None:
        self.replies = list(replies)
        self.close = close
        self.connections = 0
        self._sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()

    def _next_reply(self) -> bytes:
        with self._lock:
            reply = self.replies[min(self._sent, len(self.replies) - 1)]
            self._sent += 1
            return reply

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            try:
                while (cmd := read_command(f)) is not None:
                    name = cmd[0].upper() if cmd else b""
                    if name in HANDSHAKE:
                        conn.sendall(HANDSHAKE[name])
                        continue
                    conn.sendall(self._next_reply())
                    if self.close:
                        conn.shutdown(socket.SHUT_RDWR)
                        return
            except OSError:
                # The client hung up on a reply it rejected.
                return
