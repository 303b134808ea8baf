"""``madsci-cache-rs doctor``, run as operators run it (``python -m
madsci_cache_rs doctor URL``, a subprocess) against private Valkey and Redis
servers set up with the settings it must judge; redis-py only sets servers up
and cross-checks what the doctor reports."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pottery
import pytest
import redis
from helpers import private_cluster, tags_on_each_master
from madsci.common.db_handlers import cache_handler as madsci_cache_handler
from madsci.common.db_handlers.document_storage_handler import InMemoryDocumentStorageHandler
from madsci.common.types.workflow_types import Workflow
from madsci.workcell_manager.state_handler import WorkcellStateHandler

import madsci_cache_rs
from madsci_cache_rs import PyCacheHandler, _install
from madsci_cache_rs.doctor import judge_eviction, judge_persistence
from madsci_cache_rs.testing import PrivateSentinelGroup, PrivateServer, free_port

PASSWORD = "doctor-s3cret-pw"
PACKAGE_ROOT = str(Path(madsci_cache_rs.__file__).resolve().parent.parent)


def doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The console entry in a fresh interpreter, this tree's package first."""
    base = {k: v for k, v in os.environ.items() if k != "MADSCI_CACHE_RS_URL"}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, base.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "madsci_cache_rs", "doctor", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def report(url: str, *options: str) -> tuple[int, dict]:
    out = doctor(url, "--json", *options)
    return out.returncode, json.loads(out.stdout)


@pytest.fixture
def durable(server: PrivateServer) -> Iterator[PrivateServer]:
    """A fresh server of the same kind, set up as a lab's should be: an
    append-only file and no eviction."""
    with PrivateServer(server.kind, appendonly=True) as srv:
        yield srv


@pytest.fixture
def raw_durable(durable: PrivateServer) -> Iterator[redis.Redis]:
    client = redis.Redis(host=durable.host, port=durable.port)
    yield client
    client.close()


def test_a_safe_server_exits_0(durable: PrivateServer) -> None:
    out = doctor(durable.url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no dangerous setting found" in out.stdout
    assert "DANGER" not in out.stdout
    assert "AOF on (appendfsync everysec" in out.stdout
    assert "maxmemory-policy noeviction" in out.stdout
    assert f"{'Valkey' if durable.kind == 'valkey' else 'Redis'} " in out.stdout
    assert max(len(line) for line in out.stdout.splitlines()) <= 100


def test_no_persistence_is_dangerous(server: PrivateServer) -> None:
    # The session servers run with appendonly no and save "".
    out = doctor(server.url)
    assert out.returncode == 1, out.stdout
    assert "DANGER  No persistence" in out.stdout
    assert "NOT SAFE" in out.stdout


def test_snapshots_only_warn_but_pass(durable: PrivateServer, raw_durable: redis.Redis) -> None:
    raw_durable.config_set("appendonly", "no")
    raw_durable.config_set("save", "900 1 60 100")
    out = doctor(durable.url)
    assert out.returncode == 0, out.stdout
    assert "WARNING Snapshots only (save 900 1 60 100)" in out.stdout


@pytest.mark.parametrize(
    "policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-ttl"]
)
def test_an_evicting_policy_is_dangerous(
    durable: PrivateServer, raw_durable: redis.Redis, policy: str
) -> None:
    raw_durable.config_set("maxmemory", "256mb")
    raw_durable.config_set("maxmemory-policy", policy)
    out = doctor(durable.url)
    assert out.returncode == 1, out.stdout
    assert f"DANGER  maxmemory-policy {policy}" in out.stdout
    # Each family says what it can take from a workcell.
    said = " ".join(out.stdout.split())
    assert ("ANY key" in said) if policy.startswith("allkeys") else ("held lock can vanish" in said)


def test_an_evicting_policy_without_a_limit_is_a_warning(
    durable: PrivateServer, raw_durable: redis.Redis
) -> None:
    raw_durable.config_set("maxmemory", "0")
    raw_durable.config_set("maxmemory-policy", "allkeys-lru")
    out = doctor(durable.url)
    assert out.returncode == 0, out.stdout
    assert "WARNING maxmemory-policy allkeys-lru" in out.stdout


