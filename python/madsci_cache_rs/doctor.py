"""``madsci-cache-rs doctor [URL]``: what a lab operator wants to know about a
server before trusting it with live state.

It reads (never writes) the server's identity, persistence, memory limit and
eviction policy, replication and Cluster/Sentinel role, round-trip latency,
and madsci's own keys: workcells, location managers and the locks held, with
their holders' tokens and time left. Settings that can lose a workcell's state
are findings at level ``danger`` and make the exit status 1.

Everything goes through ``PyCacheHandler._command``, which sends only
commands that change nothing; redis-py is not needed.
"""

from __future__ import annotations

import json
import statistics
import textwrap
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from madsci_cache_rs import (
    CacheAuthenticationError,
    CacheConnectionError,
    CacheError,
    CacheResponseError,
    CacheTimeoutError,
    PyCacheHandler,
)

EXIT_OK = 0
EXIT_DANGER = 1
# 2 is argparse's: a usage error (no URL, a malformed one).
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4

WIDTH = 100
PINGS = 5
MAX_KEYS = 1000
# SCAN's COUNT hint, and how many SCANs (keys looked at / SCAN_COUNT) at most.
SCAN_COUNT = 500
SCAN_STEPS = 2000
# Where madsci 0.8.1 keeps its state: WorkcellStateHandler and
# LocationStateHandler prefixes, and pottery's lock names (our Redlock's too).
WORKCELL_PREFIX = "madsci:workcell:"
LOCATION_PREFIX = "madsci:location_manager:"
LOCK_PREFIX = "redlock:"
# The workcell status flags worth an operator's eye, in madsci's field names.
STATUS_FLAGS = ("errored", "paused", "locked", "initializing", "shutdown")

DANGER, WARNING, NOTE = "danger", "warning", "note"


@dataclass
class Finding:
    level: str
    text: str


@dataclass
class Report:
    url: str
    server: dict[str, Any] = field(default_factory=dict)
    persistence: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    replication: dict[str, Any] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    keyspace: dict[str, dict[str, int]] = field(default_factory=dict)
    workcells: list[dict[str, Any]] = field(default_factory=list)
    location_managers: list[dict[str, Any]] = field(default_factory=list)
    locks: list[dict[str, Any]] = field(default_factory=list)
    other_keys: list[dict[str, Any]] = field(default_factory=list)
    # Patterns whose scan stopped at `key_limit` keys (or SCAN_STEPS calls).
    truncated: list[str] = field(default_factory=list)
    key_limit: int = MAX_KEYS
    findings: list[Finding] = field(default_factory=list)

    def add(self, level: str, text: str) -> None:
        self.findings.append(Finding(level, text))

    @property
    def exit_status(self) -> int:
        return EXIT_DANGER if any(f.level == DANGER for f in self.findings) else EXIT_OK


# --- reading replies -------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def parse_info(reply: Any) -> dict[str, str]:
    """``INFO`` text as ``{field: value}`` (section headers dropped)."""
    out = {}
    for line in _text(reply).splitlines():
        if line and not line.startswith("#") and ":" in line:
            name, value = line.split(":", 1)
            out[name] = value.strip()
    return out


def parse_fields(value: str) -> dict[str, str]:
    """``a=1,b=2`` (INFO's keyspace and replica lines) as a dict."""
    return dict(p.split("=", 1) for p in value.split(",") if "=" in p)


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _db_of(url: str) -> int:
    """The database of a redacted URL (``…/N`` or ``…?db=N``)."""
    tail = url.rsplit("db=", 1)[1] if "?db=" in url else url.rsplit("/", 1)[-1]
    return _int(tail)


# --- the rules -------------------------------------------------------------------------


