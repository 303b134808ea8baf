"""Nothing the library leaves running may crash the interpreter as it exits.

Threads outlive the interpreter: ``Py_FinalizeEx`` joins no daemon thread and
none of the library's own (the lock release listener, the Sentinel failover
watcher), and after it returns ``exit()`` still runs the C atexit handlers
before the process ends. A thread that attached to the interpreter then
(``PyGILState_Ensure`` on a torn-down runtime) segfaulted the process after
its output, with exit status 139. Two ways did:

- the lock release listener logged its lost connection (every record goes to
  Python ``logging``): 3 runs in 3 crashed before the fix;
- daemon threads still waiting for a lock converted an error, or looked for
  signal handlers to run, by attaching: 20 runs in 20 crashed with eight
  waiters (one waiter: 2 in 20).

The window after ``Py_FinalizeEx`` is normally a few microseconds, which is
why the crash was seen once and not reproduced. Here each child widens it:
an atexit handler registered in C (``usleep``, so no Python code) holds the
process there, and the event that makes a thread attach is timed into it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from madsci_cache_rs.testing import PrivateServer

# After Py_FinalizeEx, exit() runs this handler: usleep(µs), no Python code.
HOLD_AFTER_FINALIZE = """
import ctypes
libc = ctypes.CDLL(None)
libc.__cxa_atexit(ctypes.cast(libc.usleep, ctypes.c_void_p), ctypes.c_void_p({us}), None)
"""

LISTENER_LOGS_AFTER_FINALIZE = (
    """
import logging, os, sys, threading
from madsci_cache_rs import PyCacheHandler

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
h = PyCacheHandler.from_url(os.environ["URL"])
name = f"exit-listener-{os.getpid()}"
held = h.create_lock(name, auto_release_time=30)
assert held.acquire()
other = h.create_lock(name, auto_release_time=30)
# A waiter starts the release listener, which stays up for a while after.
waiter = threading.Thread(target=lambda: other.acquire(timeout=0.3))
waiter.start()
waiter.join()
"""
    + HOLD_AFTER_FINALIZE.format(us=1_500_000)
    + """
print("exiting", flush=True)
"""
)

WAITERS_AFTER_FINALIZE = (
    """
import os, threading, time
from madsci_cache_rs import PyCacheHandler

h = PyCacheHandler.from_url(os.environ["URL"])
name = f"exit-waiters-{os.getpid()}"
held = h.create_lock(name, auto_release_time=30)
assert held.acquire()
started = threading.Barrier(9)

def wait_for_ever():
    lock = h.create_lock(name, auto_release_time=30)
    started.wait()
    lock.acquire()

for _ in range(8):
    threading.Thread(target=wait_for_ever, daemon=True).start()
started.wait()
time.sleep(0.2)
"""
    + HOLD_AFTER_FINALIZE.format(us=400_000)
    + """
print("exiting", flush=True)
"""
)


def child(script: str, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=dict(os.environ, URL=url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def outcome(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=60)
    status = f"exit status {proc.returncode}"
    if proc.returncode < 0:
        status = f"killed by signal {-proc.returncode}"
    return f"{status}; stdout {out[-300:]!r}; stderr {err[-1500:]!r}"


@pytest.fixture
def valkey() -> Iterator[PrivateServer]:
    with PrivateServer("valkey") as srv:
        yield srv


def test_a_background_thread_logging_after_finalization_does_not_crash(valkey):
    for run in range(3):
        proc = child(LISTENER_LOGS_AFTER_FINALIZE, valkey.url)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "exiting\n", outcome(proc)
        # The child is finalizing now, then held in exit() for 1.5 s: the
        # listener loses its connection (and logs that) in that window.
        time.sleep(0.4)
        valkey.kill()
        assert proc.wait(timeout=60) == 0, f"run {run}: {outcome(proc)}"
        valkey.start()


def test_daemon_threads_waiting_for_a_lock_at_exit_do_not_crash(valkey):
    for run in range(4):
        proc = child(WAITERS_AFTER_FINALIZE, valkey.url)
        assert proc.wait(timeout=60) == 0, f"run {run}: {outcome(proc)}"