def test_the_rules_alone() -> None:
    assert judge_eviction("noeviction", 1 << 30) is None
    assert judge_eviction("volatile-lfu", 1 << 30).level == "danger"  # type: ignore[union-attr]
    assert judge_eviction("allkeys-lru", 0).level == "warning"  # type: ignore[union-attr]
    assert [f.level for f in judge_persistence({"aof": False, "save": ""})] == ["danger"]
    assert judge_persistence({"aof": True, "save": "", "appendfsync": "everysec"}) == []
    failing = {"aof": True, "save": "", "aof_last_write_status": "err"}
    assert [f.level for f in judge_persistence(failing)] == ["danger"]


def test_locks_are_listed_with_token_and_time_left(
    durable: PrivateServer, raw_durable: redis.Redis
) -> None:
    handler = PyCacheHandler.from_url(durable.url)
    ours = handler.create_lock("madsci:workcell:WC1:state_lock", auto_release_time=60)
    theirs = pottery.Redlock(
        key="madsci:workcell:WC1:node:arm:lock", masters={raw_durable}, auto_release_time=30
    )
    assert ours.acquire() and theirs.acquire()
    try:
        status, data = report(durable.url)
        assert status == 0
        locks = {lock["key"]: lock for lock in data["locks"]}
        # The same layout, redlock:<name> holding the token, from both.
        for key, life in (
            ("redlock:madsci:workcell:WC1:state_lock", 60_000),
            ("redlock:madsci:workcell:WC1:node:arm:lock", 30_000),
        ):
            assert locks[key]["token"].encode() == raw_durable.get(key)
            assert 0 < locks[key]["ms_left"] <= life
        text = doctor(durable.url).stdout
        assert "locks held (redlock:*): 2" in text
        assert f"token {locks['redlock:madsci:workcell:WC1:state_lock']['token']}," in text
        assert " s left" in text
    finally:
        ours.release()
        theirs.release()
    _, data = report(durable.url)
    assert data["locks"] == []


def test_a_lock_without_expiry_is_a_warning(
    durable: PrivateServer, raw_durable: redis.Redis
) -> None:
    raw_durable.set("redlock:stuck", "some-token")
    status, data = report(durable.url)
    assert status == 0
    assert data["locks"] == [{"key": "redlock:stuck", "token": "some-token", "ms_left": -1}]
    assert any("redlock:stuck has no expiry" in f["text"] for f in data["findings"])


def test_the_key_scan_is_bounded(durable: PrivateServer, raw_durable: redis.Redis) -> None:
    for i in range(5):
        raw_durable.set(f"madsci:other:{i}", i)
    raw_durable.rpush("redlock:not-a-lock", "x")  # GET answers WRONGTYPE
    _, data = report(durable.url, "--max-keys", "3")
    assert [k["key"] for k in data["other_keys"]] == [f"madsci:other:{i}" for i in range(3)]
    assert data["truncated"] == ["madsci:*"]
    assert data["locks"] == [{"key": "redlock:not-a-lock", "token": None, "ms_left": -1}]
    assert (
        "the scan of madsci:* stopped early: at most 3 keys shown"
        in doctor(durable.url, "--max-keys", "3").stdout
    )


def madsci_handler(kind: str, srv: PrivateServer) -> Any:
    """Ours, or madsci's own (redis-py + pottery) even if a plugin swapped ours in."""
    if kind == "ours":
        return PyCacheHandler.from_url(srv.url)
    key = ("madsci.common.db_handlers.cache_handler", "PyCacheHandler")
    theirs = _install._originals.get(key, madsci_cache_handler.PyCacheHandler)
    return theirs.from_settings(host=srv.host, port=srv.port)


