"""``PrivateCluster``: a Valkey/Redis Cluster on loopback, built without ``valkey-cli``."""

from __future__ import annotations

from typing import Any, NamedTuple

from madsci_cache_rs.testing._resp import text
from madsci_cache_rs.testing._server import (
    REPLICATION_CONFIG,
    FeatureUnavailable,
    PrivateServer,
    free_ports,
    wait_until,
)

SLOTS = 16384


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = (crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def key_slot(key: str | bytes) -> int:
    """The cluster slot of ``key``: CRC16 (XMODEM) modulo 16384 of the key, or
    of its hash tag, the text between the first ``{`` and the first ``}`` after
    it when that text is not empty (the cluster specification's rule)."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ byte) & 0xFF]
    return crc % SLOTS


class _Entry(NamedTuple):
    """One line of ``CLUSTER NODES``."""

    port: int
    flags: frozenset[str]
    master: str  # the master's id for a replica, "-" for a master
    slots: tuple[tuple[int, int], ...]
    migrating: bool  # an open IMPORTING/MIGRATING slot


def _cluster_nodes(node: PrivateServer) -> dict[str, _Entry]:
    view = {}
    for line in text(node.call("CLUSTER", "NODES")).splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        slots, migrating = [], False
        for item in fields[8:]:
            if item.startswith("["):
                migrating = True
                continue
            lo, _, hi = item.partition("-")
            slots.append((int(lo), int(hi or lo)))
        port = int(fields[1].split("@", 1)[0].rsplit(":", 1)[1] or 0)
        flags = frozenset(fields[2].split(",")) - {"myself"}
        view[fields[0]] = _Entry(port, flags, fields[3], tuple(sorted(slots)), migrating)
    return view


class ClusterNode(PrivateServer):
    """One node of a ``PrivateCluster``: a ``PrivateServer`` with cluster mode on,
    its bus on ``bus_port`` and its ``node_id`` (kept across restarts)."""

    def __init__(self, kind: str, *, port: int, bus_port: int, node_timeout_ms: int) -> None:
        super().__init__(
            kind,
            port=port,
            extra_config=[
                "cluster-enabled yes",
                "cluster-config-file nodes.conf",
                f"cluster-port {bus_port}",
                f"cluster-node-timeout {node_timeout_ms}",
                # A replica with stale data may still take over: in a test the
                # point is that the failover happens, quickly.
                "cluster-replica-validity-factor 0",
                # Replicas stay with the master they were given, so a test's
                # topology changes only through the faults it injects.
                "cluster-allow-replica-migration no",
                *REPLICATION_CONFIG,
            ],
        )
        self.bus_port = bus_port
        self.node_id = ""

    def start(self, timeout: float = 10.0) -> ClusterNode:
        super().start(timeout)
        if not self.node_id:
            self.node_id = text(self.call("CLUSTER", "MYID"))
        return self


class PrivateCluster:
    """A private cluster of ``masters`` masters with ``replicas_per_master``
    replicas each, every node on free loopback ports (client and bus), the slots
    spread evenly over the masters. ``start()`` returns once the cluster is
    converged (see ``wait_converged``); ``close()`` stops every node by PID and
    removes their directories. Use as a context manager."""

    def __init__(
        self,
        kind: str = "valkey",
        masters: int = 3,
        replicas_per_master: int = 1,
        *,
        node_timeout_ms: int = 1000,
    ) -> None:
        if masters < 1 or replicas_per_master < 0:
            raise ValueError("a cluster needs at least one master and no negative replica count")
        self.kind = kind
        self.replicas_per_master = replicas_per_master
        self._masters = masters
        count = masters * (1 + replicas_per_master)
        ports = free_ports(2 * count)
        self.nodes = [
            ClusterNode(
                kind, port=ports[2 * i], bus_port=ports[2 * i + 1], node_timeout_ms=node_timeout_ms
            )
            for i in range(count)
        ]

    def __repr__(self) -> str:
        running = sum(n.running for n in self.nodes)
        return f"<PrivateCluster {self.kind} {running}/{len(self.nodes)} nodes running>"

    @property
    def seeds(self) -> list[tuple[str, int]]:
        return [n.address for n in self.nodes]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in self.seeds)

    def pids(self) -> list[int]:
        """The PIDs of the running nodes."""
        return [n.pid for n in self.nodes if n.running and n.pid is not None]

    def start(self, timeout: float = 30.0) -> PrivateCluster:
        try:
            for node in self.nodes:
                node.start()
            masters = self.nodes[: self._masters]
            for i, master in enumerate(masters):
                master.call(
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    i * SLOTS // len(masters),
                    (i + 1) * SLOTS // len(masters) - 1,
                )
                # Distinct epochs from the start spare the collision round.
                master.call("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            first = self.nodes[0]
            for node in self.nodes[1:]:
                first.call("CLUSTER", "MEET", node.host, node.port, node.bus_port)
            wait_until(self._all_known, timeout, "every node knowing every other", self.nodes)
            for j, replica in enumerate(self.nodes[len(masters) :]):
                replica.call("CLUSTER", "REPLICATE", masters[j // self.replicas_per_master].node_id)
            self.wait_converged(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _all_known(self) -> str | None:
        for node in self.nodes:
            view = _cluster_nodes(node)
            known = [e for e in view.values() if not e.flags & {"handshake", "noaddr"}]
            if len(known) < len(self.nodes):
                return f"{node!r} knows {len(known)} of {len(self.nodes)} nodes"
        return None

    def node(self, node_id: str) -> ClusterNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"no node {node_id} in {self!r}")

    def _live(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.running]

    def masters(self) -> list[ClusterNode]:
        """The running nodes that say (``ROLE``) they are masters."""
        return [n for n in self._live() if n.role() == "master"]

    def replicas(self, master: ClusterNode | None = None) -> list[ClusterNode]:
        """The running nodes that say they are replicas (of ``master``, if given)."""
        found = []
        for node in self._live():
            role = node.call("ROLE")
            if text(role[0]) == "slave" and (master is None or int(role[2]) == master.port):
                found.append(node)
        return found

    def slot_map(self) -> list[tuple[int, int, ClusterNode]]:
        """``(first, last, master)`` for every slot range, as a running node's
        ``CLUSTER SLOTS`` says."""
        reply = self._live()[0].call("CLUSTER", "SLOTS")
        return sorted((int(r[0]), int(r[1]), self.node(text(r[2][2]))) for r in reply)

    def master_for_slot(self, slot: int) -> ClusterNode:
        for first, last, master in self.slot_map():
            if first <= slot <= last:
                return master
        raise KeyError(f"slot {slot} is not served in {self!r}")

    @staticmethod
    def key_slot(key: str | bytes) -> int:
        """``madsci_cache_rs.testing.key_slot``: the cluster slot of ``key``."""
        return key_slot(key)

    def flushall(self) -> None:
        """Empty every running master (replicas follow)."""
        for node in self.masters():
            node.call("FLUSHALL")

    def wait_converged(self, timeout: float = 30.0) -> None:
        """Wait until every running node says ``cluster_state:ok``, all agree on
        the roles and the slot map, every slot is served by a running master,
        every stopped node is flagged failed, no slot migration is open, and every
        running replica is connected to its master (``ROLE``)."""
        wait_until(self._converged, timeout, f"convergence of {self!r}", self.nodes)

    def _converged(self) -> str | None:
        live = self._live()
        live_ids = {n.node_id for n in live}
        stopped = {n.node_id: n for n in self.nodes if not n.running}
        reference: tuple[ClusterNode, dict[str, Any]] | None = None
        for node in live:
            info = text(node.call("CLUSTER", "INFO"))
            if "cluster_state:ok" not in info:
                return f"{node!r} is not ok yet"
            view = _cluster_nodes(node)
            for node_id in live_ids:
                entry = view.get(node_id)
                if entry is None:
                    return f"{node!r} does not know {self.node(node_id)!r}"
                if entry.flags & {"fail", "fail?", "handshake", "noaddr"}:
                    return f"{node!r} flags {self.node(node_id)!r} as {','.join(entry.flags)}"
                if entry.migrating:
                    return f"{node!r} sees a slot migration open on {self.node(node_id)!r}"
            for node_id, gone in stopped.items():
                if node_id in view and "fail" not in view[node_id].flags:
                    return f"{node!r} has not flagged the stopped {gone!r} as failed"
            summary = {
                i: ("master" in view[i].flags, view[i].master, view[i].slots) for i in live_ids
            }
            if reference is None:
                reference = (node, summary)
            elif summary != reference[1]:
                return f"{node!r} and {reference[0]!r} disagree on the roles or the slot map"
        if reference is None:
            return "no node is running"
        summary = reference[1]
        served = sum(hi - lo + 1 for _, _, slots in summary.values() for lo, hi in slots)
        if served != SLOTS:
            return f"running masters serve {served} of {SLOTS} slots"
        for node in live:
            is_master, master_id, _ = summary[node.node_id]
            role = node.call("ROLE")
            if (text(role[0]) == "master") != is_master:
                return f"{node!r} says it is {text(role[0])}, the cluster disagrees"
            if not is_master:
                if master_id not in live_ids:
                    return f"{node!r} replicates a stopped node"
                if int(role[2]) != self.node(master_id).port or text(role[3]) != "connected":
                    return f"{node!r} is not yet connected to its master"
        return None

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL ``node`` (by PID), as a crash would; ``restart`` brings it back."""
        node.kill()

    def restart(self, node: ClusterNode, down_for: float = 0.0, timeout: float = 30.0) -> None:
        """Start ``node`` again, after stopping it if it runs (same ports, same
        ``nodes.conf``), and wait until the cluster has taken it back."""
        if node.running:
            node.restart(down_for)
        else:
            node.start()
        self.wait_converged(timeout)

    def failover(
        self, replica: ClusterNode, force: bool = False, timeout: float = 30.0
    ) -> ClusterNode:
        """``CLUSTER FAILOVER [FORCE]`` on ``replica``; returns it once it says it
        is a master and the cluster has converged."""
        replica.call("CLUSTER", "FAILOVER", *(["FORCE"] if force else []))

        def promoted() -> str | None:
            return None if replica.role() == "master" else f"{replica!r} is not master yet"

        wait_until(promoted, timeout, f"the failover to {replica!r}", self.nodes)
        self.wait_converged(timeout)
        return replica

    def migrate_slot(
        self, slot: int, to_master: ClusterNode, *, batch: int = 100, timeout: float = 30.0
    ) -> int:
        """Move ``slot`` and its keys to ``to_master`` the classic way: SETSLOT
        IMPORTING on the target, MIGRATING on the source, ``MIGRATE`` the keys in
        batches, then SETSLOT NODE on every master. Returns how many keys moved."""
        source = self.master_for_slot(slot)
        if source is to_master:
            return 0
        to_master.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", to_master.node_id)
        moved = 0
        while keys := source.call("CLUSTER", "GETKEYSINSLOT", slot, batch):
            source.call("MIGRATE", to_master.host, to_master.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
        # The target first, so the slot is never owned by nobody.
        others = [m for m in self.masters() if m not in (to_master, source)]
        for node in [to_master, source, *others]:
            node.call("CLUSTER", "SETSLOT", slot, "NODE", to_master.node_id)
        self._wait_owner(slot, to_master, timeout)
        return moved

    def atomic_migration_unsupported(self) -> str | None:
        """Why ``migrate_slot_atomic`` cannot run here, or ``None`` when it can."""
        found = self._live()[0].call("COMMAND", "INFO", "CLUSTER|MIGRATESLOTS")
        if found and found[0] is not None:
            return None
        return f"{self.kind}-server has no CLUSTER MIGRATESLOTS (atomic slot migration, Valkey 9)"

    def migrate_slot_atomic(
        self, slot: int, to_master: ClusterNode, *, timeout: float = 30.0
    ) -> None:
        """Move ``slot`` with Valkey 9's ``CLUSTER MIGRATESLOTS`` (the keys and
        the ownership in one operation); ``FeatureUnavailable`` where it is missing."""
        reason = self.atomic_migration_unsupported()
        if reason is not None:
            raise FeatureUnavailable(reason)
        source = self.master_for_slot(slot)
        if source is to_master:
            return
        source.call("CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", slot, slot, "NODE", to_master.node_id)
        self._wait_owner(slot, to_master, timeout)

    def _wait_owner(self, slot: int, owner: ClusterNode, timeout: float) -> None:
        def owned() -> str | None:
            for node in self._live():
                for lo, hi, master in self._slot_ranges(node):
                    if lo <= slot <= hi and master != owner.node_id:
                        return f"{node!r} still routes slot {slot} to {self.node(master)!r}"
            return self._converged()

        wait_until(owned, timeout, f"slot {slot} on {owner!r}", self.nodes)

    @staticmethod
    def _slot_ranges(node: ClusterNode) -> list[tuple[int, int, str]]:
        return [
            (lo, hi, node_id)
            for node_id, entry in _cluster_nodes(node).items()
            for lo, hi in entry.slots
        ]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        """Stop every node (by PID) and remove their directories."""
        for node in self.nodes:
            node.close()

    def __enter__(self) -> PrivateCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
