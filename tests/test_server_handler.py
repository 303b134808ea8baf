"""PyCacheHandler on a real server: get/set/incr/ping/close, construction,
what `set` accepts (redis-py's rules), errors and passwords."""

from __future__ import annotations

import contextlib
import enum
import logging
import pickle
import socket
import subprocess
import time
from urllib.parse import quote

import pytest
import redis
import redis.connection
from helpers import data_keys
from hypothesis import given, settings
from hypothesis import strategies as st

from madsci_cache_rs import (
    CacheAuthenticationError,
    CacheConnectionError,
    CacheError,
    CacheResponseError,
    PyCacheHandler,
)
from madsci_cache_rs.testing import PrivateServer, find_server_binary, free_port


class Color(enum.IntEnum):
    RED = 1


class Mode(str, enum.Enum):
    FAST = "fast"


# Everything redis-py's encoder might see: it accepts bytes-likes, str, int
# and float (as repr) and refuses the rest with DataError.
ARGUMENTS = [
    "text",
    "é\u2603",
    "",
    b"\x00\xffbytes",
    bytearray(b"ba"),
    memoryview(b"mv"),
    0,
    -17,
    10**30,
    1.5,
    -0.0,
    1e16,
    float("nan"),
    float("inf"),
    Color.RED,
    Mode.FAST,
    True,
    False,
    None,
    {},
    [1],
    (1,),
    object(),
]


def _id(value: object) -> str:
    return f"{type(value).__name__}:{value!r}"[:40]


def test_get_set_incr_round_trip(handler, raw):
    assert handler.get("k") is None
    assert handler.set("k", "v") is None
    assert handler.get("k") == "v"
    assert raw.get("k") == b"v"
    assert handler.incr("n") == 1
    assert handler.incr("n", 5) == 6
    assert handler.incr("n", -10) == -4
    assert raw.get("n") == b"-4"
    raw.set("u", "é☃".encode())
    assert handler.get("u") == "é☃"
    assert isinstance(handler.get("u"), str)


@pytest.mark.parametrize("value", ARGUMENTS, ids=_id)
def test_set_stores_what_redis_py_stores_and_refuses_what_it_refuses(handler, raw, value):
    try:
        raw.set("ref", value)
    except redis.DataError:
        with pytest.raises(TypeError, match="Invalid input of type"):
            handler.set("ours", value)
        assert raw.exists("ours") == 0
        return
    handler.set("ours", value)
    assert raw.get("ours") == raw.get("ref")


@pytest.mark.parametrize("key", ARGUMENTS, ids=_id)
def test_keys_follow_redis_py_rules_too(handler, raw, key):
    try:
        raw.set(key, "ref")
        expected = raw.keys()
    except redis.DataError:
        with pytest.raises(TypeError):
            handler.set(key, "ours")
        with pytest.raises(TypeError):
            handler.get(key)
        return
    raw.flushall()
    handler.set(key, "ours")
    assert data_keys(raw) == expected
    assert handler.get(key) == "ours"


def test_a_lone_surrogate_is_refused_like_redis_py(handler, raw):
    with pytest.raises(UnicodeEncodeError):
        raw.set("k", "\ud800")
    with pytest.raises(UnicodeEncodeError):
        handler.set("k", "\ud800")
    assert raw.exists("k") == 0


def test_get_of_invalid_utf8_raises_like_decode_responses(handler, raw):
    raw.set("k", b"\xff")
    with pytest.raises(UnicodeDecodeError):
        handler.get("k")


def test_incr_of_a_non_integer_is_a_response_error_naming_key_and_server(handler, raw, server):
    raw.set("word", "abc")
    with pytest.raises(CacheResponseError) as err:
        handler.incr("word")
    assert "word" in str(err.value)
    assert f"{server.host}:{server.port}" in str(err.value)
    assert raw.get("word") == b"abc"
    with pytest.raises(CacheResponseError):
        handler.incr("n", 1.5)  # the server refuses a float amount, as with redis-py
    with pytest.raises(TypeError):
        handler.incr("n", True)
    assert raw.exists("n") == 0


