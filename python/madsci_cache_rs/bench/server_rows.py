"""Server rows: ours against madsci's PyCacheHandler (redis-py + pottery) on
the same server, with round trips per operation beside the times.

``rows(url, repeat)`` returns plain dicts whose keys are ``Row``'s fields.
Round trips are counted as client writes through a loopback proxy (both
clients wait for each reply before writing again, so one write is one
round trip); times are taken directly, without the proxy.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from madsci_cache_rs import PyCacheHandler
from madsci_cache_rs.bench.roundtrips import WriteCounter
from madsci_cache_rs.bench.timing import compare

ENTRIES = 100
#: Rows with no client library on one side: what the loopback itself costs.
FLOOR = "loopback floor (raw sockets, no client library)"


STATUS = {"ready": True, "busy": False, "paused": False, "errored": False, "step": 3, "note": ""}


def _status_model() -> Any:
    """A six-field model like madsci's WorkcellStatus (built lazily: pydantic
    is the reference's dependency, not ours)."""
    import pydantic

    fields = {name: (type(value), value) for name, value in STATUS.items()}
    return pydantic.create_model("Status", **fields)  # type: ignore[call-overload]


def _record(i: int) -> dict[str, object]:
    return {"name": f"node_{i}", "status": {"ready": i % 2 == 0, "step": i}, "tags": ["a", i]}


