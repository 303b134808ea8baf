"""A pooled connection gives back a large buffer after use (SPEC section 12):
one 64 MiB write must not pin 64 MiB until ``close()``.

Measured in a child process, so other tests' memory does not blur it.
"""

from __future__ import annotations

import os
import subprocess
import sys

from madsci_cache_rs.testing import PrivateServer

BIG = 64 << 20

CHILD = """
import gc
from madsci_cache_rs import PyCacheHandler

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

h = PyCacheHandler.from_settings("127.0.0.1", {port}, retry_window=0)
h.set("warm", "x")
h.get("warm")
gc.collect()
before = rss_kib()
value = "x" * {big}
h.set("big", value)
del value
back = h.get("big")
size = len(back)
del back
gc.collect()
after = rss_kib()
print(size, before, after)
"""


def test_a_large_write_and_read_leave_no_large_buffer_behind(server: PrivateServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MADSCI_CACHE_RS")}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD.format(port=server.port, big=BIG)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    size, before, after = map(int, proc.stdout.split())
    assert size == BIG
    grown_mib = (after - before) / 1024
    print(f"RSS {before} KiB -> {after} KiB after a 64 MiB SET and GET ({grown_mib:+.1f} MiB)")
    assert grown_mib < 8, f"RSS grew {grown_mib:.1f} MiB"
