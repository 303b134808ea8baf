"""A minimal RESP2 client on a plain socket, so the test topologies need no
client library (the tests use redis-py only as an independent observer)."""

from __future__ import annotations

import socket
from typing import Any

Arg = str | bytes | int


class ReplyError(RuntimeError):
    """The server answered with an error reply; the message is the server's only
    (never the request, which may hold a password)."""


def encode_command(args: list[Arg] | list[str]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def split_replies(data: bytes) -> tuple[list[bytes], bytes]:
    """Complete simple/error/bulk replies at the front of ``data``, and the rest."""
    replies = []
    while b"\r\n" in data:
        head, rest = data.split(b"\r\n", 1)
        if head.startswith(b"$"):
            size = int(head[1:])
            if size < 0:
                replies.append(head)
                data = rest
                continue
            if len(rest) < size + 2:
                break
            replies.append(head + b"\r\n" + rest[:size])
            data = rest[size + 2 :]
        else:
            replies.append(head)
            data = rest
    return replies, data


class RespConnection:
    """One connection; ``call`` sends a command and returns its reply decoded:
    simple strings as ``str``, bulk strings as ``bytes``, integers as ``int``,
    arrays as lists, nil as ``None``. An error reply raises ``ReplyError``
    (nested in an array it is returned as a ``ReplyError`` value)."""

    def __init__(
        self, host: str, port: int, *, password: str | None = None, timeout: float = 10.0
    ) -> None:
        self.address = f"{host}:{port}"
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._reader = self._sock.makefile("rb")
        if password:
            self.call("AUTH", password)

    def call(self, *args: Arg) -> Any:
        self._sock.sendall(encode_command(list(args)))
        reply = self._read()
        if isinstance(reply, ReplyError):
            name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
            raise ReplyError(f"{name} on {self.address} failed: {reply}")
        return reply

    def _read(self) -> Any:
        line = self._reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError(f"{self.address} closed the connection")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode()
        if kind == b"-":
            return ReplyError(body.decode(errors="replace"))
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            return None if size < 0 else self._reader.read(size + 2)[:-2]
        if kind == b"*":
            size = int(body)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise ConnectionError(f"{self.address} sent an unexpected reply type {line[:20]!r}")

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def __enter__(self) -> RespConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def text(value: Any) -> str:
    """A bulk or simple string reply as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def pairs(reply: list[Any]) -> dict[str, str]:
    """A flat ``[field, value, field, value, ...]`` reply (RESP2's maps) as text."""
    return {text(reply[i]): text(reply[i + 1]) for i in range(0, len(reply) - 1, 2)}
