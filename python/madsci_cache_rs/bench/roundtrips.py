"""Round trips per operation, counted as client writes through a loopback proxy.

Both our client and redis-py wait for each reply before writing again, so
one write is one round trip; a pipeline sent in one write counts once.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from madsci_cache_rs.testing import LoopbackProxy


class WriteCounter(LoopbackProxy):
    """A loopback proxy that counts what each client writes."""

    def __init__(self, host: str, port: int) -> None:
        self.writes = 0
        self._lock = threading.Lock()
        super().__init__(port, host)

    def serve(self, client: socket.socket, upstream: socket.socket) -> None:
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

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