@pytest.mark.parametrize("writer", ["ours", "madsci"])
def test_madsci_workcell_state_is_listed(durable: PrivateServer, writer: str) -> None:
    handler = madsci_handler(writer, durable)
    state = WorkcellStateHandler(
        nodes={"liquidhandler": "http://127.0.0.1:2000", "arm": "http://127.0.0.1:2001"},
        cache_handler=handler,
        document_handler=InMemoryDocumentStorageHandler(),
    )
    state.initialize_workcell_state()
    for name in ("first", "second", "third"):
        state.enqueue_workflow(Workflow(name=name).workflow_id)
    state.set_active_workflow(Workflow(name="running"))
    state.update_workcell_status(lambda status: status.model_copy(update={"paused": True}))
    ident = state._workcell_id
    with state.wc_state_lock():
        status, data = report(durable.url)
        text = doctor(durable.url).stdout
    assert status == 0
    [wc] = data["workcells"]
    assert wc["id"] == ident
    assert wc["name"] == "WorkcellManager"
    assert wc["keys"]["nodes"] == {"type": "hash", "size": 2}
    assert wc["keys"]["workflow_queue"] == {"type": "list", "size": 3}
    assert wc["keys"]["active_workflows"] == {"type": "hash", "size": 1}
    assert wc["status"] == ["paused"]
    assert wc["changes"] == int(handler.get(f"madsci:workcell:{ident}:state_changed"))
    assert wc["changes"] >= 3
    assert [lock["key"] for lock in data["locks"]] == [
        f"redlock:madsci:workcell:{ident}:state_lock"
    ]
    assert data["other_keys"] == []
    assert f'{ident} "WorkcellManager": 2 nodes; 3 queued; 1 active workflow; status paused' in text