def _plain_socket(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _raw_ping(host: str, port: int) -> Callable[[], object]:
    """The loopback floor: one PING on a plain socket, no client library."""
    sock = _plain_socket(host, port)

    def ping() -> bytes:
        sock.sendall(b"PING\r\n")
        return sock.recv(64)

    return ping


def _polling(host: str, port: int, request: bytes = b"PING\r\n") -> Callable[[], object]:
    """The floor for a client that polls for its reply instead of sleeping
    (as ours does for up to ``spin_wait``): it skips the client's wake-up.
    ``request`` must have a reply that fits one read."""
    sock = _plain_socket(host, port)
    sock.setblocking(False)

    def send() -> bytes:
        sock.sendall(request)
        while True:
            try:
                return sock.recv(64)
            except BlockingIOError:
                pass

    return send


#: (group, operation, build the timed call from a handler)
Case = tuple[str, str, Callable[[Any], Callable[[], object]]]


def seed(handler: Any) -> None:
    """Write the keys the cases read, through ``handler`` (ours)."""
    handler.set("bench:k", "value")
    handler.set("bench:n", 0)
    handler.create_dict("bench:dict").clear()
    handler.create_list("bench:list").clear()
    handler.create_dict("bench:dict").update({f"key_{i}": _record(i) for i in range(ENTRIES)})
    handler.create_dict("bench:status").update(STATUS)
    handler.create_list("bench:list").extend(_record(i) for i in range(ENTRIES))


def _absent_remove(lst: Any) -> Callable[[], object]:
    def op() -> None:
        try:
            lst.remove("absent")
        except ValueError:
            pass

    return op


def cases() -> list[Case]:
    """The single operations and the dict and list reads and writes, as
    builders that work on ours and on madsci's handler alike."""
    status = _status_model()
    last = _record(ENTRIES - 1)
    return [
        ("server", "get", lambda h: lambda: h.get("bench:k")),
        ("server", "set", lambda h: lambda: h.set("bench:k", "value")),
        ("server", "incr", lambda h: lambda: h.incr("bench:n")),
        ("dict", f"to_dict ({ENTRIES} entries)", lambda h: h.create_dict("bench:dict").to_dict),
        (
            "dict",
            f"items ({ENTRIES} entries)",
            lambda h: lambda: list(h.create_dict("bench:dict").items()),
        ),
        (
            "dict",
            "update (10 keys)",
            lambda h: (
                lambda: h.create_dict("bench:dict").update(
                    {f"key_{i}": _record(i) for i in range(10)}
                )
            ),
        ),
        ("dict", "getitem", lambda h: lambda: h.create_dict("bench:dict")["key_7"]),
        (
            "dict",
            "pydantic model_validate (6 fields)",
            lambda h: lambda: status.model_validate(h.create_dict("bench:status")),
        ),
        (
            "list",
            f"iterate ({ENTRIES} items)",
            lambda h: lambda: [x for x in h.create_list("bench:list")],
        ),
        (
            "list",
            f"in, last item ({ENTRIES} items)",
            lambda h: lambda: last in h.create_list("bench:list"),
        ),
        (
            "list",
            f"remove, absent value ({ENTRIES} items)",
            lambda h: _absent_remove(h.create_list("bench:list")),
        ),
    ]


def rows(url: str, repeat: int = 15) -> list[dict[str, object]]:
    from madsci.common.db_handlers.cache_handler import (  # type: ignore[import-untyped]
        PyCacheHandler as Reference,
    )

    warnings.filterwarnings("ignore", module="pottery")
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    ours = PyCacheHandler.from_url(url)
    ref = Reference.from_settings(host=host, port=port, password=parsed.password)
    counter = WriteCounter(host, port)
    ours_counted = PyCacheHandler.from_settings("127.0.0.1", counter.port)
    ref_counted = Reference.from_settings(host="127.0.0.1", port=counter.port)
    raw_ping = _raw_ping(host, port)
    polling_ping = _polling(host, port)
    seed(ours)

    out: list[dict[str, object]] = []
    ping_ours, ping_ref = compare(raw_ping, lambda: ref._client.ping(), rounds=repeat)
    out.append(
        {
            "group": FLOOR,
            "operation": "PING on a raw socket vs redis-py's PING",
            "ours_s": ping_ours,
            "reference_s": ping_ref,
            "reference_name": "redis-py PING",
            "ours_round_trips": 1,
            "reference_round_trips": 1,
            "notes": "",
        }
    )
    polled, blocked = compare(polling_ping, raw_ping, rounds=repeat)
    out.append(
        {
            "group": FLOOR,
            "operation": "PING on a raw socket, polling for the reply",
            "ours_s": polled,
            "reference_s": blocked,
            "reference_name": "the same PING, sleeping in recv",
            "ours_round_trips": 1,
            "reference_round_trips": 1,
            "notes": "what a client saves by not sleeping",
        }
    )
    # Exactly-once writes (README, "Riding out faults"): each write is a script
    # that also looks up and keeps its token's record. Against the same write
    # sent plain on a polling raw socket: our client and the once-form together.
    plain_incr = _polling(host, port, b"*3\r\n$6\r\nINCRBY\r\n$7\r\nbench:m\r\n$1\r\n1\r\n")
    field = b'"key_1"'
    plain_hset = _polling(
        host,
        port,
        b"*4\r\n$4\r\nHSET\r\n$9\r\nbench:one\r\n$%d\r\n%s\r\n$1\r\n1\r\n" % (len(field), field),
    )
    one = ours.create_dict("bench:one")
    for once_name, once_op, plain in (
        ("exactly-once incr vs a plain INCRBY", lambda: ours.incr("bench:n"), plain_incr),
        (
            "exactly-once update (1 key) vs a plain HSET",
            lambda: one.update({"key_1": 1}),
            plain_hset,
        ),
    ):
        ours_s, ref_s = compare(once_op, plain, rounds=repeat)
        out.append(
            {
                "group": FLOOR,
                "operation": once_name,
                "ours_s": ours_s,
                "reference_s": ref_s,
                "reference_name": "the plain command on a raw socket, polling",
                "ours_round_trips": 1,
                "reference_round_trips": 1,
                "notes": f"the once-form costs {(ours_s - ref_s) * 1e6:.1f} us more",
            }
        )
    for group, name, build in cases():
        op_ours, op_ref = build(ours), build(ref)
        ours_s, ref_s = compare(op_ours, op_ref, rounds=repeat)
        notes = ""
        extra: dict[str, float] = {}
        if group == "server":
            # Against both floors, timed in the same rounds.
            mine, floor = compare(op_ours, raw_ping, rounds=repeat)
            mine_p, floor_p = compare(op_ours, polling_ping, rounds=repeat)
            extra = {"vs_raw_ping": mine / floor, "vs_polling_ping": mine_p / floor_p}
            notes = (
                f"ours takes {mine / floor:.2f}x a raw-socket PING, "
                f"{mine_p / floor_p:.2f}x a polling one"
            )
        out.append(
            {
                "group": group,
                "operation": name,
                "ours_s": ours_s,
                "reference_s": ref_s,
                "reference_name": "madsci PyCacheHandler (redis-py + pottery)",
                "ours_round_trips": counter.count(build(ours_counted)),
                "reference_round_trips": counter.count(build(ref_counted)),
                "notes": notes,
                "extra": extra,
            }
        )
    counter.close()
    ours.close()
    return out
