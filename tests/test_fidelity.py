"""What madsci's in-memory handler does differently from a real server, and
that strict mode does what the server does.

Each case runs on madsci's own ``InMemoryCacheHandler``, on our
``InMemoryCacheHandler(strict=True)`` and on madsci's own ``PyCacheHandler``
(redis-py + pottery) against a private Valkey. The test asserts that strict
memory observes what the server observes, and that madsci's in-memory handler
does not (else the case is no difference, and the README's list is wrong).

``python tests/test_fidelity.py`` prints the Markdown table the README shows.
"""

from __future__ import annotations

import datetime
import threading
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from madsci_cache_rs import InMemoryCacheHandler, _install
from madsci_cache_rs.testing import PrivateServer

madsci_ch = pytest.importorskip("madsci.common.db_handlers.cache_handler")


def _original(name: str) -> Any:
    """madsci's own class, even if a plugin swapped ours in."""
    key = ("madsci.common.db_handlers.cache_handler", name)
    return _install._originals.get(key, getattr(madsci_ch, name))


def observe(call: Callable[[], Any]) -> str:
    try:
        result = call()
    except Exception as exc:  # the kind of error is the observation
        kind = type(exc).__name__
        if kind in {"ResponseError", "CacheResponseError"}:
            return "server error"
        if kind == "DataError":  # redis-py's refusal of an argument type
            return "TypeError"
        if isinstance(exc, RuntimeError) and kind != "RuntimeError":
            return "RuntimeError"  # pottery's lock errors are RuntimeErrors, as ours
        return kind
    return repr(result)


def _aliasing(h: Any) -> Any:
    d = h.create_dict("wf")
    status = {"running": False}
    d["w1"] = status
    status["running"] = True  # the caller keeps changing its own object
    return d["w1"]


def _mutating_a_read(h: Any) -> Any:
    d = h.create_dict("wf")
    d["w1"] = {"running": False}
    d["w1"]["running"] = True  # changes a copy on a server
    return d["w1"]


def _tuple(h: Any) -> Any:
    d = h.create_dict("nodes")
    d["n"] = {"position": (1, 2)}
    return d["n"]


def _datetime(h: Any) -> Any:
    h.create_dict("wf")["w1"] = {"started": datetime.datetime(2026, 1, 1)}
    return h.create_dict("wf").to_dict()


def _set_none(h: Any) -> Any:
    h.set("k", None)
    return h.get("k")


def _set_dict(h: Any) -> Any:
    h.set("k", {"a": 1})
    return h.get("k")


def _incr_text(h: Any) -> Any:
    h.set("k", "x")
    return h.incr("k")


def _in_thread(call: Callable[[], Any], wait: float) -> str:
    """What ``call`` gives in another thread within ``wait`` seconds."""
    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(observe(call)), daemon=True)
    worker.start()
    worker.join(wait)
    return result[0] if result else "still waiting"


def _reacquire(h: Any) -> Any:
    lock = h.create_lock("reacquire", auto_release_time=3)
    return _in_thread(lambda: (lock.acquire(), lock.acquire()), 0.5)


def _locked_by_holder(h: Any) -> Any:
    lock = h.create_lock("held", auto_release_time=5)
    with lock:
        return bool(lock.locked())


def _lease_expiry(h: Any) -> Any:
    lock = h.create_lock("expiring", auto_release_time=0.2)
    lock.acquire()  # and the holder gets stuck past its lease
    other = h.create_lock("expiring", auto_release_time=5)
    seen = _in_thread(other.acquire, 1.0)
    if seen == "still waiting":
        lock.release()  # let the waiter finish
    return seen


def _release_from_another_thread(h: Any) -> Any:
    lock = h.create_lock("handed", auto_release_time=5)
    lock.acquire()
    return _in_thread(lock.release, 5.0)


#: (what a madsci user would write, why it matters, the probe)
CASES: list[tuple[str, str, Callable[[Any], Any]]] = [
    ("d[k] = v, then change v", "a server keeps a copy: later changes to v are not saved",
     _aliasing),
    ("d[k][f] = x", "changes a copy read from a server, never the stored value",
     _mutating_a_read),
    ("store a tuple", "JSON has no tuples: it comes back as a list", _tuple),
    ("store a datetime", "not JSON: the server handler refuses it", _datetime),
    ("set(k, None)", "redis-py refuses None", _set_none),
    ("set(k, {...})", "redis-py refuses a dict", _set_dict),
    ("incr a non-integer", "a server error, not ValueError", _incr_text),
    ("lock.acquire() twice", "pottery's lock is not reentrant: the second waits", _reacquire),
    ("lock.locked() by its holder", "pottery: time left on our lease; madsci: held by another",
     _locked_by_holder),
    ("a holder stuck past its lease", "a lease expires and a waiter takes the lock",
     _lease_expiry),
    ("release from another thread", "pottery's lock belongs to the object, not the thread",
     _release_from_another_thread),
]  # fmt: skip


def observations(server: PrivateServer, probe: Callable[[Any], Any]) -> dict[str, str]:
    server.flushall()
    server_handler = _original("PyCacheHandler").from_settings(host=server.host, port=server.port)
    handlers = {
        "madsci in-memory": _original("InMemoryCacheHandler")(),
        "strict": InMemoryCacheHandler(strict=True),
        "server": server_handler,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pottery's InefficientAccessWarning
        return {name: observe(lambda h=h: probe(h)) for name, h in handlers.items()}


@pytest.mark.parametrize(("case", "why", "probe"), CASES, ids=[c[0] for c in CASES])
def test_strict_catches_what_a_server_does_differently(server, case, why, probe):
    seen = observations(server, probe)
    assert seen["strict"] == seen["server"], seen
    assert seen["madsci in-memory"] != seen["server"], f"{case}: no difference: {seen}"


def markdown_table() -> str:
    lines = [
        "| a madsci user writes | madsci in-memory | strict / a server | why |",
        "|---|---|---|---|",
    ]
    with PrivateServer() as server:
        for case, why, probe in CASES:
            seen = observations(server, probe)
            lines.append(
                f"| `{case}` | `{seen['madsci in-memory']}` | `{seen['server']}` | {why} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
