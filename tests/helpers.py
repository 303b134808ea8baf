"""What several test files share (imported as ``helpers``; fixtures stay in
``conftest.py``): counting what reached the server, running work on threads
and in a spawned process, a private cluster and keys on each of its primaries."""

from __future__ import annotations

import _thread
import multiprocessing
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from madsci_cache_rs.testing import PrivateCluster, ServerUnavailable, key_slot


def command_calls(raw: redis.Redis) -> dict[str, int]:
    """Calls per command since the last reset (``INFO commandstats``),
    without the bookkeeping commands this helper and the fixture send, and
    the replicas' acknowledgements (``REPLCONF ACK`` each second, seen
    counted in a round-trip comparison on a cluster)."""
    stats = raw.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): s["calls"] for name, s in stats.items()}
    for own in ("info", "config|resetstat", "flushall", "replconf"):
        calls.pop(own, None)
    return calls


ONCE_RECORDS = "madsci-cache-rs:once:*"
# The channel our lock releases publish on (src/server/subscriber.rs).
RELEASE_CHANNEL = "madsci_cache_rs:redlock:released"


def data_keys(raw: redis.Redis) -> list[bytes]:
    """The keys, without the short-lived records of exactly-once writes."""
    return [k for k in raw.keys() if not k.startswith(ONCE_RECORDS[:-1].encode())]


def round_trips(raw: redis.Redis, action) -> dict[str, int]:
    """Run ``action`` and return the commands it sent, with counts. A write
    goes out as one EVALSHA (its once-form) that runs the write plus a GET
    and a SET of its record; that bookkeeping is left out of the counts."""
    return round_trips_over([raw], action)


def round_trips_over(raws: list[redis.Redis], action) -> dict[str, int]:
    """``round_trips`` summed over several servers (a cluster's primaries)."""

    def records() -> int:
        # A set: SCAN may return a key twice when the keyspace is resized.
        return sum(len(set(raw.scan_iter(match=ONCE_RECORDS))) for raw in raws)

    before = records()
    for raw in raws:
        raw.config_resetstat()
    action()
    calls: Counter[str] = Counter()
    for raw in raws:
        calls.update(command_calls(raw))
    created = records() - before
    for own in ("get", "set"):
        calls[own] -= created
    return {name: n for name, n in calls.items() if n > 0}


def in_threads(work: Callable[[int], None], count: int) -> list[BaseException]:
    """Run ``work(0)`` ... ``work(count - 1)`` on threads at once; what they raised."""
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            work(t)
        except BaseException as exc:  # reported to the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(count)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors


class SpawnedWaiter:
    """``target(*args, conn)`` run in a spawned process that reports over a
    pipe: ``"waiting"`` when it is about to wait, then its result. Every read
    polls first, so a child that dies before answering fails the test
    instead of hanging it."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._here, there = ctx.Pipe()
        self._child = ctx.Process(target=target, args=(*args, there))
        self._child.start()

    def wait_until_waiting(self, timeout: float = 30) -> None:
        assert self._here.poll(timeout), "the child never reported waiting"
        assert self._here.recv() == "waiting"

    def answered_within(self, seconds: float) -> bool:
        return self._here.poll(seconds)

    def answer(self, timeout: float = 30) -> Any:
        """The child's next message; it goes on running."""
        assert self._here.poll(timeout), "the child never answered"
        return self._here.recv()

    def tell(self, message: Any) -> None:
        self._here.send(message)

    def result(self, timeout: float = 30) -> Any:
        """The child's answer, once it has exited cleanly."""
        assert self._here.poll(timeout), "the child never answered"
        got = self._here.recv()
        self._child.join(timeout)
        assert self._child.exitcode == 0
        return got

    def __enter__(self) -> SpawnedWaiter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._child.is_alive():
            self._child.kill()
            self._child.join(10)


def private_cluster(kind: str) -> Iterator[PrivateCluster]:
    """A 3-primary cluster, 1 replica each, for a module-scoped fixture
    (``yield from``); the test is skipped where ``kind`` is not installed."""
    try:
        topology = PrivateCluster(kind, masters=3, replicas_per_master=1)
    except ServerUnavailable as exc:
        pytest.skip(f"no {kind} server on this machine: {exc}")
    with topology:
        yield topology


def tags_on_each_master(cluster: PrivateCluster, prefix: str) -> dict[int, str]:
    """A hash tag per primary (by port) whose slot that primary serves."""
    ranges = cluster.slot_map()
    found: dict[int, str] = {}
    i = 0
    while len(found) < len(ranges) and i < 10_000:
        tag = f"{prefix}{i}"
        slot = key_slot(tag)
        owner = next(m for lo, hi, m in ranges if lo <= slot <= hi)
        found.setdefault(owner.port, tag)
        i += 1
    assert len(found) == len({m.port for _, _, m in ranges})
    return found


def assert_lab_rode_out(result: Any, workflows: int) -> None:
    """A miniature lab's run (``madsci_cache_rs.lab.LabResult``) completed
    every workflow once, each step once, with every manager and the engine
    alive and the workcell not errored; the report is the message."""
    report = result.report()
    assert result.completed == workflows, report
    assert [w.status for w in result.workflows] == ["completed"] * workflows, report
    assert result.duplicates == {}, report
    assert result.missing_steps == [], report
    assert result.thread_deaths == [], report
    assert result.engine_alive is True, report
    assert result.workcell_errored is False, report
    assert result.managers_alive, report


def assert_ctrl_c_ends_a_lock_wait(make_lock: Callable[[], Any]) -> None:
    """Ctrl-C on the main thread ends ``acquire()`` while another lock of the
    same name holds it, and the interrupted waiter leaves no trace: it takes
    the lock at once after the holder lets go. Run it on the main thread."""
    holder = make_lock()
    assert holder.acquire()
    waiter = make_lock()
    threading.Timer(0.2, _thread.interrupt_main).start()
    with pytest.raises(KeyboardInterrupt):
        waiter.acquire(timeout=30)
    holder.release()
    assert waiter.acquire(blocking=False) is True  # it left the queue
    waiter.release()
