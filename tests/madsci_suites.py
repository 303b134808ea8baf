"""Acceptance: madsci 0.8.1's own test suites, on madsci's classes and on ours.

Downloads madsci's sdists with pip (they ship their tests) and runs the test
files that build madsci's cache classes seven times: as they are (``madsci``),
then under ``-p madsci_cache_rs.pytest_plugin`` with madsci's
``InMemoryCacheHandler()`` giving our in-memory handler (``ours``), our strict
one (``strict``), a ``PyCacheHandler`` on a private Valkey (``server``), the
same with the opt-in client-side cache (``server-cached``), on a private
3-master Valkey Cluster (``cluster``, a ``redis+cluster://`` URL) and behind a
private Sentinel group of Debian's Redis (``sentinel-redis``, a
``redis+sentinel://`` URL): one engine per topology keeps the run short, and
``--runs`` also offers ``cluster-redis`` and ``sentinel`` (Valkey).
Each run must show it used the handler it claims (a probe records what
madsci's name built, with the URL's scheme) and, on a server, that the
primaries ran the tests' commands (the plugin's summary line).
It fails unless every test that passes with madsci's classes passes in every
other run (no new failures, no new skips), except the tests listed in
``EXPECTED_DIFFERENCES`` with the reason.

    python tests/madsci_suites.py [--workdir DIR] [--runs madsci,ours,...] [-- pytest args]

Set-up quirks handled here (the sdists lack madsci's repository-root conftest):
* ``MADSCI_REGISTRY_PATH`` points at a private file and
  ``enable_registry_resolution`` defaults to off, or location tests wait on
  the user's real registry lock;
* ``test_workcell_engine.py`` imports a source-tree path
  (``madsci_workcell_manager.madsci.workcell_manager.workflow_utils``),
  aliased to the installed module;
* each sdist is extracted whole, so tests find ``schema.json`` beside them;
* madsci's few real-server tests start ``testcontainers.redis.RedisContainer``
  (Docker): when testcontainers is absent, a stand-in starts a private
  valkey (``madsci_cache_rs.testing.PrivateServer``) instead, so they run
  rather than skip; in the server runs it also sets ``MADSCI_CACHE_RS_URL``
  to the run's server, cluster or Sentinel group, so our
  ``PyCacheHandler.from_settings(host, port)`` in those tests lands there;
* ``HOME`` is a private directory: madsci writes logs under ``~/.madsci``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

VERSION = "0.8.1"
PLUGIN = "madsci_cache_rs.pytest_plugin"

#: run label -> {test id: why it cannot pass there}. Filled from observed runs;
#: the comparison fails if a listed test passes after all.
EXPECTED_DIFFERENCES: dict[str, dict[str, str]] = {}

#: distribution -> test files (relative to the sdist root) that use the cache classes.
SUITES: dict[str, list[str]] = {
    "madsci_common": [
        "tests/test_db_handlers/test_cache_handler.py",
        "tests/test_local_backends/test_inmemory_redis.py",
        "tests/test_security_regressions.py",
        "tests/test_local_runner_location.py",
    ],
    "madsci_workcell_manager": [
        "tests/test_workcell_engine.py",
        "tests/test_workcell_server.py",
    ],
    "madsci_location_manager": [
        "tests/test_location_state_handler.py",
        "tests/test_location_server.py",
        "tests/test_location_template_server.py",
        "tests/test_location_persistence.py",
        "tests/test_location_reconciliation.py",
        "tests/test_location_migration.py",
        "tests/test_lab_config.py",
        "tests/test_location_client.py",
        "tests/test_location_schema.py",
        "tests/test_location_template_types.py",
    ],
    "madsci_client": [
        "tests/test_workcell_client.py",
    ],
}

ROOT_CONFTEST = '''\
"""Written by madsci_cache_rs's tests/madsci_suites.py: what madsci's
repository-root conftest does, which the sdists do not ship."""
import os
import sys
import tempfile
import types

os.environ["MADSCI_REGISTRY_PATH"] = os.path.join(
    tempfile.mkdtemp(prefix="madsci-registry-"), "registry.json"
)

import importlib

def _no_registry_resolution():
    from madsci.common.types.manager_types import ManagerSettings
    from madsci.common.types.node_types import NodeConfig
    for name in ("madsci.workcell_manager.workcell_server",
                 "madsci.location_manager.location_server"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    todo = [ManagerSettings, NodeConfig]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        field = cls.model_fields.get("enable_registry_resolution")
        if field is not None and field.default is not False:
            field.default = False
            cls.model_rebuild(force=True)

_no_registry_resolution()

try:
    _real = importlib.import_module("madsci.workcell_manager.workflow_utils")
except ImportError:
    pass
else:
    _prefix = "madsci_workcell_manager.madsci.workcell_manager"
    _parts = _prefix.split(".")
    for _i in range(1, len(_parts) + 1):
        _name = ".".join(_parts[:_i])
        _mod = sys.modules.setdefault(_name, types.ModuleType(_name))
        _mod.__path__ = []
        if _i > 1:
            setattr(sys.modules[".".join(_parts[: _i - 1])], _parts[_i - 1], _mod)
    sys.modules[_prefix + ".workflow_utils"] = _real
    sys.modules[_prefix].workflow_utils = _real


try:
    import testcontainers.redis  # noqa: F401 - the real thing, if installed
except ImportError:
    _pkg = sys.modules.setdefault("testcontainers", types.ModuleType("testcontainers"))
    _pkg.__path__ = []
    _redis = types.ModuleType("testcontainers.redis")

    class RedisContainer:
        """Stand-in for testcontainers' Redis container: a private valkey.

        madsci's real-server tests connect by host and port
        (``PyCacheHandler.from_settings``); in a server mode of our plugin
        ``MADSCI_CACHE_RS_URL`` sends our ``from_settings`` to the run's own
        server, cluster or Sentinel group instead, while the container is up."""

        def __init__(self, image="redis:7", **_kwargs):
            self._server = None
            self._url_before = False  # MADSCI_CACHE_RS_URL untouched

        def __enter__(self):
            from madsci_cache_rs.testing import PrivateServer

            self._server = PrivateServer().start()
            try:
                from madsci_cache_rs.pytest_plugin import session_server
            except ImportError:
                return self
            topology = session_server()
            if topology is not None:
                self._url_before = os.environ.get("MADSCI_CACHE_RS_URL")
                os.environ["MADSCI_CACHE_RS_URL"] = topology.url
            return self

        def __exit__(self, *exc):
            if self._url_before is None:
                os.environ.pop("MADSCI_CACHE_RS_URL", None)
            elif self._url_before is not False:
                os.environ["MADSCI_CACHE_RS_URL"] = self._url_before
            self._server.close()

        def get_container_host_ip(self):
            return self._server.host

        def get_exposed_port(self, port):
            return self._server.port

    _redis.RedisContainer = RedisContainer
    _pkg.redis = _redis
    sys.modules["testcontainers.redis"] = _redis


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: needs a real server")


def pytest_sessionfinish(session):
    """Record whose InMemoryCacheHandler madsci's modules held during the run."""
    probe = os.environ.get("MADSCI_SUITES_PROBE")
    if probe:
        import madsci.common.db_handlers as handlers
        with open(probe, "w") as out:
            # The name madsci's modules hold, and what building it gives.
            cls = handlers.InMemoryCacheHandler
            instance = cls()
            built = type(instance)
            name = f"{cls.__module__}.{cls.__qualname__}"
            url = getattr(instance, "url", None)  # a server handler's: where it is
            where = f" on {url.split('://', 1)[0]}" if isinstance(url, str) else ""
            cached = " (client cache)" if getattr(instance, "client_cache", False) else ""
            out.write(f"{name} -> {built.__module__}.{built.__qualname__}{where}{cached}")
