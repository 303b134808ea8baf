# pyright: strict
"""Mistakes the type checkers must reject, so the typing check can fail.

The line after each ``# expect: <mypy code> <pyright rule>`` comment must be
reported by both checkers with that code (tests/test_typing.py), and no other
line may be. Never run.
"""

from __future__ import annotations

from collections.abc import MutableMapping, MutableSequence
from contextlib import AbstractContextManager
from typing import Any

import madsci_cache_rs.cache_handler as mirror
from madsci_cache_rs import CacheConnectionError, InMemoryCacheHandler, PyCacheHandler
from madsci_cache_rs.cache_handler import CacheHandler


def mix_ups(handler: CacheHandler, server: PyCacheHandler, memory: InMemoryCacheHandler) -> None:
    # expect: assignment reportAssignmentType
    list_as_dict: MutableMapping[Any, Any] = server.create_list("l")
    # expect: assignment reportAssignmentType
    dict_as_list: MutableSequence[Any] = memory.create_dict("d")
    # expect: assignment reportAssignmentType
    dict_as_lock: AbstractContextManager[Any] = server.create_dict("d")
    # expect: assignment reportAssignmentType
    maybe_str_as_int: int = handler.get("k")
    print(list_as_dict, dict_as_list, dict_as_lock, maybe_str_as_int)
    # expect: arg-type reportArgumentType
    handler.create_dict(1)


def a_port_for_a_url() -> None:
    # expect: arg-type reportArgumentType
    PyCacheHandler.from_url(6379)


def not_a_lock_error(exc: CacheConnectionError) -> None:
    # expect: attr-defined reportAttributeAccessIssue
    print(exc.key)


def a_handler_madsci_does_not_have() -> None:
    # expect: attr-defined reportAttributeAccessIssue
    print(mirror.NoSuchHandler)


class CountsInText(CacheHandler):
    # expect: override reportIncompatibleMethodOverride
    def incr(self, key: str, amount: str = "1") -> int:
        return 0
