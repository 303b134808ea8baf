"""``MADSCI_CACHE_RS_URL``: the server ``from_settings`` connects to, so
managers this package does not construct can be pointed anywhere."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import redis

from madsci_cache_rs import PyCacheHandler
from madsci_cache_rs.testing import PrivateServer, free_port

VAR = "MADSCI_CACHE_RS_URL"
SECRET = "hunter2-secret"


def nowhere() -> PyCacheHandler:
    """What madsci calls, with settings that lead nowhere."""
    return PyCacheHandler.from_settings("127.0.0.1", free_port(), None)


def test_the_variable_wins_over_host_and_port_with_its_query_options(server, raw, monkeypatch):
    monkeypatch.setenv(VAR, f"redis://{server.host}:{server.port}/0?db=2&client_name=env-set")
    h = nowhere()
    h.set("where", "db2")
    assert redis.Redis(host=server.host, port=server.port, db=2).get("where") == b"db2"
    assert raw.get("where") is None
    assert [c["db"] for c in raw.client_list() if c.get("name") == "env-set"] == ["2"]
    h.close()


def test_keyword_options_still_apply_on_top(server, raw, monkeypatch):
    monkeypatch.setenv(VAR, f"redis://{server.host}:{server.port}/?db=2")
    h = PyCacheHandler.from_settings("127.0.0.1", free_port(), None, db=3)
    h.set("where", "db3")
    assert redis.Redis(host=server.host, port=server.port, db=3).get("where") == b"db3"
    h.close()


def test_unset_or_blank_means_host_and_port(server, raw, monkeypatch):
    for value in (None, "  "):
        if value is None:
            monkeypatch.delenv(VAR, raising=False)
        else:
            monkeypatch.setenv(VAR, value)
        h = PyCacheHandler.from_settings(server.host, server.port)
        h.set("k", "v")
        assert raw.get("k") == b"v"
        h.close()


@pytest.fixture(scope="module")
def secured():
    with PrivateServer("valkey", password=SECRET) as srv:
        yield srv


def test_madsci_password_fills_in_for_a_url_without_one(secured, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="madsci_cache_rs")
    monkeypatch.setenv(VAR, f"redis://{secured.host}:{secured.port}/0")
    h = PyCacheHandler.from_settings("127.0.0.1", free_port(), SECRET)
    said = [r.getMessage() for r in caplog.records if VAR in r.getMessage()]
    assert said and all(f"{secured.port}" in m and SECRET not in m for m in said)
    h.set("k", "filled in")
    assert h.get("k") == "filled in"
    assert SECRET not in repr(h)
    h.close()
    # The URL's own password wins over madsci's.
    monkeypatch.setenv(VAR, secured.url)
    h = PyCacheHandler.from_settings("127.0.0.1", free_port(), "hunter2-wrong")
    assert h.get("k") == "filled in"
    h.close()


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis://:hunter2@localhost/0?bogus=1", 'unknown option "bogus"'),
        ("redis://:hunter2@localhost:port/0", "port is not a number"),
        ("http://:hunter2@localhost/0", 'unknown scheme "http"'),
        ("redis://:hunter2@localhost/0?client_name=two+words", "client_name"),
    ],
)
def test_a_bad_url_is_a_value_error_naming_the_variable_not_the_password(monkeypatch, url, named):
    monkeypatch.setenv(VAR, url)
    with pytest.raises(ValueError) as err:
        nowhere()
    text = str(err.value)
    assert named in text
    assert "hunter2" not in text
    if "client_name" not in named:
        assert VAR in text


def test_a_fresh_process_reads_the_variable(server, raw):
    # A madsci manager in another process: it only calls from_settings.
    code = (
        "from madsci_cache_rs import PyCacheHandler\n"
        "PyCacheHandler.from_settings('127.0.0.1', 1, None).set('child', 'db5')\n"
    )
    env = {**os.environ, VAR: f"redis://{server.host}:{server.port}/5"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert redis.Redis(host=server.host, port=server.port, db=5).get("child") == b"db5"
