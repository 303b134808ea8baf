"""In-memory rows: every operation of the in-memory family.

Three groups, each timed alternately in the same rounds:

* ``in-memory``: our default mode against madsci's ``InMemory*`` classes;
* ``strict vs fakeredis``: our strict mode against madsci's ``PyCacheHandler``
  on ``fakeredis`` (today's faithful in-memory choice);
* ``strict vs madsci in-memory``: what strictness costs against madsci's
  plain classes.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from typing import Any

from madsci_cache_rs import InMemoryCacheHandler
from madsci_cache_rs.bench.timing import Row, compare

Op = Callable[[], object]


def _madsci(module: str, name: str) -> Any:
    """madsci's own object, even if ``install()`` swapped ours in."""
    import importlib

    from madsci_cache_rs import _install

    return _install._originals.get((module, name), getattr(importlib.import_module(module), name))


def operations(handler: Any, tag: str) -> dict[str, Op]:
    """The operations, each a zero-argument callable, on fresh structures of ``handler``."""
    counter = itertools.count()
    d = handler.create_dict(f"bench:{tag}:d")
    for i in range(100):
        d[f"key{i}"] = {"value": i, "name": f"n{i}"}
    small = handler.create_dict(f"bench:{tag}:small")
    lst = handler.create_list(f"bench:{tag}:l")
    for i in range(100):
        lst.append(f"wf-{i}")
    scratch = handler.create_list(f"bench:{tag}:scratch")
    batch = {f"u{i}": i for i in range(10)}
    handler.set(f"bench:{tag}:s", "value")
    doc = {"value": 1, "name": "x"}

    def dict_set_del() -> None:
        small["k"] = doc
        del small["k"]

    def list_append_remove() -> None:
        scratch.append("item")
        scratch.remove("item")

    def lock_with() -> None:
        with handler.create_lock(f"bench:{tag}:lock"):
            pass

    lock = handler.create_lock(f"bench:{tag}:held")

    def lock_acquire_release() -> None:
        lock.acquire()
        lock.release()

    def dict_pop() -> None:
        small["p"] = 1
        small.pop("p")

    def dict_popitem() -> None:
        small["q"] = 1
        small.popitem()

    def dict_clear() -> None:
        small["r"] = 1
        small.clear()

    return {
        "set": lambda: handler.set(f"bench:{tag}:s", "value"),
        "get": lambda: handler.get(f"bench:{tag}:s"),
        "incr": lambda: handler.incr(f"bench:{tag}:n"),
        "create_dict": lambda: handler.create_dict(f"bench:{tag}:d"),
        "dict d[k] (100 entries)": lambda: d["key50"],
        "dict d.get(k)": lambda: d.get("key50"),
        "dict k in d": lambda: "key50" in d,
        "dict len(d)": lambda: len(d),
        "dict d[k] = v; del d[k]": dict_set_del,
        "dict update(10 keys)": lambda: small.update(batch),
        # list(): pottery's items() is a lazy view; materialise on every side.
        "dict list(items()) (100 entries)": lambda: list(d.items()),
        "dict to_dict() (100 entries)": lambda: d.to_dict(),
        "dict iterate (100 entries)": lambda: list(d),
        "dict keys() (100 entries)": lambda: list(d.keys()),
        "dict values() (100 entries)": lambda: list(d.values()),
        "dict setdefault (present)": lambda: d.setdefault("key50", None),
        "dict d[k] = v; pop(k)": dict_pop,
        "dict d[k] = v; popitem()": dict_popitem,
        "dict d[k] = v; clear()": dict_clear,
        "list append + remove": list_append_remove,
        "list len": lambda: len(lst),
        "list iterate (100 items)": lambda: list(lst),
        "list x in lst (100 items, last)": lambda: "wf-99" in lst,
        "lock: with create_lock(k): pass": lock_with,
        "lock: acquire(); release()": lock_acquire_release,
        "lock: locked()": lambda: lock.locked(),
        "counter": lambda: next(counter),
    }


def _pairs(
    group: str,
    ours: dict[str, Op],
    reference: dict[str, Op],
    reference_name: str,
    rounds: int,
) -> list[Row]:
    out = []
    for name, op in ours.items():
        if name == "counter" or name not in reference:
            continue
        ours_s, ref_s = compare(op, reference[name], rounds=rounds, target_s=0.01)
        out.append(Row(group, name, ours_s, ref_s, reference_name))
    return out


def rows(rounds: int = 15) -> list[Row]:
    warnings.simplefilter("ignore")  # pottery's InefficientAccessWarning on every list op
    madsci_inmemory = _madsci("madsci.common.db_handlers.cache_handler", "InMemoryCacheHandler")
    madsci_server = _madsci("madsci.common.db_handlers.cache_handler", "PyCacheHandler")
    ours_default = operations(InMemoryCacheHandler(), "ours")
    theirs_default = operations(madsci_inmemory(), "madsci")
    out = _pairs("in-memory", ours_default, theirs_default, "madsci InMemoryCacheHandler", rounds)

    strict = operations(InMemoryCacheHandler(strict=True), "strict")
    try:
        import fakeredis
    except ImportError:
        fake = {}
    else:
        fake = operations(madsci_server(fakeredis.FakeRedis(decode_responses=True)), "fake")
        for name in [n for n in fake if n.startswith("lock:")]:
            try:
                fake[name]()
            except Exception:  # fakeredis without lupa cannot run pottery's scripts
                del fake[name]
    out += _pairs("strict vs fakeredis", strict, fake, "madsci PyCacheHandler on fakeredis", rounds)
    out += _pairs(
        "strict vs madsci in-memory", strict, theirs_default, "madsci InMemoryCacheHandler", rounds
    )
    return out
