"""Stand-ins for madsci's ``InMemoryCacheHandler`` name, for running madsci's
own suites (or a user's) with a server's behaviour instead of a dict's.

madsci's test fixtures build ``InMemoryCacheHandler()``; ``install()`` can bind
one of these under that name instead of our default-mode class:

* ``StrictInMemoryCacheHandler``: ``InMemoryCacheHandler(strict=True)`` by
  default: JSON-encoded values, pottery's lock rules, no server needed.
* ``server_backed(server)``: a class whose construction returns a
  ``PyCacheHandler`` on that (private, throwaway) server. Without a client it
  first empties the server, as madsci's handler clears every registry when
  built without one; with a client it shares the data, as madsci's does.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Protocol, cast

from madsci_cache_rs._native import InMemoryCacheHandler, PyCacheHandler
from madsci_cache_rs.cache_handler import CacheHandler

__all__ = ["ServerBackedCacheHandler", "StrictInMemoryCacheHandler", "server_backed"]


class StrictInMemoryCacheHandler(InMemoryCacheHandler):
    """``InMemoryCacheHandler`` whose ``strict`` defaults to ``True``."""

    def __new__(cls, client: Any = None, *, strict: bool = True) -> StrictInMemoryCacheHandler:
        return super().__new__(cls, client, strict=strict)


class EmptiableServer(Protocol):
    """What ``server_backed`` needs of a server (``testing.PrivateServer`` has it)."""

    @property
    def url(self) -> str: ...

    def flushall(self) -> None: ...


class ServerBackedCacheHandler(CacheHandler):
    """Stands in for ``InMemoryCacheHandler``: building it gives a
    ``PyCacheHandler`` on ``server``, emptied first when no client is given.
    Use ``server_backed(server)``, which sets ``server``."""

    server: ClassVar[EmptiableServer | None] = None

    def __new__(cls, client: Any = None, **_options: Any) -> Any:  # type: ignore[misc]
        server = cls.server
        if server is None:
            raise TypeError("ServerBackedCacheHandler needs a server: use server_backed(server)")
        if client is None:
            server.flushall()
        return PyCacheHandler.from_url(server.url)


def server_backed(server: EmptiableServer) -> type[ServerBackedCacheHandler]:
    """A ``ServerBackedCacheHandler`` bound to ``server``; ``isinstance`` holds
    for the handlers it builds.

    It empties the whole server on each construction without a client, so give
    it only a server that holds nothing else.
    """
    namespace = {
        "server": server,
        "__module__": __name__,
        "__doc__": ServerBackedCacheHandler.__doc__,
    }
    bound = abc.ABCMeta("ServerBackedCacheHandler", (ServerBackedCacheHandler,), namespace)
    bound.register(PyCacheHandler)
    return cast("type[ServerBackedCacheHandler]", bound)
