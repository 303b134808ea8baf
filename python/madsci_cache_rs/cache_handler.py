"""Mirror of ``madsci.common.db_handlers.cache_handler``: the ``CacheHandler``
ABC and the handlers, under the names madsci uses."""

from __future__ import annotations

import abc
from collections.abc import MutableMapping
from contextlib import AbstractContextManager
from typing import Any

from madsci_cache_rs._native import InMemoryCacheHandler, PyCacheHandler

__all__ = ["CacheHandler", "InMemoryCacheHandler", "PyCacheHandler"]


class CacheHandler(abc.ABC):
    """The cache interface madsci's managers use (madsci's abstract methods
    and signatures). Our handlers are registered as virtual subclasses: native
    classes cannot inherit from a Python class. The stubs declare them
    subclasses, which is what ``isinstance`` says at run time."""

    @abc.abstractmethod
    def incr(self, key: str, amount: int = 1) -> int:
        """Add ``amount`` to the integer at ``key`` (missing counts from 0)."""

    @abc.abstractmethod
    def get(self, key: str) -> str | None:
        """The string at ``key``, or ``None``."""

    @abc.abstractmethod
    def set(self, key: str, value: Any) -> None:
        """Store ``value`` at ``key``."""

    @abc.abstractmethod
    def ping(self) -> bool:
        """Whether the cache answers; never raises."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release resources; idempotent."""

    @abc.abstractmethod
    def create_dict(self, key: str) -> MutableMapping[Any, Any]:
        """A dict object stored at ``key``."""

    @abc.abstractmethod
    def create_list(self, key: str) -> Any:
        """A list object stored at ``key``."""

    @abc.abstractmethod
    def create_lock(self, key: str, auto_release_time: int = 60) -> AbstractContextManager[Any]:
        """A lock named ``key``."""


CacheHandler.register(InMemoryCacheHandler)
CacheHandler.register(PyCacheHandler)
