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


class ReadCounter:
    """Round trips counted on the servers' side, for clients a proxy cannot sit
    in front of (a cluster client follows the slot map, a Sentinel client the
    address the sentinels give): the read events (``INFO stats``,
    ``total_reads_processed``) of the given primaries. A client that waits for
    each reply makes one read event per write, so this agrees with
    ``WriteCounter`` on one server. The primaries' other clients (replicas,
    sentinels) add a few reads a second: the least of three counts is kept."""

    TRIES = 3

    def __init__(self, nodes: list[tuple[str, int]]) -> None:
        from madsci_cache_rs.testing import RespConnection

        self._conns = [RespConnection(host, port) for host, port in nodes]

    def _reads(self) -> list[int]:
        out = []
        for conn in self._conns:
            info = conn.call("INFO", "stats")
            text = info.decode() if isinstance(info, bytes) else str(info)
            out.append(int(text.split("total_reads_processed:", 1)[1].split()[0]))
        return out

    def count(self, op: Callable[[], object]) -> int:
        op()  # warm: connections open, scripts loaded, slot map known
        counts = []
        for _ in range(self.TRIES):
            before = self._reads()
            op()
            after = self._reads()
            # Each node's second INFO is itself one read, counted in its own reply.
            counts.append(sum(b - a - 1 for a, b in zip(before, after, strict=True)))
        return min(counts)

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
