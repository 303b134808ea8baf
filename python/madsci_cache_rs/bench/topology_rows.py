"""Cluster and Sentinel rows: the standalone server, dict, list, lock and
engine-tick rows again, on a private 3-master Valkey Cluster and behind a
private Sentinel group.

Ours is ``PyCacheHandler`` at the topology's ``redis+cluster://`` or
``redis+sentinel://`` URL. The reference is madsci's own ``PyCacheHandler``
built on redis-py's ``RedisCluster`` or on ``Sentinel(...).master_for(...)``,
as a lab would build it. pottery cannot do everything on those clients: an
operation the reference raises on gets our time alone, and a footnote with
the reference's error instead of a reference time. Round trips are counted
on the primaries' side (``ReadCounter``): neither client can be sent through
a loopback proxy, since both connect where the topology tells them.

``cluster_rows(rounds)`` and ``sentinel_rows(rounds)`` start and stop their
own servers; a topology that cannot start here is ``Skipped`` with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from madsci_cache_rs import PyCacheHandler
from madsci_cache_rs.bench import lock_rows, manager_rows, server_rows
from madsci_cache_rs.bench.roundtrips import ReadCounter
from madsci_cache_rs.bench.timing import Row, Skipped, alone, compare

MASTERS = 3
CLUSTER_GROUP = f"cluster ({MASTERS} masters, 1 replica each)"
SENTINEL_GROUP = "Sentinel (a primary, 1 replica, 3 sentinels)"
CLUSTER_REFERENCE = "madsci PyCacheHandler on redis-py's RedisCluster (pottery)"
SENTINEL_REFERENCE = "madsci PyCacheHandler on redis-py's Sentinel.master_for (pottery)"

Build = Callable[[Any], Callable[[], object]]


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # the parent package is absent
        return False


def cases() -> list[tuple[str, Build]]:
    """The standalone groups' builders, under one topology group: single
    operations, dict and list reads and writes, the uncontended lock cycle and
    (with madsci's workcell manager installed) the engine tick."""
    out: list[tuple[str, Build]] = [
        (name if group == "server" else f"{group}: {name}", build)
        for group, name, build in server_rows.cases()
    ]
    out.append(
        (
            lock_rows.CYCLE,
            lambda h: lock_rows.lock_cycle(h.create_lock(lock_rows.PREFIX + "cycle")),
        )
    )
    if _has("madsci.workcell_manager"):
        out.append((manager_rows.ENGINE_TICK, manager_rows.engine_tick_on))
    return out


def why_no_reference(exc: BaseException) -> str:
    """The footnote of a row the reference cannot do: its error, and why when known."""
    text = f"no reference: madsci's handler raises {type(exc).__name__}: {exc}"
    if any(frame.name == "_connection_args" for frame in traceback.extract_tb(exc.__traceback__)):
        # pottery/base.py: every WATCH/MULTI method keys its pipelines by the
        # host in connection_pool.connection_kwargs.
        text += (
            " (pottery's WATCH/MULTI methods find the server through the client's "
            "connection_pool.connection_kwargs['host'], which this client does not have)"
        )
    return text


def measure(
    group: str, reference_name: str, ours: Any, ref: Any, counter: ReadCounter, rounds: int
) -> list[Row]:
    """One row per case: ours against ``ref`` where ``ref`` can do it, ours alone otherwise."""
    warnings.filterwarnings("ignore", module="pottery")
    server_rows.seed(ours)
    out = []
    for name, build in cases():
        op_ours = build(ours)
        try:
            op_ref = build(ref)
            op_ref()
        except Exception as exc:  # the reference's own limit on this client, said in the row
            out.append(
                Row(
                    group,
                    name,
                    alone(op_ours, rounds=rounds),
                    None,
                    reference_name,
                    counter.count(op_ours),
                    None,
                    why_no_reference(exc),
                )
            )
            continue
        ours_s, ref_s = compare(op_ours, op_ref, rounds=rounds)
        trips = counter.count(op_ours), counter.count(op_ref)
        out.append(Row(group, name, ours_s, ref_s, reference_name, *trips))
    return out


@contextlib.contextmanager
def _started(build: Callable[[], Any], what: str) -> Iterator[Any]:
    """The topology ``build`` makes, started, and closed at the end; ``Skipped``
    with the reason when it cannot be built or started here."""
    from madsci_cache_rs.testing import ServerUnavailable, TopologyTimeout

    try:
        topology = build()
        topology.start()
    except (ServerUnavailable, TopologyTimeout, RuntimeError, OSError) as exc:
        raise Skipped(f"no private {what}: {exc}") from exc
    try:
        yield topology
    finally:
        topology.close()


def _measure_on(
    group: str,
    reference_name: str,
    url: str,
    client: Any,
    primaries: list[tuple[str, int]],
    rounds: int,
) -> list[Row]:
    """``measure`` with ours at ``url`` and madsci's handler on redis-py's
    ``client``, round trips counted on ``primaries``; all closed at the end."""
    from madsci.common.db_handlers.cache_handler import (  # type: ignore[import-untyped]
        PyCacheHandler as Reference,
    )

    ours = PyCacheHandler.from_url(url)
    counter = ReadCounter(primaries)
    try:
        return measure(group, reference_name, ours, Reference(client), counter, rounds)
    finally:
        counter.close()
        client.close()
        ours.close()


def cluster_rows(rounds: int = 15) -> list[Row]:
    import redis.cluster

    from madsci_cache_rs.testing import PrivateCluster

    def build() -> PrivateCluster:
        return PrivateCluster("valkey", masters=MASTERS, replicas_per_master=1)

    with _started(build, "cluster") as cluster:
        host, port = cluster.masters()[0].address
        client = redis.cluster.RedisCluster(host=host, port=port, decode_responses=True)
        primaries = [m.address for m in cluster.masters()]
        return _measure_on(CLUSTER_GROUP, CLUSTER_REFERENCE, cluster.url, client, primaries, rounds)


def sentinel_rows(rounds: int = 15) -> list[Row]:
    import redis.sentinel

    from madsci_cache_rs.testing import PrivateSentinelGroup

    def build() -> PrivateSentinelGroup:
        return PrivateSentinelGroup("valkey", replicas=1, sentinels=3)

    with _started(build, "Sentinel group") as group:
        client = redis.sentinel.Sentinel(group.sentinels).master_for(
            group.service, decode_responses=True
        )
        primaries = [group.primary().address]
        return _measure_on(SENTINEL_GROUP, SENTINEL_REFERENCE, group.url, client, primaries, rounds)
