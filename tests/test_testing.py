"""``madsci_cache_rs.testing``: the private server's own plain-socket commands."""

from __future__ import annotations

import pytest

from madsci_cache_rs.testing import PrivateServer, ServerUnavailable, _split_replies


def test_replies_split_across_chunks_are_kept():
    first, rest = _split_replies(b"+OK\r\n$3\r\nab")
    assert (first, rest) == ([b"+OK"], b"$3\r\nab")
    second, rest = _split_replies(rest + b"c\r\n$-1\r\n-ERR x\r\n")
    assert (second, rest) == ([b"$3\r\nabc", b"$-1", b"-ERR x"], b"")


@pytest.mark.parametrize("password", [None, "s3cret"])
def test_flushall_and_info_with_and_without_a_password(password):
    try:
        server = PrivateServer(password=password)
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        server._command("SET", "k", "v")
        assert server._command("GET", "k") == b"$1\r\nv"
        server.flushall()
        assert server._command("GET", "k") == b"$-1"
        assert int(server.info("stats")["total_commands_processed"]) >= 3
        with pytest.raises(RuntimeError) as failed:
            server._command("INCR")  # wrong number of arguments
        assert "s3cret" not in str(failed.value)
