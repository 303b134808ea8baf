"""The exception hierarchy: ours, and the builtins each one stands for;
refused credentials; lock errors that name their lock."""

from __future__ import annotations

import time

import pytest
import redis
from hostile_server import HostileServer

import madsci_cache_rs as m
from madsci_cache_rs.testing import PrivateServer, ServerUnavailable

SECRET = "hunter2-secret"


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (m.CacheError, (Exception,)),
        (m.CacheConnectionError, (m.CacheError, ConnectionError, OSError)),
        (m.CacheTimeoutError, (m.CacheError, TimeoutError, OSError)),
        (m.CacheOutcomeUnknownError, (m.CacheConnectionError, ConnectionError, OSError)),
        (m.CacheAuthenticationError, (m.CacheConnectionError, ConnectionError, OSError)),
        (m.CacheResponseError, (m.CacheError,)),
        (m.PrimitiveError, (m.CacheError,)),
        (m.QuorumNotAchieved, (m.PrimitiveError, RuntimeError)),
        (m.ReleaseUnlockedLock, (m.PrimitiveError, RuntimeError)),
        (m.ExtendUnlockedLock, (m.PrimitiveError, RuntimeError)),
        (m.TooManyExtensions, (m.PrimitiveError, RuntimeError)),
    ],
)
def test_each_error_subclasses_what_it_stands_for(cls, bases):
    for base in bases:
        assert issubclass(cls, base)
    assert cls.__module__ == "madsci_cache_rs"
    with pytest.raises(cls, match="node:1"):
        raise cls("lock 'node:1'")


def test_errors_do_not_shadow_builtins():
    import builtins

    for name in ("ConnectionError", "TimeoutError", "RuntimeError"):
        assert getattr(builtins, name).__module__ == "builtins"
        assert not hasattr(m, name)


def test_lock_errors_are_not_connection_errors():
    assert not issubclass(m.ReleaseUnlockedLock, ConnectionError)
    assert not issubclass(m.CacheConnectionError, RuntimeError)


@pytest.fixture(scope="module", params=["valkey", "redis"])
def secured(request):
    try:
        srv = PrivateServer(request.param, password=SECRET)
    except ServerUnavailable as exc:
        pytest.skip(f"no {request.param} server on this machine: {exc}")
    with srv:
        admin = redis.Redis(host=srv.host, port=srv.port, password=SECRET)
        admin.acl_setuser(
            "bob", enabled=True, passwords=["+bobs-" + SECRET], commands=["+@all"], keys=["*"]
        )
        yield srv
        admin.close()


def refusal(**settings) -> BaseException:
    """What redis-py raises for these settings, to hold ours against."""
    client = redis.Redis(**settings)
    try:
        client.ping()
    except redis.RedisError as exc:
        return exc
    finally:
        client.close()
    raise AssertionError("redis-py connected")


@pytest.mark.parametrize(
    ("username", "password"),
    [(None, "hunter2-wrong"), ("bob", "hunter2-wrong"), ("nobody", "hunter2-wrong"), (None, None)],
)
def test_refused_credentials_are_an_authentication_error_at_once(secured, username, password):
    where = {"host": secured.host, "port": secured.port}
    assert isinstance(
        refusal(**where, username=username, password=password), redis.AuthenticationError
    )
    # The default window would wait 30 s for a server that is down; a
    # refusal is an answer, so it is raised at the first attempt.
    h = m.PyCacheHandler.from_settings(**where, password=password, username=username)
    started = time.monotonic()
    with pytest.raises(m.CacheAuthenticationError) as err:
        h.get("k")
    assert time.monotonic() - started < 2
    text = str(err.value)
    assert f"{secured.host}:{secured.port}" in text
    assert repr(username or "default").replace("'", '"') in text
    assert "hunter2" not in text and "hunter2" not in repr(err.value)
    assert "WRONGPASS" in text or "NOAUTH" in text
    assert isinstance(err.value, m.CacheConnectionError)
    assert h.ping() is False


def test_the_right_user_and_password_log_in(secured):
    h = m.PyCacheHandler.from_settings(
        secured.host, secured.port, password="bobs-" + SECRET, username="bob"
    )
    h.set("bob", "in")
    assert h.get("bob") == "in"
    h.close()


@pytest.mark.parametrize("kind", ["valkey", "redis"])
def test_a_password_for_a_server_without_one_is_accepted_as_redis_py_accepts_it(kind):
    # redis-py 8 logs in with HELLO 3 AUTH default <password>, which a server
    # whose default user has no password accepts; madsci always passes its
    # configured password, so refusing here would break such labs.
    try:
        srv = PrivateServer(kind)
    except ServerUnavailable as exc:
        pytest.skip(f"no {kind} server on this machine: {exc}")
    with srv:
        client = redis.Redis(host=srv.host, port=srv.port, password="unneeded")
        assert client.ping()
        client.close()
        h = m.PyCacheHandler.from_settings(srv.host, srv.port, password="unneeded")
        h.set("k", "v")
        assert h.get("k") == "v"
        h.close()


def test_lock_errors_carry_the_lock_key(handler):
    # pottery's errors have `key` (the stored key, "redlock:" + name) too.
    assert m.PrimitiveError.key is None

    def lock(name: str, **options) -> m.Redlock:
        return m.Redlock(key=name, masters={handler}, **options)

    with pytest.raises(m.ReleaseUnlockedLock) as err:
        lock("node:1").release()
    assert err.value.key == "redlock:node:1"
    assert "redlock:node:1" in str(err.value)
    with pytest.raises(m.ExtendUnlockedLock) as err:
        lock("node:2").extend()
    assert err.value.key == "redlock:node:2"
    once = lock("node:3", num_extensions=0)
    once.acquire()
    with pytest.raises(m.TooManyExtensions) as err:
        once.extend()
    assert err.value.key == "redlock:node:3"
    waiter = lock("node:3", context_manager_timeout=0.05)
    with pytest.raises(m.QuorumNotAchieved) as err, waiter:
        pass
    assert err.value.key == "redlock:node:3"
    once.release()


def test_a_refused_write_carries_the_servers_error_verbatim(handler, raw):
    # Writes go out as scripts (sent at most once); a refusal inside one must
    # read as the plain command's, without the server's "script: ..." suffix.
    raw.set("text", "abc")
    raw.set("plain", "abc")
    with pytest.raises(redis.ResponseError) as plain:
        raw.incr("plain")
    refusals = []
    with pytest.raises(m.CacheResponseError) as err:
        handler.incr("text")
    refusals.append(str(err.value))
    with pytest.raises(m.CacheResponseError) as err:
        handler.create_dict("text")["a"] = 1
    refusals.append(str(err.value))
    with pytest.raises(m.CacheResponseError) as err:
        handler.create_list("text").append(1)
    refusals.append(str(err.value))
    assert refusals[0].endswith(f": ERR {plain.value}"), refusals[0]
    wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value"
    assert [r.endswith(f": {wrongtype}") for r in refusals[1:]] == [True, True], refusals
    assert raw.get("text") == b"abc"


def test_credentials_refused_on_an_ordinary_command_are_an_authentication_error():
    # A server that stops accepting who we are after the connect (its
    # password set or changed meanwhile): as at connect time.
    with HostileServer(b"-NOAUTH Authentication required.\r\n") as server:
        h = m.PyCacheHandler.from_settings("127.0.0.1", server.port, retry_window=0)
        try:
            with pytest.raises(m.CacheAuthenticationError, match="NOAUTH"):
                h.get("a")
        finally:
            h.close()
