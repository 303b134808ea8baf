"""Round trips per operation, counted as client writes through a loopback proxy.

Both our client and redis-py wait for each reply before writing again, so
one write is one round trip; a pipeline sent in one write counts once.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class WriteCounter:
    """A loopback proxy that counts what each client writes."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.writes = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            for a, b, count in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(a, b, count), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(1 << 20):
                if count:
                    with self._lock:
                        self.writes += 1
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def count(self, op: Callable[[], object]) -> int:
        op()  # warm: connections open, scripts loaded
        with self._lock:
            self.writes = 0
        op()
        with self._lock:
            return self.writes

    def close(self) -> None:
        self.listener.close()
