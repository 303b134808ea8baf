"""The pytest plugin's server fixtures, used as a madsci user would."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

USER_TESTS = textwrap.dedent(
    """
    def test_first(madsci_server_cache_handler):
        assert madsci_server_cache_handler.ping()
        d = madsci_server_cache_handler.create_dict("state")
        assert d.to_dict() == {}
        d["a"] = 1
        madsci_server_cache_handler.set("k", "v")

    def test_second_starts_empty(madsci_server_cache_handler, madsci_cache_server):
        assert madsci_server_cache_handler.get("k") is None
        assert madsci_server_cache_handler.create_dict("state").to_dict() == {}
        assert str(madsci_cache_server.port) in madsci_server_cache_handler.url
    """
)


def test_fixtures_give_a_real_server_and_an_empty_handler(tmp_path):
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "madsci_cache_rs.pytest_plugin", "-p",
         "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


MODE_TESTS = textwrap.dedent(
    """
    import os

    from madsci.common.db_handlers import InMemoryCacheHandler

    import madsci_cache_rs

    MODE = os.environ["EXPECTED_MODE"]
    # Where each server mode's handlers are.
    SCHEMES = {"server": "redis://", "cluster": "redis+cluster://", "sentinel": "redis+sentinel://"}


    def test_first_writes():
        handler = InMemoryCacheHandler()
        d = handler.create_dict("state")
        d["t"] = (1, 2)
        if MODE == "memory":
            assert type(handler) is madsci_cache_rs.InMemoryCacheHandler
            assert d["t"] == (1, 2)  # stored as given, as madsci does
        else:
            assert d["t"] == [1, 2]  # through JSON, as a server stores it
        if MODE in SCHEMES:
            assert type(handler) is madsci_cache_rs.PyCacheHandler
            assert handler.url.startswith(SCHEMES[MODE]), handler.url
            assert isinstance(handler, InMemoryCacheHandler)
            # A second handler sees the same server data.
            assert InMemoryCacheHandler(client=object()).create_dict("state")["t"] == [1, 2]
        if MODE == "strict":
            assert handler.strict
        handler.incr("n")
        # k0..k5 land on each master of a 3-master cluster (slots 449 to 12706).
        for i in range(6):
            handler.set(f"k{i}", i)


    def test_second_starts_empty():
        # Built with a client, a server mode's handler leaves the data alone:
        # it is gone because each test starts on emptied primaries.
        client = object() if MODE in SCHEMES else None
        handler = InMemoryCacheHandler(client=client)
        assert handler.get("n") is None
        assert [handler.get(f"k{i}") for i in range(6)] == [None] * 6
        assert handler.create_dict("state").to_dict() == {}
    """
)


def _run_modes(tmp_path, env_extra, *args):
    import os

    (tmp_path / "test_modes.py").write_text(MODE_TESTS)
    env = {k: v for k, v in os.environ.items() if k != "MADSCI_CACHE_RS"}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env=env,
    )


@pytest.mark.parametrize(
    ("mode", "env", "args"),
    [
        ("memory", {}, ["-p", "madsci_cache_rs.pytest_plugin"]),
        ("memory", {"MADSCI_CACHE_RS": "1"}, []),
        ("strict", {}, ["--madsci-cache=strict"]),
        ("strict", {"MADSCI_CACHE_RS": "strict"}, []),
        ("server", {}, ["-p", "madsci_cache_rs.pytest_plugin", "--madsci-cache=server"]),
        ("server", {"MADSCI_CACHE_RS": "server"}, []),
        ("cluster", {}, ["-p", "madsci_cache_rs.pytest_plugin", "--madsci-cache=cluster"]),
        ("cluster", {"MADSCI_CACHE_RS": "cluster"}, []),
        ("sentinel", {}, ["--madsci-cache=sentinel"]),
        ("sentinel", {"MADSCI_CACHE_RS_SERVER_KIND": "redis"}, ["--madsci-cache=sentinel"]),
        ("cluster", {}, ["--madsci-cache=cluster", "--madsci-cache-server=redis"]),
    ],
)
def test_modes_give_madsci_tests_our_handlers(tmp_path, mode, env, args):
    result = _run_modes(tmp_path, {"EXPECTED_MODE": mode, **env}, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert f"installed into madsci, {mode} mode" in result.stdout
    if mode in ("server", "cluster", "sentinel"):
        asked_redis = env.get("MADSCI_CACHE_RS_SERVER_KIND") == "redis"
        kind = "redis" if asked_redis or "--madsci-cache-server=redis" in args else "valkey"
        assert f"{mode} mode on {kind} at " in result.stdout, result.stdout
    if mode in ("server", "cluster", "sentinel"):
        # The primaries saw the tests' writes (HSET, HGET, INCR, ...), not only
        # flushes, the set-up, replication or the sentinels' probes.
        where = {
            "server": "server",
            "cluster": "cluster's primaries",
            "sentinel": "Sentinel group's primary",
        }[mode]
        found = re.search(
            rf"madsci-cache-rs: (\d+) commands ran on the private {where} ", result.stdout
        )
        assert found and int(found.group(1)) >= 5, result.stdout


def test_an_unknown_mode_is_a_usage_error(tmp_path):
    result = _run_modes(tmp_path, {"EXPECTED_MODE": "memory", "MADSCI_CACHE_RS": "redis"})
    assert result.returncode == 4, result.stdout + result.stderr
    assert "MADSCI_CACHE_RS='redis'" in result.stderr
