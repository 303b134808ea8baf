"""The miniature lab (``madsci_cache_rs.lab``, see tests/test_lab.py) behind Sentinel:
madsci 0.8.1's real managers, a real REST node and real workflows on a private Valkey
group (a primary, one replica, three sentinels: ``PrivateSentinelGroup``), through a
forced ``SENTINEL FAILOVER`` and through the primary SIGKILLed (the sentinels promote
the replica; the killed node stays down). A handler passes as in test_lab.py: every
workflow completes, every step runs exactly once, the engine neither dies nor halts.

Our handler reaches the group as unchanged managers do, through
``MADSCI_CACHE_RS_URL=redis+sentinel://...``, and must ride both faults out:

* The forced failover runs with ``wait_replicas=1``. Without it the lab loses
  acknowledged writes: the replica is promoted while the old primary still takes
  writes, and what it took in that moment is gone. Measured (README, "The miniature
  lab"): a node lock taken on the old primary vanished, its release raised
  ``ReleaseUnlockedLock``, the step failed and the engine ran it again (the node
  recorded it twice). With ``wait_replicas=1`` every write and lock is on the
  replica before it is acknowledged, and no step ran twice.
* The SIGKILLed primary runs without it: with one replica, ``wait_replicas=1`` has no
  replica left to wait for once the replica is promoted, so every lock acquire is
  refused and the lab stalls (measured: no step ran until the 45 s timeout) until a
  replica comes back, and a write or release in that window is an unknown outcome
  that halts the workcell (measured with the killed node restarted). A kill lost
  nothing in these runs: unlike the forced failover, no write reaches the old
  primary after the replica is promoted, and on loopback the replica has each
  write a fraction of a millisecond after it is acknowledged.

madsci's own handler (pottery on redis-py) cannot be pointed at Sentinel: madsci 0.8.1
builds it as ``redis.Redis(host, port)`` from its ``cache_host``/``cache_port``
settings (``WORKCELL_CACHE_HOST``/``_PORT``), with no Sentinel setting, so it is
given the group's first primary and stays there. Run and marked xfail (not strict,
so it shows if madsci changes) with what was seen.

Ours on Valkey and on Redis, pottery's on Valkey only (what keeps it from following
the failover is madsci's settings, not the server). 3½-4¼ minutes on two cores: four
labs of ours (about 30 s each) and two of pottery's, which wait out a shorter
workflow timeout (about 50 s each). In the README's test command (tests/run.sh runs
pytest on tests/).
"""

from __future__ import annotations

import pytest
from helpers import assert_lab_rode_out

for _module in (
    "madsci.workcell_manager",
    "madsci.location_manager",
    "madsci.node_module",
    "madsci.client",
):
    pytest.importorskip(_module, reason=f"the lab needs {_module} (madsci 0.8.1)")

from madsci_cache_rs.lab import LabResult, run_lab  # noqa: E402

WORKFLOWS = 4
FAULT_DELAY = 2.0
# A workflow takes 3.5-6 s here, through the failover included; a workcell that
# stopped is seen as a timeout (pottery's lock acquires stall, they do not error).
WORKFLOW_TIMEOUT = 20.0
# Without it a forced failover can lose an acknowledged lock or state write and run a
# step twice (module docstring).
WAIT_FOR_THE_REPLICA = "wait_replicas=1&wait_timeout=0.5"

_POTTERY_FAILOVER = pytest.mark.xfail(
    reason="madsci's own handler has only a host and port: it stays on the old primary, "
    "now a replica; its writes are answered READONLY (369 to 7,033 counted), pottery's "
    "Redlock counts each as a lock not acquired and retries forever, so the engine (in one "
    "run also the API's workflow submission) waits on a lock for good",
    strict=False,
)
_POTTERY_KILL = pytest.mark.xfail(
    reason="madsci's own handler has only a host and port: the killed primary refuses "
    "every connection, the workcell's node-reconnect thread dies of redis-py's "
    "ConnectionError and its HTTP API answers 500",
    strict=False,
)

CASES = [
    *(
        pytest.param(
            "ours", "failover", WAIT_FOR_THE_REPLICA, kind, id=f"ours-failover-wait_replicas-{kind}"
        )
        for kind in ("valkey", "redis")
    ),
    *(
        pytest.param("ours", "kill-primary", "", kind, id=f"ours-kill-primary-{kind}")
        for kind in ("valkey", "redis")
    ),
    pytest.param(
        "pottery", "failover", "", "valkey", marks=_POTTERY_FAILOVER, id="pottery-failover"
    ),
    pytest.param(
        "pottery", "kill-primary", "", "valkey", marks=_POTTERY_KILL, id="pottery-kill-primary"
    ),
]


@pytest.mark.parametrize(("handler", "fault", "url_options", "kind"), CASES)
def test_lab_rides_out_sentinel(
    handler: str, fault: str, url_options: str, kind: str, tmp_path
) -> None:
    result: LabResult = run_lab(
        handler,
        fault,
        topology="sentinel",
        kind=kind,
        url_options=url_options,
        workflows=WORKFLOWS,
        fault_delay=FAULT_DELAY,
        workflow_timeout=WORKFLOW_TIMEOUT,
        log_dir=tmp_path,
    )
    report = result.report()
    print(report)
    assert result.fault_window is not None, report
    assert result.switch_at is not None, "the sentinels never named a new primary\n" + report
    if handler != "pottery":
        assert result.cache_url is not None and result.cache_url.startswith("redis+sentinel://")

    assert_lab_rode_out(result, WORKFLOWS)
