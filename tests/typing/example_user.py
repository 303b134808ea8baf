# pyright: strict
"""A typed user of madsci-cache-rs, written as a madsci manager uses a cache.

tests/test_typing.py checks this file with ``mypy --strict`` and pyright
(strict, from the comment above) and expects no error; it also runs
``exercise()`` on each handler, so what the checkers accept here is what the
objects do at run time.
"""

from __future__ import annotations

from collections.abc import MutableMapping, MutableSequence
from contextlib import AbstractContextManager
from typing import Any

from madsci_cache_rs import (
    CacheAuthenticationError,
    CacheConnectionError,
    CacheError,
    InMemoryRedisClient,
    RedisDict,
    RedisList,
    StrictRedisDict,
    StrictRedisList,
)
from madsci_cache_rs.cache_handler import CacheHandler, InMemoryCacheHandler, PyCacheHandler
from madsci_cache_rs.handler_modes import StrictInMemoryCacheHandler
from madsci_cache_rs.inmemory_redis import InMemoryRedisDict, InMemoryRedisList


class StateHandler:
    """Holds a ``CacheHandler`` and nothing more specific, as madsci's
    workcell and location state handlers do."""

    def __init__(self, cache: CacheHandler) -> None:
        self.cache = cache
        self.state: MutableMapping[Any, Any] = cache.create_dict("example:state")
        self.lock: AbstractContextManager[Any] = cache.create_lock("example:state")

    def bump(self) -> int:
        with self.lock:
            self.state["ticks"] = self.state.get("ticks", 0) + 1
        return self.cache.incr("example:counter")


def fill(mapping: MutableMapping[Any, Any]) -> dict[Any, Any]:
    mapping.update({"a": 1}, b=2)
    mapping.setdefault("c", [3])
    del mapping["a"]
    return dict(mapping.items())


def queue(sequence: MutableSequence[Any]) -> list[Any]:
    sequence.clear()
    sequence.extend([1, 2])
    sequence.insert(0, 0)
    sequence += [3]
    sequence.reverse()
    sequence[0] = "last"
    return [*reversed(sequence), sequence.pop(), sequence.index(1)]


def hold(lock: AbstractContextManager[Any]) -> None:
    with lock:
        pass


def exercise(cache: CacheHandler) -> None:
    """What a manager does with any handler; run on each by the test."""
    assert cache.ping()
    cache.set("example:name", "lab")
    name: str | None = cache.get("example:name")
    assert name == "lab"
    StateHandler(cache).bump()
    fill(cache.create_dict("example:dict"))
    hold(cache.create_lock("example:lock", auto_release_time=5))


def concrete(handler: PyCacheHandler | InMemoryCacheHandler) -> None:
    """The concrete classes' own return types are the ABCs too."""
    if isinstance(handler, PyCacheHandler):
        server_dict: RedisDict = handler.create_dict("example:dict")
        server_list: RedisList = handler.create_list("example:list")
        fill(server_dict)
        queue(server_list)
        hold(handler.create_lock("example:lock"))
        return
    dict_: InMemoryRedisDict | StrictRedisDict = handler.create_dict("example:dict")
    list_: InMemoryRedisList | StrictRedisList = handler.create_list("example:list")
    fill(dict_)
    queue(list_)
    hold(handler.create_lock("example:lock"))


def every_handler(host: str, port: int) -> list[CacheHandler]:
    handlers: list[CacheHandler] = [
        InMemoryCacheHandler(InMemoryRedisClient()),
        InMemoryCacheHandler(strict=True),
        StrictInMemoryCacheHandler(),
    ]
    try:
        handlers.append(PyCacheHandler.from_url(f"redis://{host}:{port}/0", socket_timeout=1.0))
        handlers.append(PyCacheHandler.from_settings(host=host, port=port, password=None))
    except CacheAuthenticationError:
        raise  # a wrong password does not fix itself
    except CacheConnectionError as exc:
        handlers.append(InMemoryCacheHandler(strict=True))
        print(f"no server ({exc}); strict in-memory instead")
    except CacheError:
        pass
    return handlers