'''


def fetch(workdir: Path) -> dict[str, Path]:
    """Download and extract the sdists; returns distribution -> sdist root."""
    downloads = workdir / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    wanted = [f"{dist.replace('_', '-')}=={VERSION}" for dist in SUITES]
    missing = [
        w
        for w, d in zip(wanted, SUITES, strict=True)
        if not list(downloads.glob(f"{d}-{VERSION}.tar.gz"))
    ]
    if missing:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             "-d", str(downloads), *missing],
            check=True,
        )  # fmt: skip
    roots = {}
    for dist in SUITES:
        archive = downloads / f"{dist}-{VERSION}.tar.gz"
        root = workdir / f"{dist}-{VERSION}"
        if not root.exists():
            with tarfile.open(archive) as tar:
                tar.extractall(workdir, filter="data")
        roots[dist] = root
    (workdir / "conftest.py").write_text(ROOT_CONFTEST)
    (workdir / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    return roots


_MADSCI = "madsci.common.db_handlers.cache_handler.InMemoryCacheHandler"
_OURS = "madsci_cache_rs._native.InMemoryCacheHandler"
_STRICT = "madsci_cache_rs.handler_modes.StrictInMemoryCacheHandler"
_SERVER = "madsci_cache_rs.handler_modes.ServerBackedCacheHandler"

#: run label -> (plugin arguments, what madsci's InMemoryCacheHandler name must
#: hold and what building it must give).
RUNS: dict[str, tuple[list[str], str]] = {
    "madsci": ([], f"{_MADSCI} -> {_MADSCI}"),
    "ours": (["-p", PLUGIN], f"{_OURS} -> {_OURS}"),
    "strict": (["-p", PLUGIN, "--madsci-cache=strict"], f"{_STRICT} -> {_STRICT}"),
    "server": (
        ["-p", PLUGIN, "--madsci-cache=server"],
        f"{_SERVER} -> madsci_cache_rs.PyCacheHandler on redis",
    ),
    # The same with the opt-in client-side cache on every handler built.
    "server-cached": (
        ["-p", PLUGIN, "--madsci-cache=server"],
        f"{_SERVER} -> madsci_cache_rs.PyCacheHandler on redis (client cache)",
    ),
}


def _topology_run(mode: str, kind: str) -> tuple[list[str], str]:
    """A run on a private ``mode`` topology (cluster, sentinel) of ``kind`` servers."""
    args = ["-p", PLUGIN, f"--madsci-cache={mode}"]
    if kind != "valkey":
        args.append(f"--madsci-cache-server={kind}")
    return args, f"{_SERVER} -> madsci_cache_rs.PyCacheHandler on redis+{mode}"


# Each topology on Valkey (the plain label) and on Redis (the system's
# redis-server: the "-redis" label).
for _mode in ("cluster", "sentinel"):
    RUNS[_mode] = _topology_run(_mode, "valkey")
    RUNS[f"{_mode}-redis"] = _topology_run(_mode, "redis")

#: what runs without ``--runs``.
DEFAULT_RUNS = ["madsci", "ours", "strict", "server", "server-cached", "cluster", "sentinel-redis"]

#: the runs whose handlers live on a private server or topology: the plugin
#: must report the tests' commands there.
SERVER_RUNS = {"server", "server-cached", "cluster", "sentinel", "cluster-redis", "sentinel-redis"}

#: environment for a run, beyond the caller's.
RUN_ENV: dict[str, dict[str, str]] = {"server-cached": {"MADSCI_CACHE_RS_CLIENT_CACHE": "1"}}


def run(workdir: Path, roots: dict[str, Path], label: str, extra: list[str]) -> dict[str, str]:
    """Run every suite; returns test id -> outcome (passed/failed/skipped/error)."""
    outcomes: dict[str, str] = {}
    plugin_args, expected = RUNS[label]
    env = dict(os.environ)
    env.pop("MADSCI_CACHE_RS", None)
    env.pop("MADSCI_CACHE_RS_CLIENT_CACHE", None)
    env.pop("MADSCI_CACHE_RS_URL", None)
    env.update(RUN_ENV.get(label, {}))
    env["HOME"] = tempfile.mkdtemp(prefix=f"home-{label}-", dir=workdir)
    for dist, files in SUITES.items():
        report = workdir / f"report-{label}-{dist}.xml"
        args = [
            str(Path(sys.executable).with_name("pytest")),
            "-q", "-p", "no:cacheprovider",
            "--rootdir", str(workdir), "-c", str(workdir / "pytest.ini"),
            f"--junitxml={report}", "-o", "junit_family=xunit2",
            *plugin_args,
        ]  # fmt: skip
        args += [str(roots[dist] / f) for f in files] + extra
        print(f"== {label}: {dist}", flush=True)
        probe = workdir / f"probe-{label}-{dist}.txt"
        probe.unlink(missing_ok=True)
        env["MADSCI_SUITES_PROBE"] = str(probe)
        proc = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True)
        # A run "under our plugin" that left madsci's classes in place proves nothing.
        holder = probe.read_text() if probe.exists() else "unknown"
        if holder != expected:
            raise SystemExit(f"{label} run of {dist} used InMemoryCacheHandler from {holder}")
        tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
        print("   " + (tail[0] if tail else proc.stderr[-500:]), flush=True)
        if label in SERVER_RUNS:
            # The plugin reports what the private server did; a server run whose
            # server saw no traffic ran in memory after all.
            found = re.search(r"madsci-cache-rs: (\d+) commands ran", proc.stdout)
            if not found or int(found.group(1)) < len(files):
                raise SystemExit(
                    f"{label} run of {dist}: no traffic on the server\n{proc.stdout[-2000:]}"
                )
            print(f"   ({found.group(1)} data commands reached the primaries)", flush=True)
        if not report.exists():
            raise SystemExit(
                f"pytest wrote no report for {dist}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        for case in ET.parse(report).getroot().iter("testcase"):
            test_id = f"{dist}::{case.get('classname')}::{case.get('name')}"
            outcome = "passed"
            for child in case:
                if child.tag in ("failure", "error"):
                    outcome = "failed"
                elif child.tag == "skipped":
                    outcome = "skipped"
            outcomes[test_id] = outcome
    return outcomes


def compare(
    theirs: dict[str, str], ours: dict[str, str], label: str, expected: dict[str, str]
) -> list[str]:
    """Tests that pass with madsci's classes and not in run ``label``, other than
    those ``expected`` to differ (test id -> reason), and expected differences
    that no longer differ (a stale list hides nothing)."""
    problems = []
    for test_id, outcome in sorted(theirs.items()):
        if outcome != "passed":
            continue
        got = ours.get(test_id, "missing")
        if got != "passed" and test_id not in expected:
            problems.append(f"{test_id}: passes with madsci's classes, {got} in the {label} run")
        if got == "passed" and test_id in expected:
            problems.append(f"{test_id}: listed as differing in the {label} run, but passes")
    problems += [f"{t}: listed for the {label} run, but not run" for t in expected if t not in ours]
    return problems


def summary(outcomes: dict[str, str]) -> str:
    counts = {k: list(outcomes.values()).count(k) for k in ("passed", "failed", "skipped")}
    return ", ".join(f"{n} {k}" for k, n in counts.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", type=Path, help="where to download and run (default: a temp dir)"
    )
    parser.add_argument(
        "--runs",
        default=",".join(DEFAULT_RUNS),
        help=f"comma-separated runs among {', '.join(RUNS)}",
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    opts = parser.parse_args()
    labels = [label for label in opts.runs.split(",") if label]
    if labels[:1] != ["madsci"] or not set(labels) <= set(RUNS):
        parser.error(f"--runs starts with madsci and names runs among {', '.join(RUNS)}")
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="madsci-suites-"))
    workdir.mkdir(parents=True, exist_ok=True)
    roots = fetch(workdir.resolve())
    results, took = {}, {}
    for label in labels:
        started = time.monotonic()
        results[label] = run(workdir.resolve(), roots, label, opts.pytest_args)
        took[label] = time.monotonic() - started
    theirs = results["madsci"]
    problems = []
    if not any(o == "passed" for o in theirs.values()):
        problems.append("madsci's own run passed nothing: the set-up is broken")
    for label, outcomes in results.items():
        print(f"{label + ':':14} {summary(outcomes)} ({took[label]:.0f} s)")
        if label != "madsci":
            problems += compare(theirs, outcomes, label, EXPECTED_DIFFERENCES.get(label, {}))
    for line in problems:
        print("REGRESSION " + line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