def test_a_key_holding_another_type(handler, raw):
    raw.rpush("lst", "1")
    with pytest.raises(CacheResponseError, match="WRONGTYPE"):
        handler.get("lst")
    with pytest.raises(CacheResponseError, match="WRONGTYPE"):
        handler.incr("lst")
    handler.set("lst", "now a string")  # SET replaces any type, as in redis-py
    assert raw.get("lst") == b"now a string"


def test_ping_and_close(handler):
    assert handler.ping() is True
    handler.close()
    handler.close()  # idempotent
    assert handler.ping() is True  # and the handler reconnects, like redis-py's
    handler.set("k", 1)
    assert handler.get("k") == "1"


def test_construction_never_touches_the_network():
    port = free_port()  # nothing listens here
    h = PyCacheHandler.from_settings("127.0.0.1", port)
    PyCacheHandler.from_url(f"redis://127.0.0.1:{port}/0")
    PyCacheHandler(redis.Redis(host="127.0.0.1", port=port))
    h.create_dict("d")
    h.create_list("l")
    assert h.ping() is False


def test_unreachable_server():
    port = free_port()
    # No window: an unreachable server is reported at once, not waited for.
    h = PyCacheHandler.from_settings("127.0.0.1", port, socket_connect_timeout=1.0, retry_window=0)
    assert h.ping() is False
    for op in (
        lambda: h.get("k"),
        lambda: h.set("k", 1),
        lambda: h.incr("k"),
        lambda: h.create_dict("d")["x"],
        lambda: len(h.create_list("l")),
    ):
        with pytest.raises(CacheConnectionError) as err:
            op()
        assert f"127.0.0.1:{port}" in str(err.value)
        assert isinstance(err.value, ConnectionError)


def test_options_select_the_database(server, raw):
    h = PyCacheHandler.from_settings(server.host, server.port, db=3)
    h.set("k", "three")
    assert raw.get("k") is None
    assert redis.Redis(host=server.host, port=server.port, db=3).get("k") == b"three"
    h2 = PyCacheHandler.from_url(f"redis://{server.host}:{server.port}/4")
    h2.set("k", "four")
    assert redis.Redis(host=server.host, port=server.port, db=4).get("k") == b"four"
    with pytest.raises(TypeError, match="unexpected option"):
        PyCacheHandler.from_settings(server.host, server.port, dbb=1)


def test_a_redis_py_client_is_read_for_its_settings(server, raw):
    client = redis.Redis(host=server.host, port=server.port, db=5, decode_responses=True)
    h = PyCacheHandler(client)
    h.set("k", "v")
    assert client.get("k") == "v"
    assert raw.get("k") is None
    url_handler = PyCacheHandler(server.url)
    assert url_handler.get("k") is None
    with pytest.raises(TypeError):
        PyCacheHandler(42)


def test_rediss_never_shows_the_password():
    h = PyCacheHandler.from_url(f"rediss://user:hunter2@127.0.0.1:{free_port()}/0", retry_window=0)
    assert "hunter2" not in repr(h) and h.url.startswith("rediss://user@")
    with pytest.raises(CacheConnectionError) as err:
        h.get("k")
    assert "hunter2" not in str(err.value)


def test_bad_urls_do_not_show_the_password():
    with pytest.raises(ValueError) as err:
        PyCacheHandler.from_url("redis://user:hunter2@127.0.0.1:notaport/0")
    assert "hunter2" not in str(err.value)


# Every run of non-separator characters in a generated password holds a
# "Zq" marker, so a leak of any fragment of it shows in the text.
SEPARATORS = "#/?@:%[] &+=é密\U0001f600"


def marked_password(separators: list[str]) -> str:
    return "".join(f"Zq{i}x{sep}" for i, sep in enumerate(separators)) + "Zqend"


def leaks(text: str) -> bool:
    return "Zq" in text or "zq" in text