def judge_eviction(policy: str, maxmemory: int) -> Finding | None:
    """Which ``maxmemory-policy`` can drop madsci's state.

    ``allkeys-*`` may drop any key: a workcell's queue, nodes or status.
    ``volatile-*`` drops only keys with a time to live, and those are exactly
    madsci's lock keys (and our exactly-once records): a held lock that
    vanishes lets a second manager act at once. Without ``maxmemory`` no
    policy ever runs, but it takes effect the moment a limit is set.
    """
    if policy == "noeviction" or not policy:
        return None
    if policy.startswith("allkeys-"):
        harm = (
            "evicts ANY key when memory is full: a workcell's queue, nodes or status "
            "can silently vanish"
        )
    elif policy.startswith("volatile-"):
        harm = (
            "evicts keys with a TTL when memory is full, and madsci's locks (redlock:*) "
            "have one: a held lock can vanish and two managers act on the same state"
        )
    else:
        harm = "is not noeviction: keys may be dropped when memory is full"
    if maxmemory == 0:
        return Finding(
            WARNING,
            f"maxmemory-policy {policy} {harm}. Inactive while maxmemory is 0 (no limit), "
            "but it takes effect as soon as a limit is set: use noeviction.",
        )
    return Finding(DANGER, f"maxmemory-policy {policy} {harm}. Use noeviction.")


def judge_persistence(p: dict[str, Any]) -> list[Finding]:
    found = []
    aof, save = p.get("aof"), p.get("save")
    if not aof and save == "":
        found.append(
            Finding(
                DANGER,
                "No persistence (appendonly no, no save points): a restart or crash empties "
                "the server, every workcell's queue, nodes and status with it. "
                "Set appendonly yes.",
            )
        )
    elif not aof and save is None:
        found.append(
            Finding(
                WARNING,
                "appendonly is off and the save points could not be read "
                f"({p.get('save_error', 'CONFIG GET refused')}): check that snapshots are on.",
            )
        )
    elif not aof:
        found.append(
            Finding(
                WARNING,
                f"Snapshots only (save {save}): a crash loses every write since the last "
                "one, and restores locks and queues as they were then. "
                "appendonly yes keeps each write.",
            )
        )
    elif p.get("appendfsync") == "no":
        found.append(
            Finding(
                WARNING,
                "appendfsync no: the OS decides when the append-only file reaches the "
                "disk; a power loss can lose tens of seconds of writes.",
            )
        )
    for status in ("rdb_last_bgsave_status", "aof_last_write_status"):
        if p.get(status) not in (None, "ok"):
            found.append(
                Finding(
                    DANGER,
                    f"{status} is {p[status]}: the server could not save (disk full or "
                    "not writable?) and may refuse writes until it can.",
                )
            )
    return found


# --- examining a server ----------------------------------------------------------------