def test_unreachable_server_has_its_own_code() -> None:
    out = doctor(f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0", "--wait", "0")
    assert out.returncode == 3, out.stdout + out.stderr
    assert "cannot reach the server" in out.stdout
    assert PASSWORD not in out.stdout + out.stderr


@pytest.fixture
def guarded(server: PrivateServer) -> Iterator[PrivateServer]:
    with PrivateServer(server.kind, password=PASSWORD, appendonly=True) as srv:
        yield srv


def test_a_refused_password_has_its_own_code(guarded: PrivateServer) -> None:
    wrong = guarded.url.replace(PASSWORD, "not-the-pw-4711")
    for url in (wrong, guarded.url.replace(f":{PASSWORD}@", "")):
        out = doctor(url)
        assert out.returncode == 4, out.stdout + out.stderr
        assert "authentication refused" in out.stdout
        assert "not-the-pw-4711" not in out.stdout + out.stderr
    out = doctor(guarded.url)
    assert out.returncode == 0, out.stdout
    assert PASSWORD not in out.stdout + out.stderr
    out = doctor(guarded.url, "--json")
    assert json.loads(out.stdout)["url"].startswith("redis://***@")
    assert PASSWORD not in out.stdout + out.stderr


def test_acl_limits(durable: PrivateServer, raw_durable: redis.Redis) -> None:
    raw_durable.acl_setuser("noinfo", enabled=True, passwords=["+pw-1"], keys=["*"],
                            commands=["+@all", "-info"])  # fmt: skip
    raw_durable.acl_setuser("noconfig", enabled=True, passwords=["+pw-2"], keys=["*"],
                            commands=["+@all", "-config"])  # fmt: skip
    host = f"{durable.host}:{durable.port}"
    out = doctor(f"redis://noinfo:pw-1@{host}/0")
    assert out.returncode == 4, out.stdout
    assert "not allowed" in out.stdout and "NOPERM" in out.stdout
    # Without CONFIG the save points are unknown; the rest still reads.
    out = doctor(f"redis://noconfig:pw-2@{host}/0")
    assert out.returncode == 0, out.stdout
    assert "save points unknown" in out.stdout
    raw_durable.config_set("appendonly", "no")
    out = doctor(f"redis://noconfig:pw-2@{host}/0")
    assert out.returncode == 0, out.stdout
    assert "WARNING appendonly is off and the save points could not be read" in out.stdout


def test_the_url_comes_from_the_environment(guarded: PrivateServer) -> None:
    out = doctor(env={"MADSCI_CACHE_RS_URL": guarded.url})
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"127.0.0.1:{guarded.port}/0" in out.stdout
    out = doctor()
    assert out.returncode == 2
    assert "MADSCI_CACHE_RS_URL" in out.stderr


def test_a_malformed_url_is_a_usage_error_without_its_password() -> None:
    out = doctor(f"redis://:{PASSWORD}/x@127.0.0.1:1/0")
    assert out.returncode == 2
    assert "doctor:" in out.stderr
    assert PASSWORD not in out.stdout + out.stderr


def test_a_replica_is_dangerous(durable: PrivateServer) -> None:
    with PrivateServer(durable.kind, appendonly=True) as replica:
        client = redis.Redis(host=replica.host, port=replica.port)
        client.replicaof(durable.host, durable.port)
        status, data = report(replica.url)
        client.close()
        assert status == 1
        assert data["replication"]["role"] == "slave"
        assert data["replication"]["primary"] == f"{durable.host}:{durable.port}"
        assert any("is a replica of" in f["text"] for f in data["findings"])
    status, data = report(durable.url)
    assert data["replication"]["role"] == "master"


def test_cluster_mode_is_dangerous(server: PrivateServer) -> None:
    with PrivateServer(
        server.kind,
        appendonly=True,
        # The bus port defaults to port + 10000, which may be taken or past 65535.
        extra_config=["cluster-enabled yes", f"cluster-port {free_port()}"],
    ) as node:
        status, data = report(node.url)
    assert status == 1
    assert data["replication"]["cluster"] is True
    assert any("Cluster mode is on" in f["text"] for f in data["findings"])
    assert any("redis+cluster://" in f["text"] for f in data["findings"])


def test_the_report_reads_latency(durable: PrivateServer) -> None:
    _, data = report(durable.url)
    lat = data["latency_ms"]
    assert lat["count"] == 5
    assert 0 < lat["min"] <= lat["median"] <= lat["max"]


def test_command_only_reads(handler: PyCacheHandler, raw: redis.Redis) -> None:
    raw.set("k", "v")
    assert handler._command("PING") == "PONG"
    assert handler._command("GET", "k") == b"v"
    assert handler._command("get", "missing") is None
    assert handler._command("PTTL", "k") == -1
    assert handler._command("SCAN", 0, "MATCH", "k*", "COUNT", 10)[1] == [b"k"]
    assert handler._command("CONFIG", "GET", "maxmemory-policy") == [
        b"maxmemory-policy",
        b"noeviction",
    ]
    for args in (("SET", "k", "w"), ("DEL", "k"), ("CONFIG", "SET", "save", ""), ("FLUSHALL",)):
        with pytest.raises(ValueError, match="only"):
            handler._command(*args)
    assert raw.get("k") == b"v"
    with pytest.raises(madsci_cache_rs.CacheResponseError, match="wrong number"):
        handler._command("GET")


def test_a_cluster_url_examines_every_primary() -> None:
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(contextlib.contextmanager(private_cluster)("valkey"))
        h = PyCacheHandler.from_url(cluster.url)
        tags = tags_on_each_master(cluster, "doctor")
        for tag in tags.values():
            assert h.create_lock(f"{{{tag}}}:arm").acquire()
        h.close()
        status, data = report(cluster.url)
        # The private nodes keep no data on disk: a danger on each primary.
        assert status == 1
        assert data["slots_covered"] == 16384 and len(data["primaries"]) == 3
        assert {int(p.rsplit(":", 1)[1]) for p in data["primaries"]} == set(tags)
        locks = sorted(lock["key"] for node in data["nodes"] for lock in node["locks"])
        assert locks == sorted(f"redlock:{{{tag}}}:arm" for tag in tags.values())
        texts = [f["text"] for node in data["nodes"] for f in node["findings"]]
        assert not any("Cluster mode is on" in t for t in texts)
        assert all(node["replication"]["cluster"] for node in data["nodes"])
        out = doctor(cluster.url)
        assert out.returncode == 1 and "3 primaries" in out.stdout
    dead = f"redis+cluster://:{PASSWORD}@127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    out = doctor(dead, "--wait", "0")
    assert out.returncode == 3 and "cannot reach the server" in out.stdout
    assert PASSWORD not in out.stdout + out.stderr


def test_a_sentinel_url_examines_the_primary() -> None:
    with PrivateSentinelGroup("valkey").start() as group:
        status, data = report(group.url)
        assert status == 1  # no persistence on the private nodes
        assert data["replication"]["role"] == "master"
        assert len(data["replication"]["replicas"]) == 1
        assert data["url"].startswith("redis+sentinel://")
    dead = f"redis+sentinel://127.0.0.1:{free_port()}/mymaster"
    out = doctor(dead, "--wait", "0")
    assert out.returncode == 3 and "cannot reach the server" in out.stdout
