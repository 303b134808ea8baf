"""Lock rows: our ``Redlock`` against madsci's (pottery's), on one server.

* the uncontended ``with lock: pass`` cycle, timed alternately (``compare``);
* hand-off latency, release -> the blocked waiter holds the lock, median and
  p99, with the waiter in the same process and in another process;
* contended throughput: 4 threads each looping ``with lock: pass``.

``rows(url, rounds)`` returns ``Row``s; ``python -m
madsci_cache_rs.bench.lock_rows`` runs them on a private Valkey.
"""

from __future__ import annotations

import multiprocessing
import random
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from madsci_cache_rs import PyCacheHandler
from madsci_cache_rs.bench.timing import Row, compare

REFERENCE = "madsci PyCacheHandler.create_lock (pottery Redlock)"
#: Lock key prefix, so a run never touches a real lock.
PREFIX = "bench:lock:"


def _handler(kind: str, url: str) -> Any:
    if kind == "ours":
        return PyCacheHandler.from_url(url)
    from madsci.common.db_handlers.cache_handler import (  # type: ignore[import-untyped]
        PyCacheHandler as Reference,
    )

    warnings.filterwarnings("ignore", module="pottery")
    parsed = urlparse(url)
    return Reference.from_settings(
        host=parsed.hostname or "127.0.0.1", port=parsed.port or 6379, password=parsed.password
    )


#: The uncontended cycle's row name.
CYCLE = "with lock: pass (uncontended)"


def lock_cycle(lock: Any) -> Callable[[], None]:
    """One uncontended ``with lock: pass`` (acquire and release: 2 round trips)."""

    def op() -> None:
        with lock:
            pass

    return op


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def _pause() -> None:
    """5-25 ms at random before releasing: a fixed delay after the waiter's
    first try would line up with its fallback poll (10 ms) and flatter it."""
    time.sleep(random.uniform(0.005, 0.025))


def _handoffs_in_process(handler: Any, key: str, samples: int) -> list[float]:
    """A waiter thread blocks in ``acquire``; we release and time until it holds."""
    holder, waiter = handler.create_lock(key), handler.create_lock(key)
    go, done = threading.Semaphore(0), threading.Semaphore(0)
    stamps: list[float] = []

    def wait_loop() -> None:
        for _ in range(samples):
            go.acquire()
            waiter.acquire()
            stamps.append(time.monotonic())
            waiter.release()
            done.release()

    thread = threading.Thread(target=wait_loop, daemon=True)
    thread.start()
    latencies = []
    for i in range(samples):
        holder.acquire()
        go.release()
        _pause()  # the waiter is blocked in acquire by now
        released = time.monotonic()
        holder.release()
        done.acquire()
        latencies.append(stamps[i] - released)
    thread.join()
    return latencies


def _waiter_process(kind: str, url: str, key: str, conn: Any) -> None:
    lock = _handler(kind, url).create_lock(key)
    while conn.recv() == "go":
        conn.send("ready")
        lock.acquire()
        conn.send(time.monotonic())  # CLOCK_MONOTONIC: comparable across processes
        lock.release()


def _handoffs_across_processes(kind: str, url: str, key: str, samples: int) -> list[float]:
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_waiter_process, args=(kind, url, key, there), daemon=True)
    proc.start()
    holder = _handler(kind, url).create_lock(key)
    latencies = []
    try:
        for _ in range(samples + 1):
            holder.acquire()
            here.send("go")
            here.recv()
            _pause()
            released = time.monotonic()
            holder.release()
            latencies.append(here.recv() - released)
    finally:
        here.send("stop")
        proc.join(30)
    return latencies[1:]  # the first includes the child's start-up


def _throughput(handler: Any, key: str, threads: int, seconds: float) -> float:
    """Seconds per ``with lock:`` cycle with ``threads`` threads contending."""
    stop = threading.Event()
    counts = [0] * threads

    def loop(i: int) -> None:
        lock = handler.create_lock(key)
        while not stop.is_set():
            with lock:
                counts[i] += 1

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    start = time.monotonic()
    for t in pool:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in pool:
        t.join()
    return (time.monotonic() - start) / max(1, sum(counts))


def rows(url: str, rounds: int = 15) -> list[Row]:
    ours, ref = _handler("ours", url), _handler("reference", url)
    out: list[Row] = []

    lock_ours, lock_ref = ours.create_lock(PREFIX + "cycle"), ref.create_lock(PREFIX + "cycle")
    ours_s, ref_s = compare(lock_cycle(lock_ours), lock_cycle(lock_ref), rounds=rounds)
    out.append(Row("lock", CYCLE, ours_s, ref_s, REFERENCE, 2, 2))

    # pottery sleeps up to 200 ms per try: fewer samples of it.
    n_ours, n_ref = 20 * rounds, 2 * rounds
    for where, measure in (
        ("one process", lambda kind, h, n: _handoffs_in_process(h, PREFIX + "handoff", n)),
        (
            "two processes",
            lambda kind, h, n: _handoffs_across_processes(kind, url, PREFIX + "handoff2", n),
        ),
    ):
        mine = measure("ours", ours, n_ours)
        theirs = measure("reference", ref, n_ref)
        for label, stat in (("median", statistics.median), ("p99", lambda v: _percentile(v, 99))):
            out.append(
                Row(
                    "lock",
                    f"hand-off {label}, {where}",
                    stat(mine),
                    stat(theirs),
                    REFERENCE,
                    notes=f"{len(mine)} / {len(theirs)} hand-offs",
                )
            )

    seconds = max(1.0, rounds / 10)
    out.append(
        Row(
            "lock",
            "contended cycle, 4 threads (1 / throughput)",
            _throughput(ours, PREFIX + "contended", 4, seconds),
            _throughput(ref, PREFIX + "contended", 4, seconds),
            REFERENCE,
            notes=f"{seconds:g} s each",
        )
    )
    ours.close()
    return out


def main() -> int:
    from madsci_cache_rs.bench.report import environment, text_table
    from madsci_cache_rs.testing import PrivateServer

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    print(environment(), flush=True)
    with PrivateServer("valkey") as srv:
        print(text_table(rows(srv.url, rounds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
