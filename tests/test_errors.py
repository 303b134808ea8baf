"""The exception hierarchy: ours, and the builtins each one stands for."""

from __future__ import annotations

import pytest

import madsci_cache_rs as m


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (m.CacheError, (Exception,)),
        (m.CacheConnectionError, (m.CacheError, ConnectionError, OSError)),
        (m.CacheTimeoutError, (m.CacheError, TimeoutError, OSError)),
        (m.CacheOutcomeUnknownError, (m.CacheConnectionError, ConnectionError, OSError)),
        (m.CacheResponseError, (m.CacheError,)),
        (m.PrimitiveError, (m.CacheError,)),
        (m.QuorumNotAchieved, (m.PrimitiveError, RuntimeError)),
        (m.ReleaseUnlockedLock, (m.PrimitiveError, RuntimeError)),
        (m.ExtendUnlockedLock, (m.PrimitiveError, RuntimeError)),
        (m.TooManyExtensions, (m.PrimitiveError, RuntimeError)),
    ],
)
def test_each_error_subclasses_what_it_stands_for(cls, bases):
    for base in bases:
        assert issubclass(cls, base)
    assert cls.__module__ == "madsci_cache_rs"
    with pytest.raises(cls, match="node:1"):
        raise cls("lock 'node:1'")


def test_errors_do_not_shadow_builtins():
    import builtins

    for name in ("ConnectionError", "TimeoutError", "RuntimeError"):
        assert getattr(builtins, name).__module__ == "builtins"
        assert not hasattr(m, name)


def test_lock_errors_are_not_connection_errors():
    assert not issubclass(m.ReleaseUnlockedLock, ConnectionError)
    assert not issubclass(m.CacheConnectionError, RuntimeError)
