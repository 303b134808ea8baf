"""``PrivateSentinelGroup``: a primary, its replicas and their sentinels on loopback."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from madsci_cache_rs.testing._resp import ReplyError, pairs, text
from madsci_cache_rs.testing._server import (
    REPLICATION_CONFIG,
    FeatureUnavailable,
    PrivateServer,
    wait_until,
)

# Sentinel's own timers (``SENTINEL DEBUG``, on Valkey and on Redis 7): INFO
# every 10 s and hello messages every 2 s by default make a fresh group take
# ~10 s to know its replicas and peers, and a demoted primary stay writable for
# ~8 s (4 publish periods) after a failover. They are runtime settings, set
# again after a sentinel restarts.
_SENTINEL_TIMERS = ("info-period", "250", "publish-period", "250")


def _healthy(flags: str, role: str) -> bool:
    """Sentinel's view of an instance says it is up in ``role``. Other flags may
    stay behind: ``master_down`` on a peer outlives the failover it voted in."""
    found = set(flags.split(","))
    return role in found and not found & {"s_down", "o_down", "disconnected"}


def _mentions(value: Any, token: bytes) -> bool:
    """Whether a (nested) reply holds ``token`` as one of its strings."""
    if isinstance(value, list):
        return any(_mentions(item, token) for item in value)
    return isinstance(value, (bytes, str)) and text(value).upper() == token.decode()


class PrivateSentinelGroup:
    """A private primary with ``replicas`` replicas and ``sentinels`` sentinels
    monitoring it as ``service``, on free loopback ports, with short timers
    (``down_after_ms``, ``failover_timeout_ms``). ``password`` protects the data
    nodes (sentinels get it as ``auth-pass``); ``sentinel_password`` protects
    the sentinels themselves (their ``requirepass``, which they also use with
    each other), none by default.
    ``start()`` returns once converged (see ``wait_converged``); ``close()``
    stops everything by PID and removes the directories."""

    def __init__(
        self,
        kind: str = "valkey",
        replicas: int = 1,
        sentinels: int = 3,
        service: str = "mymaster",
        password: str | None = None,
        *,
        sentinel_password: str | None = None,
        quorum: int | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        if replicas < 0 or sentinels < 1:
            raise ValueError("a sentinel group needs at least one sentinel")
        self.kind = kind
        self.service = service
        self.password = password
        self.sentinel_password = sentinel_password
        auth = [f"masterauth {password}"] if password else []
        first = PrivateServer(kind, password=password, extra_config=[*REPLICATION_CONFIG, *auth])
        self.nodes: list[PrivateServer] = [first] + [
            PrivateServer(
                kind,
                password=password,
                extra_config=[
                    *REPLICATION_CONFIG,
                    *auth,
                    f"replicaof {first.host} {first.port}",
                ],
            )
            for _ in range(replicas)
        ]
        monitor = [
            f"sentinel monitor {service} {first.host} {first.port} {quorum or sentinels // 2 + 1}",
            f"sentinel down-after-milliseconds {service} {down_after_ms}",
            f"sentinel failover-timeout {service} {failover_timeout_ms}",
            *([f"sentinel auth-pass {service} {password}"] if password else []),
        ]
        self.sentinel_servers = [
            PrivateServer(kind, sentinel=True, password=sentinel_password, extra_config=monitor)
            for _ in range(sentinels)
        ]
        self._killed: PrivateServer | None = None

    def __repr__(self) -> str:
        up = sum(s.running for s in self.nodes + self.sentinel_servers)
        total = len(self.nodes) + len(self.sentinel_servers)
        return f"<PrivateSentinelGroup {self.kind} {self.service} {up}/{total} running>"

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [s.address for s in self.sentinel_servers]

    @property
    def url(self) -> str:
        """``redis+sentinel://[:password@]h1:p1,h2:p2,.../service[?sentinel_password=...]``;
        the user information is the data nodes' password."""
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        query = (
            f"?sentinel_password={quote(self.sentinel_password, safe='')}"
            if self.sentinel_password
            else ""
        )
        return f"redis+sentinel://{auth}{hosts}/{self.service}{query}"

    def _all(self) -> list[PrivateServer]:
        return self.nodes + self.sentinel_servers

    def pids(self) -> list[int]:
        """The PIDs of the running servers and sentinels."""
        return [s.pid for s in self._all() if s.running and s.pid is not None]

    def start(self, timeout: float = 30.0) -> PrivateSentinelGroup:
        try:
            for server in self._all():
                server.start()
            for sentinel in self.sentinel_servers:
                self._short_timers(sentinel)
            self.wait_converged(timeout)
        except BaseException:
            self.close()
            raise
        return self

    @staticmethod
    def _short_timers(sentinel: PrivateServer) -> None:
        try:
            sentinel.call("SENTINEL", "DEBUG", *_SENTINEL_TIMERS)
        except ReplyError:
            pass  # a sentinel without SENTINEL DEBUG converges all the same, slower

    def _node_at(self, port: int) -> PrivateServer:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(f"no data node on port {port} in {self!r}")

    def _live_sentinels(self) -> list[PrivateServer]:
        return [s for s in self.sentinel_servers if s.running]

    def _reported(self, sentinel: PrivateServer) -> PrivateServer:
        _, port = sentinel.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return self._node_at(int(port))

    def primary(self) -> PrivateServer:
        """The data node a running sentinel reports as primary, checked with its
        ``ROLE``."""
        node = self._reported(self._live_sentinels()[0])
        if not node.running or node.role() != "master":
            raise RuntimeError(f"the sentinels report {node!r} as primary, which it is not")
        return node

    def replicas(self) -> list[PrivateServer]:
        """The running data nodes that say (``ROLE``) they are replicas."""
        return [n for n in self.nodes if n.running and n.role() == "slave"]

    def flushall(self) -> None:
        """Empty the primary (its replicas follow)."""
        self.primary().flushall()

    def wait_converged(self, timeout: float = 30.0) -> None:
        """Wait until exactly one running data node is a master, every other
        running one replicates it and is connected, and every running sentinel
        reports that primary (not down), knows each running replica as a healthy
        replica of it and each other running sentinel as a healthy peer."""
        wait_until(self._converged, timeout, f"convergence of {self!r}", self._all())

    def _converged(self) -> str | None:
        live = [n for n in self.nodes if n.running]
        primaries = [n for n in live if n.role() == "master"]
        if len(primaries) != 1:
            return f"{len(primaries)} running data nodes say they are primary"
        primary = primaries[0]
        others = [n for n in live if n is not primary]
        for node in others:
            role = node.call("ROLE")
            if int(role[2]) != primary.port or text(role[3]) != "connected":
                return f"{node!r} is not yet a connected replica of {primary!r}"
        sentinels = self._live_sentinels()
        for sentinel in sentinels:
            master = pairs(sentinel.call("SENTINEL", "MASTER", self.service))
            if int(master["port"]) != primary.port or not _healthy(master["flags"], "master"):
                return f"{sentinel!r} reports port {master['port']} ({master['flags']})"
            known = {
                int(r["port"]): r
                for r in map(pairs, sentinel.call("SENTINEL", "REPLICAS", self.service))
            }
            for node in others:
                entry = known.get(node.port)
                if entry is None or not _healthy(entry["flags"], "slave"):
                    return f"{sentinel!r} does not know {node!r} as a healthy replica yet"
                if int(entry["master-port"]) != primary.port:
                    return f"{sentinel!r} does not know {node!r} follows {primary!r} yet"
                # A failover picks only replicas the sentinel last saw in sync.
                if entry["master-link-status"] != "ok":
                    return f"{sentinel!r} has not seen {node!r} in sync yet"
            peers = {
                int(p["port"]): p
                for p in map(pairs, sentinel.call("SENTINEL", "SENTINELS", self.service))
            }
            for other in sentinels:
                entry = peers.get(other.port)
                healthy = entry is not None and _healthy(entry["flags"], "sentinel")
                if other is not sentinel and not healthy:
                    return f"{sentinel!r} does not know {other!r} as a healthy peer yet"
        return None

    def kill_primary(self) -> PrivateServer:
        """SIGKILL the primary (by PID); ``wait_failover`` waits for its successor."""
        primary = self.primary()
        primary.kill()
        self._killed = primary
        return primary

    def wait_failover(
        self, timeout: float = 30.0, old: PrivateServer | None = None
    ) -> PrivateServer:
        """Wait until every running sentinel reports a primary other than ``old``
        (by default the one ``kill_primary`` killed) and the group has converged
        on it; returns the new primary."""
        old = old or self._killed
        if old is None:
            raise ValueError("no old primary: call kill_primary() first or pass old=")

        def switched() -> str | None:
            reported = {self._reported(s).port for s in self._live_sentinels()}
            if old.port in reported or len(reported) != 1:
                return f"the sentinels report ports {sorted(reported)}"
            return None

        wait_until(switched, timeout, f"a failover away from {old!r}", self._all())
        self.wait_converged(timeout)
        return self.primary()

    def coordinated_failover_unsupported(self) -> str | None:
        """Why ``failover(coordinated=True)`` cannot run here, or ``None``."""
        try:
            docs = self._live_sentinels()[0].call("COMMAND", "DOCS", "SENTINEL|FAILOVER")
        except ReplyError:  # no COMMAND DOCS before Redis 7: no COORDINATED either
            docs = []
        if _mentions(docs, b"COORDINATED"):
            return None
        return f"{self.kind} sentinel has no SENTINEL FAILOVER COORDINATED (Valkey 9)"

    def failover(self, coordinated: bool = False, timeout: float = 30.0) -> PrivateServer:
        """``SENTINEL FAILOVER`` (``COORDINATED`` when asked: the primary stops
        taking writes until the replica has caught up; ``FeatureUnavailable``
        where missing); returns the new primary once the group has converged."""
        extra = []
        if coordinated:
            reason = self.coordinated_failover_unsupported()
            if reason is not None:
                raise FeatureUnavailable(reason)
            extra = ["COORDINATED"]
        old = self.primary()
        sentinel = self._live_sentinels()[0]

        def switched() -> str | None:
            if self._reported(sentinel) is not old:
                return None
            flags = pairs(sentinel.call("SENTINEL", "MASTER", self.service))["flags"]
            if "failover_in_progress" in flags.split(","):
                return "the failover is under way"
            # Not asked yet, or the failover was aborted (a replica the sentinel
            # had not seen in sync): ask (again). NOGOODSLAVE raises: not yet.
            sentinel.call("SENTINEL", "FAILOVER", self.service, *extra)
            return "the failover was just asked for"

        wait_until(switched, timeout, f"{sentinel!r} switching away from {old!r}", self._all())
        return self.wait_failover(timeout, old=old)

    def restart(self, node: PrivateServer, down_for: float = 0.0, timeout: float = 30.0) -> None:
        """Start ``node`` (a data node or a sentinel) again, after stopping it if
        it runs, on the same port and files, and wait until the group has
        converged with it."""
        if node.running:
            node.restart(down_for)
        else:
            node.start()
        if node in self.sentinel_servers:
            self._short_timers(node)
        self.wait_converged(timeout)

    def stop(self) -> None:
        for server in self._all():
            server.stop()

    def close(self) -> None:
        """Stop everything (by PID) and remove the directories."""
        for server in self._all():
            server.close()

    def __enter__(self) -> PrivateSentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
