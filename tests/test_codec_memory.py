"""The decode memo stays bounded in the memory its objects take.

Each case runs in a fresh interpreter so that its resident-set growth is
its own: the documents are written with redis-py first, then each is read
twice through our `RedisDict` (the second read is what keeps a template), and
the growth of VmRSS across the reads must stay under the bound.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import redis

from madsci_cache_rs.testing import PrivateServer

BOUND_MIB = 40

READER = """
import gc, sys
from madsci_cache_rs import PyCacheHandler

def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

url, key, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = PyCacheHandler.from_url(url).create_dict(key)
d["warm-up"]
gc.collect()
before = rss_kib()
for i in range(count):
    d[str(i)]
    d[str(i)]
gc.collect()
print((rss_kib() - before) / 1024)
"""


def growth_mib(server: PrivateServer, docs: list[str]) -> float:
    raw = redis.Redis(host=server.host, port=server.port)
    raw.flushall()
    pipe = raw.pipeline(transaction=False)
    for i, doc in enumerate(docs):
        pipe.hset("docs", json.dumps(str(i)), doc)
    pipe.hset("docs", json.dumps("warm-up"), docs[0])
    pipe.execute()
    raw.close()
    done = subprocess.run(
        [sys.executable, "-c", READER, server.url, "docs", str(len(docs))],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return float(done.stdout)


def workflow(i: int) -> str:
    """A stored workflow about 3 KB long, distinct for each `i`, shaped as
    madsci's are: many short fields and empty containers per step."""
    steps = [
        {
            "name": f"step {n}",
            "node": f"node_{n % 3}",
            "action": "transfer",
            "args": {"source": f"p{i}.A{n}", "volume": 10 + n},
            "files": {},
            "locations": {"source": [i, n], "target": [n, i]},
            "conditions": [],
            "data_labels": {},
            "status": "queued",
            "step_id": i * 100 + n,
            "start_time": None,
            "end_time": None,
            "result": None,
            "history": [],
        }
        for n in range(9)
    ]
    value = {
        "workflow_id": f"01J{i:023d}",
        "name": f"workflow {i}",
        "status": {"running": False, "completed": False, "step_index": 0},
        "steps": steps,
        "parameters": {"count": i, "ratio": i / 7},
        "labels": ["a", "b", f"lab-{i}"],
    }
    return json.dumps(value, sort_keys=True)


def test_workflow_documents_read_twice_stay_bounded(server):
    docs = [workflow(i) for i in range(4000)]
    assert 2500 <= len(docs[0]) <= 3500
    growth = growth_mib(server, docs)
    assert growth < BOUND_MIB, f"RSS grew by {growth:.1f} MiB"


def test_arrays_of_empty_objects_stay_bounded(server):
    # The largest documents the memo keeps, as many objects per byte as JSON allows.
    docs = ["[" + "{}, " * (15_000 + i) + "{}]" for i in range(400)]
    growth = growth_mib(server, docs)
    assert growth < BOUND_MIB, f"RSS grew by {growth:.1f} MiB"