@settings(max_examples=60, deadline=None)
@given(
    separators=st.lists(st.sampled_from(SEPARATORS), min_size=1, max_size=4),
    encoded=st.booleans(),
    username=st.sampled_from(["", "bob"]),
)
def test_a_password_never_shows_whatever_it_holds(separators, encoded, username):
    password = marked_password(separators)
    secret = quote(password, safe="") if encoded else password
    userinfo = f"{username}:{secret}@"
    port = free_port()
    for bad in (
        f"redis://{userinfo}127.0.0.1:notaport/0",
        f"redis://{userinfo}127.0.0.1:99999/0",
        f"foo://{userinfo}127.0.0.1:{port}/0",
        f"redis://{userinfo}127.0.0.1:{port}/x",
        f"redis://{userinfo}127.0.0.1:{port}/0?bogus=1",
        f"redis://{userinfo}127.0.0.1:{port}/0?max_connections=0",
        f"redis://127.0.0.1:{port}/0?password={quote(password, safe='')}&bogus=1",
    ):
        with pytest.raises(ValueError) as err:
            PyCacheHandler.from_url(bad)
        assert not leaks(str(err.value)), str(err.value)
    url = f"redis://{userinfo}127.0.0.1:{port}/0"
    try:
        h = PyCacheHandler.from_url(url, retry_window=0)
    except ValueError as err:
        # Refused only where redis-py cannot parse it either.
        assert not leaks(str(err)), str(err)
        assert not encoded and set(separators) & set("#/?"), str(err)
        return
    if encoded:
        assert redis.connection.parse_url(url)["password"] == password
    for text in (repr(h), h.url):
        assert not leaks(text), text
    with pytest.raises(CacheConnectionError) as conn_err:
        h.get("k")
    assert not leaks(str(conn_err.value)), str(conn_err.value)
    assert h.ping() is False


@pytest.mark.parametrize("password", ["p#w/x?y@z", "a:b%41 [c]", "密码 é"])
def test_a_percent_encoded_password_logs_in_and_is_never_shown(secured, caplog, password):
    admin = redis.Redis(host=secured.host, port=secured.port, password="hunter2-secret")
    admin.acl_setuser(
        "carol", enabled=True, passwords=[f"+{password}"], commands=["+@all"], keys=["*"]
    )
    caplog.set_level(logging.DEBUG, logger="madsci_cache_rs")
    try:
        url = f"redis://carol:{quote(password, safe='')}@{secured.host}:{secured.port}/0"
        h = PyCacheHandler.from_url(url)
        h.set("carol", "in")
        assert admin.get("carol") == b"in"
        texts = [repr(h), h.url, *(r.getMessage() for r in caplog.records)]
        assert all(password not in t and quote(password, safe="") not in t for t in texts)
    finally:
        admin.acl_deluser("carol")
        admin.close()


@pytest.fixture(scope="module")
def secured():
    with PrivateServer("valkey", password="hunter2-secret") as srv:
        yield srv


def test_password_is_used_and_never_shown(secured):
    h = PyCacheHandler.from_settings(secured.host, secured.port, password="hunter2-secret")
    h.set("k", "v")
    assert h.get("k") == "v"
    for text in (repr(h), h.url, str(PyCacheHandler.from_url(secured.url))):
        assert "hunter2" not in text
    wrong = PyCacheHandler.from_settings(secured.host, secured.port, password="hunter2-wrong")
    with pytest.raises(CacheError) as err:
        wrong.get("k")
    assert "hunter2" not in str(err.value)
    assert wrong.ping() is False
    unauth = PyCacheHandler.from_settings(secured.host, secured.port)
    with pytest.raises(CacheAuthenticationError, match="NOAUTH"):
        unauth.get("k")
    via_client = PyCacheHandler(
        redis.Redis(host=secured.host, port=secured.port, password="hunter2-secret")
    )
    assert via_client.get("k") == "v"
    assert "hunter2" not in repr(via_client)
    dead = PyCacheHandler.from_url(
        f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0", retry_window=0
    )
    with pytest.raises(CacheConnectionError) as err:
        dead.get("k")
    assert "hunter2" not in str(err.value)


def test_handlers_are_not_picklable_and_have_a_repr(handler, server):
    assert repr(handler) == f'PyCacheHandler("redis://{server.host}:{server.port}/0")'
    with pytest.raises(TypeError):
        pickle.dumps(handler)


