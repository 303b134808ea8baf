"""Replies from a broken or hostile server (SPEC section 12): every one is an
ordinary error of ours, never an abort, a panic or a stack overflow.

The client runs in a child process, so a crash is a failing exit code
rather than the end of the test run; the server (``hostile_server.py``)
runs here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from hostile_server import HostileServer

from madsci_cache_rs import CacheConnectionError, CacheResponseError, PyCacheHandler

# One GET from a child process: it prints the class of what was raised.
CHILD = """
import sys
from madsci_cache_rs import PyCacheHandler
{setup}
h = PyCacheHandler.from_settings("127.0.0.1", {port}, **{options!r})
try:
    h.get("k")
except Exception as e:
    print(type(e).__name__)
    print(e)
else:
    print("no error")
"""

# Children wait at most this long; a client that waits for bytes that never
# come is a failure too.
CHILD_TIMEOUT = 60


def child_get(
    port: int, options: dict[str, object] | None = None, setup: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MADSCI_CACHE_RS")}
    code = CHILD.format(port=port, options=options or {}, setup=textwrap.dedent(setup))
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )


def assert_raised(proc: subprocess.CompletedProcess[str], cls: type[Exception]) -> None:
    detail = f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr[-2000:]}"
    assert proc.returncode == 0, detail
    assert proc.stdout.splitlines()[0] == cls.__name__, detail


MALFORMED = {
    "64 GiB bulk length": b"$68719476736\r\n",
    "i64::MAX bulk length": b"$9223372036854775807\r\n",
    "negative bulk length": b"$-2\r\n",
    "i64::MIN bulk length": b"$-9223372036854775808\r\n",
    "64 GiB verbatim length": b"=68719476736\r\n",
    "negative array count": b"*-5\r\n",
    "huge array count": b"*9223372036854775807\r\n",
    "huge map count": b"%4611686018427387904\r\n",
    "300,000 nested arrays": b"*1\r\n" * 300_000 + b":1\r\n",
    "garbage type byte": b"?garbage\r\n",
    "malformed integer": b":12x\r\n",
}


@pytest.mark.parametrize("reply", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_reply_is_a_response_error(reply: bytes) -> None:
    with HostileServer(reply) as server:
        # Default options: the error comes at once, not after a retry window.
        assert_raised(child_get(server.port), CacheResponseError)


@pytest.mark.parametrize(
    "reply",
    [MALFORMED["64 GiB bulk length"], MALFORMED["300,000 nested arrays"]],
    ids=["64 GiB bulk length", "300,000 nested arrays"],
)
def test_a_malformed_reply_on_the_client_cache_connection(reply: bytes) -> None:
    with HostileServer(reply) as server:
        assert_raised(child_get(server.port, {"client_cache": True}), CacheResponseError)


CUT = {
    "cut mid-string": b"$10\r\nabc",
    "cut mid-line": b"$10",
    "cut mid-array": b"*3\r\n$1\r\na\r\n",
}


@pytest.mark.parametrize("reply", CUT.values(), ids=CUT.keys())
def test_a_reply_cut_by_a_close_is_a_connection_error(reply: bytes) -> None:
    with HostileServer(reply, close=True) as server:
        assert_raised(child_get(server.port, {"retry_window": 0}), CacheConnectionError)


def test_an_announced_length_is_not_allocated_up_front() -> None:
    # 512 MiB announced (the server's own limit, so not malformed), 1 KiB
    # sent, then a close; the child may map only 256 MiB more than it has.
    setup = """
        import resource
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) for l in f if l.startswith("VmSize:")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), vm + (256 << 20)))
    """
    with HostileServer(b"$536870912\r\n" + b"x" * 1024, close=True) as server:
        proc = child_get(server.port, {"retry_window": 0}, setup)
    assert_raised(proc, CacheConnectionError)


def test_a_connection_that_saw_a_malformed_reply_is_not_used_again() -> None:
    with HostileServer(b"?garbage\r\n", b"$-1\r\n") as server:
        h = PyCacheHandler.from_settings("127.0.0.1", server.port, retry_window=0)
        try:
            with pytest.raises(CacheResponseError, match="protocol error"):
                h.get("a")
            assert h.get("b") is None
            assert server.connections == 2
        finally:
            h.close()
