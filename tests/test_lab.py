"""End to end: madsci 0.8.1's real workcell and location managers, a real REST node and
real workflows on a private Valkey (``madsci_cache_rs.lab``), for each handler under
each server fault of SPEC.md section 11.

A handler passes a fault when the lab does not notice it: every workflow completes,
the node runs every step exactly once (a re-sent step would repeat a physical action
in a real lab), and the workcell engine is still running, neither dead nor halted
(madsci's engine marks the workcell errored when it catches an exception, and an
errored workcell schedules nothing more).

madsci's own handler ("pottery") is the reference. redis-py retries a refused connect
a few times with a short backoff and then raises, so pottery rides a 1 s restart and a
stall (it waits on the open socket, with no timeout) but not a 10 s restart, after
which the workcell stays errored and runs nothing more; that case is marked xfail, not
skipped, so it keeps running and shows if madsci changes.

About six minutes on two cores (twelve labs of three processes each); in the README's
test command (tests/run.sh runs pytest on tests/). On failure the report names each
process's log, kept under pytest's tmp_path. The same lab behind Sentinel is
tests/test_lab_sentinel.py.
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

from madsci_cache_rs.lab import FAULTS, HANDLERS, LabResult, run_lab  # noqa: E402

# Small enough for the whole file to run in minutes on two cores; the fault lands in
# the first workflow, and the last one is submitted after the fault is over.
WORKFLOWS = 4
FAULT_DELAY = 2.0
WORKFLOW_TIMEOUT = 30.0

_POTTERY_HALTS = pytest.mark.xfail(
    reason="madsci's own handler: redis-py gives up within the 10 s outage and the "
    "workcell engine halts (errored), the fault this project rides out",
    strict=False,
)


def _cases() -> list[object]:
    cases: list[object] = []
    for handler in HANDLERS:
        for fault in FAULTS:
            marks = [_POTTERY_HALTS] if (handler, fault) == ("pottery", "restart-10s") else []
            cases.append(pytest.param(handler, fault, marks=marks, id=f"{handler}-{fault}"))
    return cases


@pytest.mark.parametrize(("handler", "fault"), _cases())
def test_lab_rides_out(handler: str, fault: str, tmp_path) -> None:
    result: LabResult = run_lab(
        handler,
        fault,
        workflows=WORKFLOWS,
        fault_delay=FAULT_DELAY,
        workflow_timeout=WORKFLOW_TIMEOUT,
        log_dir=tmp_path,
    )
    report = result.report()
    print(report)
    if fault != "none":
        assert result.fault_window is not None, report

    assert_lab_rode_out(result, WORKFLOWS)