def test_unix_socket_urls(tmp_path):
    path = tmp_path / "valkey.sock"
    proc = subprocess.Popen(
        [find_server_binary("valkey"), "--port", "0", "--unixsocket", str(path),
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        h = PyCacheHandler.from_url(f"unix://{path}?db=2")
        for _ in range(1000):  # wait for the socket to accept (no timing assertion)
            if h.ping() or proc.poll() is not None:
                break
            time.sleep(0.01)
        h.set("k", "v")
        assert h.get("k") == "v"
        assert redis.Redis(unix_socket_path=str(path), db=2).get("k") == b"v"
        assert PyCacheHandler(redis.Redis(unix_socket_path=str(path), db=2)).get("k") == "v"
        assert h.url == f"unix://{path}?db=2"
    finally:
        proc.kill()
        proc.wait()


def test_a_host_that_never_answers_fails_after_one_connect_timeout():
    """A listener whose backlog is full drops SYNs: connecting hangs. The
    connect timeout is not multiplied by retries, and it is reported as a
    connection error (the server is unreachable)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    try:
        probe = socket.socket()
        probe.settimeout(0.2)
        try:
            probe.connect(("127.0.0.1", port))
        except (TimeoutError, OSError):
            pass
        else:
            pytest.skip("this kernel accepts connections beyond a full backlog")
        finally:
            probe.close()
        h = PyCacheHandler.from_settings(
            "127.0.0.1", port, socket_connect_timeout=0.2, retry_window=0
        )
        with pytest.raises(CacheConnectionError, match=r"could not connect: timed out after 0.2 s"):
            h.get("k")
        assert h.ping() is False
    finally:
        for s in [*fillers, listener]:
            s.close()


def test_acl_users_log_in_with_username_and_password(secured):
    admin = redis.Redis(host=secured.host, port=secured.port, password="hunter2-secret")
    admin.acl_setuser(
        "alice", enabled=True, passwords=["+wonderland-9"], keys=["*"], commands=["+@all"]
    )
    try:
        h = PyCacheHandler.from_settings(
            secured.host, secured.port, password="wonderland-9", username="alice"
        )
        h.set("acl", "yes")
        assert admin.get("acl") == b"yes"
        url = PyCacheHandler.from_url(f"redis://alice:wonderland-9@{secured.host}:{secured.port}/0")
        assert url.get("acl") == "yes"
        assert "wonderland" not in repr(url) and "alice" in repr(url)
        wrong = PyCacheHandler.from_settings(
            secured.host, secured.port, password="wonderland-0", username="alice"
        )
        with pytest.raises(CacheAuthenticationError) as err:
            wrong.get("acl")
        assert "wonderland" not in str(err.value) and '"alice"' in str(err.value)
    finally:
        admin.acl_deluser("alice")


def own_connections(raw: redis.Redis, name: str) -> list[dict]:
    return [c for c in raw.client_list() if c.get("name") == name]


def test_connections_carry_the_client_name_and_the_library(server, raw):
    import madsci_cache_rs

    h = PyCacheHandler.from_url(server.url, client_name="node-7")
    assert h.ping()
    (conn,) = own_connections(raw, "node-7")
    version = raw.info("server").get("valkey_version") or raw.info("server")["redis_version"]
    if server.kind == "valkey" or tuple(map(int, version.split(".")[:2])) >= (7, 2):
        assert conn["lib-name"] == "madsci-cache-rs"
        assert conn["lib-ver"] == madsci_cache_rs.__version__
    else:
        # Redis 7.0 does not know CLIENT SETINFO: the connection works anyway.
        assert not conn.get("lib-name")
    h.set("k", "v")
    assert h.get("k") == "v"
    h.close()


def test_a_client_name_comes_from_a_url_or_a_redis_py_client(server, raw):
    by_url = PyCacheHandler.from_url(server.url.replace("/0", "/0?client_name=by-url"))
    by_url.ping()
    assert len(own_connections(raw, "by-url")) == 1
    copied = PyCacheHandler(
        redis.Redis(host=server.host, port=server.port, client_name="by-redis-py")
    )
    copied.ping()
    assert len(own_connections(raw, "by-redis-py")) == 1
    by_settings = PyCacheHandler.from_settings(server.host, server.port, client_name="by-kw")
    by_settings.ping()
    assert len(own_connections(raw, "by-kw")) == 1
    for h in (by_url, copied, by_settings):
        h.close()


@pytest.mark.parametrize("name", ["two words", "line\nbreak", "caf\u00e9"])
def test_a_client_name_the_server_would_refuse_is_a_value_error_at_once(name):
    with pytest.raises(ValueError, match="client_name"):
        PyCacheHandler.from_settings("localhost", free_port(), client_name=name)