class _Server:
    """The handler, with the key scan's bound."""

    def __init__(self, handler: PyCacheHandler, max_keys: int) -> None:
        self.h = handler
        self.max_keys = max_keys

    def cmd(self, *args: str | int) -> Any:
        return self.h._command(*args)

    def info(self, section: str) -> dict[str, str]:
        return parse_info(self.cmd("INFO", section))

    def config(self, name: str) -> str:
        reply = self.cmd("CONFIG", "GET", name)
        return _text(reply[1]) if len(reply) >= 2 else ""

    def scan(self, pattern: str) -> tuple[list[str], bool]:
        """Keys matching ``pattern``: at most ``max_keys`` of them, and at most
        ``SCAN_STEPS`` round trips on a server full of other keys; whether the
        scan stopped short."""
        keys: set[str] = set()
        cursor = "0"
        for _ in range(SCAN_STEPS):
            cursor_b, batch = self.cmd("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT)
            keys.update(_text(k) for k in batch)
            cursor = _text(cursor_b)
            if cursor == "0" or len(keys) >= self.max_keys:
                break
        short = cursor != "0" or len(keys) > self.max_keys
        return sorted(keys)[: self.max_keys], short

    def size(self, key: str) -> tuple[str, int | None]:
        kind = _text(self.cmd("TYPE", key))
        length = {"hash": "HLEN", "list": "LLEN", "string": "STRLEN"}.get(kind)
        return kind, (self.cmd(length, key) if length else None)

    def hash_field(self, key: str, name: str) -> Any:
        """A pottery dict's value for a ``str`` key (both stored as JSON)."""
        raw = self.cmd("HGET", key, json.dumps(name))
        try:
            return json.loads(raw) if raw is not None else None
        except ValueError:
            return None


def examine(
    handler: PyCacheHandler,
    *,
    pings: int = PINGS,
    max_keys: int = MAX_KEYS,
    in_cluster: bool = False,
) -> Report:
    """Everything ``doctor`` reports on, read from the server (with
    ``in_cluster``, a primary examined as part of a ``redis+cluster://`` URL).
    Raises our connection errors when the server cannot be reached or refuses us."""
    s = _Server(handler, max_keys)
    report = Report(url=handler.url, key_limit=max_keys)
    info = s.info("server")
    name = info.get("server_name", "redis")
    mode = info.get("server_mode") or info.get("redis_mode", "standalone")
    version = info.get(f"{name}_version") or info.get("redis_version", "?")
    report.server = {
        "name": name,
        "version": version,
        "mode": mode,
        "uptime_s": _int(info.get("uptime_in_seconds")),
    }
    report.latency_ms = _latency(s, pings)
    if mode == "sentinel":
        masters = [parse_fields(v) for k, v in s.info("sentinel").items() if k.startswith("master")]
        report.replication = {"role": "sentinel", "masters": masters}
        named = ", ".join(f"{m.get('name')} at {m.get('address')}" for m in masters) or "none"
        report.add(
            DANGER,
            f"This is a Sentinel, not a data server (it watches: {named}). madsci-cache-rs "
            "talks to one server: give it the primary's address.",
        )
        return report
    _persistence(s, report)
    _memory(s, report)
    _replication(s, report, in_cluster)
    _keyspace(s, report)
    _madsci_keys(s, report)
    return report


def _latency(s: _Server, pings: int) -> dict[str, float]:
    times = []
    for _ in range(max(pings, 1)):
        start = time.perf_counter()
        s.cmd("PING")
        times.append((time.perf_counter() - start) * 1000)
    return {
        "count": len(times),
        "min": round(min(times), 3),
        "median": round(statistics.median(times), 3),
        "max": round(max(times), 3),
    }


def _persistence(s: _Server, report: Report) -> None:
    info = s.info("persistence")
    p: dict[str, Any] = {
        "aof": info.get("aof_enabled") == "1",
        "save": None,
        "appendfsync": None,
        "rdb_last_bgsave_status": info.get("rdb_last_bgsave_status"),
        "aof_last_write_status": info.get("aof_last_write_status")
        if info.get("aof_enabled") == "1"
        else None,
        "last_save_time": _int(info.get("rdb_last_save_time")),
        "changes_since_last_save": _int(info.get("rdb_changes_since_last_save")),
        "loading": info.get("loading") == "1",
    }
    try:
        p["save"] = s.config("save")
        p["appendfsync"] = s.config("appendfsync")
    except CacheResponseError as exc:  # CONFIG renamed away or denied by an ACL
        p["save_error"] = str(exc)
    report.persistence = p
    report.findings += judge_persistence(p)
    if p["loading"]:
        report.add(WARNING, "The server is still loading its data: madsci's calls wait until done.")


def _memory(s: _Server, report: Report) -> None:
    info = s.info("memory")
    maxmemory = _int(info.get("maxmemory"))
    policy = info.get("maxmemory_policy", "")
    report.memory = {
        "used": _int(info.get("used_memory")),
        "maxmemory": maxmemory,
        "policy": policy,
    }
    finding = judge_eviction(policy, maxmemory)
    if finding:
        report.findings.append(finding)
    elif maxmemory:
        report.add(
            NOTE,
            "With maxmemory and noeviction, a full server refuses writes (OOM) rather than "
            "dropping data: madsci's calls fail until memory is freed.",
        )


def _replication(s: _Server, report: Report, in_cluster: bool) -> None:
    info = s.info("replication")
    role = info.get("role", "?")
    replicas = [
        parse_fields(v) for k, v in info.items() if k.startswith("slave") and k[5:].isdigit()
    ]
    rep: dict[str, Any] = {"role": role, "replicas": replicas}
    if role == "slave":
        rep["primary"] = f"{info.get('master_host')}:{info.get('master_port')}"
        rep["link"] = info.get("master_link_status")
        report.add(
            DANGER,
            f"This server is a replica of {rep['primary']} (link {rep['link']}): madsci's "
            "writes are refused (READONLY) or lost at the next resync. Use the primary.",
        )
    cluster = s.info("cluster").get("cluster_enabled") == "1"
    rep["cluster"] = cluster
    if cluster and not in_cluster:
        report.add(
            DANGER,
            "Cluster mode is on, and this URL names one node: keys served by other nodes "
            "answer MOVED. Use a redis+cluster:// URL naming the cluster's nodes.",
        )
    report.replication = rep


def _keyspace(s: _Server, report: Report) -> None:
    for db, value in s.info("keyspace").items():
        fields = parse_fields(value)
        report.keyspace[db] = {
            "keys": _int(fields.get("keys")),
            "expires": _int(fields.get("expires")),
        }


def _madsci_keys(s: _Server, report: Report) -> None:
    workcells: dict[str, dict[str, Any]] = {}
    managers: dict[str, dict[str, Any]] = {}
    keys, more = s.scan("madsci:*")
    if more:
        report.truncated.append("madsci:*")
    for key in keys:
        kind, size = s.size(key)
        if kind == "none":  # deleted since the scan
            continue
        for prefix, group in ((WORKCELL_PREFIX, workcells), (LOCATION_PREFIX, managers)):
            ident, sep, part = key[len(prefix) :].partition(":")
            if key.startswith(prefix) and sep:
                entry = group.setdefault(ident, {"id": ident, "keys": {}})
                entry["keys"][part] = {"type": kind, "size": size}
                break
        else:
            report.other_keys.append({"key": key, "type": kind, "size": size})
    for ident, entry in sorted(workcells.items()):
        prefix = f"{WORKCELL_PREFIX}{ident}:"
        if "workcell_info" in entry["keys"]:
            entry["name"] = s.hash_field(prefix + "workcell_info", "name")
        if "status" in entry["keys"]:
            entry["status"] = [
                f for f in STATUS_FLAGS if s.hash_field(prefix + "status", f) is True
            ]
        if "state_changed" in entry["keys"]:
            entry["changes"] = _int(_text(s.cmd("GET", prefix + "state_changed")), -1)
        report.workcells.append(entry)
    report.location_managers = [managers[k] for k in sorted(managers)]
    locks, more = s.scan(LOCK_PREFIX + "*")
    if more:
        report.truncated.append(LOCK_PREFIX + "*")
    for key in locks:
        try:
            token = s.cmd("GET", key)
        except CacheResponseError:  # not a string: not a lock of ours or pottery's
            token = None
        pttl = s.cmd("PTTL", key)
        if pttl == -2:  # released between the scan and now
            continue
        report.locks.append(
            {"key": key, "token": _text(token) if token is not None else None, "ms_left": pttl}
        )
        if pttl == -1:
            report.add(
                WARNING,
                f"Lock {key} has no expiry: it stays held until deleted by hand "
                "(not written by pottery or madsci-cache-rs, which always set one).",
            )


# --- rendering -------------------------------------------------------------------------


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _n(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def _wrap(text: str, indent: str, first: str | None = None) -> list[str]:
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_on_hyphens=False,
    )


def _row(label: str, text: str) -> list[str]:
    return _wrap(text, " " * 13, f"{label:<13}")


def _workcell_line(wc: dict[str, Any]) -> str:
    keys = wc["keys"]

    def count(part: str) -> int:
        # An empty hash or list is no key at all.
        return keys.get(part, {}).get("size") or 0

    parts = [
        _n(count("nodes"), "node"),
        f"{count('workflow_queue')} queued",
        _n(count("active_workflows"), "active workflow"),
    ]
    if "status" in wc:
        parts.append("status " + (", ".join(wc["status"]) or "ok"))
    if "changes" in wc:
        parts.append(f"state changes {wc['changes']}")
    return "; ".join(p for p in parts if p)


def render(report: Report) -> str:
    """The report, readable in 100 columns."""
    out = [f"madsci-cache-rs doctor: {report.url}", ""]
    srv = report.server
    out += _row(
        "server",
        f"{srv['name'].capitalize()} {srv['version']} ({srv['mode']}), "
        f"up {_duration(srv['uptime_s'])}",
    )
    p = report.persistence
    if p:
        fsync, last = p["appendfsync"] or "?", p["aof_last_write_status"]
        aof = f"AOF on (appendfsync {fsync}, last write {last})" if p["aof"] else "AOF off"
        save = {None: "save points unknown", "": "no RDB save points"}.get(
            p["save"], f"RDB save points {p['save']}"
        )
        out += _row("persistence", f"{aof}; {save}; last RDB save {p['rdb_last_bgsave_status']}")
    m = report.memory
    if m:
        limit = _bytes(m["maxmemory"]) if m["maxmemory"] else "none"
        out += _row(
            "memory",
            f"used {_bytes(m['used'])}; maxmemory {limit}; maxmemory-policy {m['policy']}",
        )
    r = report.replication
    if r.get("role") == "sentinel":
        out += _row(
            "replication", f"Sentinel watching {_n(len(r['masters']), 'primary', 'primaries')}"
        )
    elif r:
        role = {"master": "primary", "slave": "replica"}.get(r["role"], r["role"])
        if r["role"] == "slave":
            role += f" of {r['primary']} (link {r['link']})"
        replicas = ", ".join(
            f"{x.get('ip')}:{x.get('port')} {x.get('state')} lag {x.get('lag')}"
            for x in r["replicas"]
        )
        text = f"{role}, {_n(len(r['replicas']), 'connected replica')}"
        text += f" ({replicas})" if replicas else ""
        text += "; cluster mode on" if r.get("cluster") else "; cluster mode off"
        out += _row("replication", text)
    lat = report.latency_ms
    out += _row(
        "latency",
        f"{lat['count']} PINGs: min {lat['min']:.2f} ms, median {lat['median']:.2f} ms, "
        f"max {lat['max']:.2f} ms",
    )
    if report.replication.get("role") != "sentinel":
        space = ", ".join(
            f"{db}: {_n(v['keys'], 'key')} ({v['expires']} with a TTL)"
            for db, v in report.keyspace.items()
        )
        out += _row("keyspace", f"{space or 'empty'}; this URL uses db{_db_of(report.url)}")
        out += _keys_section(report)
    out.append("")
    for f in report.findings:
        label = {DANGER: "DANGER  ", WARNING: "WARNING ", NOTE: "note    "}[f.level]
        out += _wrap(f.text, " " * 8, label)
    dangers = sum(f.level == DANGER for f in report.findings)
    warnings = sum(f.level == WARNING for f in report.findings)
    verdict = "NOT SAFE for live madsci state" if dangers else "no dangerous setting found"
    out.append(
        f"verdict: {verdict} ({_n(dangers, 'danger')}, {_n(warnings, 'warning')}); "
        f"exit {report.exit_status}"
    )
    return "\n".join(out)


def _keys_section(report: Report) -> list[str]:
    out = ["", f"workcells ({WORKCELL_PREFIX}*): {len(report.workcells) or 'none'}"]
    for wc in report.workcells:
        name = f' "{wc["name"]}"' if wc.get("name") else ""
        out += _wrap(_workcell_line(wc), " " * 6, f"  {wc['id']}{name}: ")
    out.append(f"location managers ({LOCATION_PREFIX}*): {len(report.location_managers) or 'none'}")
    for lm in report.location_managers:
        parts = ", ".join(f"{k} ({v['type']})" for k, v in sorted(lm["keys"].items()))
        out += _wrap(parts, " " * 6, f"  {lm['id']}: ")
    out.append(f"locks held ({LOCK_PREFIX}*): {len(report.locks) or 'none'}")
    for lock in report.locks:
        left = "no expiry" if lock["ms_left"] < 0 else f"{lock['ms_left'] / 1000:.1f} s left"
        out += _wrap(lock["key"][len(LOCK_PREFIX) :], " " * 6, "  ")
        out.append(f"      token {lock['token']}, {left}")
    if report.other_keys:
        out.append(f"other madsci:* keys: {len(report.other_keys)}")
        for k in report.other_keys:
            out += _wrap(f"{k['key']} ({k['type']})", " " * 6, "  ")
    for pattern in report.truncated:
        out.append(f"(the scan of {pattern} stopped early: at most {report.key_limit} keys shown)")
    return out


def to_json(report: Report) -> str:
    data = asdict(report)
    data["exit_status"] = report.exit_status
    return json.dumps(data, indent=2, sort_keys=True)


# --- the command -----------------------------------------------------------------------


def run(
    url: str,
    *,
    as_json: bool = False,
    wait: float = 3.0,
    pings: int = PINGS,
    max_keys: int = MAX_KEYS,
) -> tuple[int, str]:
    """Examine the server at ``url``: (exit status, text to print). The URL
    takes every ``PyCacheHandler.from_url`` option; ``ValueError`` for a bad one."""
    # A diagnostic reads the server itself, never a client-side copy, and
    # answers promptly rather than waiting out an outage for 30 s.
    from madsci_cache_rs import doctor_cluster

    handler = PyCacheHandler.from_url(url, client_cache=False, retry_window=wait)
    try:
        if doctor_cluster.is_cluster_url(url):
            whole = doctor_cluster.examine_cluster(
                url, handler, pings=pings, max_keys=max_keys, wait=wait
            )
            text = (
                doctor_cluster.cluster_json(whole)
                if as_json
                else doctor_cluster.render_cluster(whole)
            )
            return whole.exit_status, text
        report = examine(handler, pings=pings, max_keys=max_keys)
    except CacheError as exc:
        status, what = _classify(exc)
        return status, _failure(handler.url, what, exc, as_json, status)
    finally:
        handler.close()
    return report.exit_status, to_json(report) if as_json else render(report)


def _classify(exc: CacheError) -> tuple[int, str]:
    if isinstance(exc, CacheAuthenticationError):
        return EXIT_AUTH, "authentication refused"
    # An ACL that lets this user in but not run INFO, SCAN, ...
    if isinstance(exc, CacheResponseError) and ": NOPERM" in str(exc):
        return EXIT_AUTH, "not allowed"
    if isinstance(exc, (CacheConnectionError, CacheTimeoutError)):
        return EXIT_UNREACHABLE, "cannot reach the server"
    return EXIT_UNREACHABLE, "the server refused"


def _failure(url: str, what: str, exc: Exception, as_json: bool, status: int) -> str:
    # Our errors name the server's address, never its password.
    if as_json:
        return json.dumps(
            {"url": url, "error": what, "detail": str(exc), "exit_status": status}, indent=2
        )
    lines = [f"madsci-cache-rs doctor: {url}", ""]
    lines += _wrap(f"{what}: {exc}", " " * 8, "ERROR   ")
    lines.append(f"verdict: could not examine the server; exit {status}")
    return "\n".join(lines)
