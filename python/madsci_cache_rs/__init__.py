"""madsci-cache-rs: a Rust drop-in for MADSci's cache handler.

The JSON codec (``encode_json``/``decode_json``) is ``json.dumps(obj,
sort_keys=True)``/``json.loads`` byte for byte: the wire format pottery uses.
Server reads remember documents read more than once (``cache_usage()``,
``cache_clear()``).
``PyCacheHandler``, ``RedisDict``, ``RedisList`` and ``Redlock`` keep madsci's state on a
Valkey/Redis server in that format, one round trip per operation.
``InMemoryCacheHandler`` and the ``InMemory*`` classes reimplement madsci's;
``InMemoryCacheHandler(strict=True)`` behaves like a server. ``install()``
swaps them into madsci's modules; ``uninstall()`` restores madsci's.
"""

from collections.abc import MutableMapping, MutableSequence

from madsci_cache_rs._native import (
    CacheAuthenticationError,
    CacheConnectionError,
    CacheError,
    CacheOutcomeUnknownError,
    CacheResponseError,
    CacheTimeoutError,
    ExtendUnlockedLock,
    InMemoryCacheHandler,
    InMemoryRedisClient,
    InMemoryRedisDict,
    InMemoryRedisList,
    InMemoryRedlock,
    PrimitiveError,
    PyCacheHandler,
    QuorumNotAchieved,
    RedisDict,
    RedisList,
    Redlock,
    ReleaseUnlockedLock,
    StrictRedisDict,
    StrictRedisList,
    StrictRedlock,
    TooManyExtensions,
    __version__,
    cache_clear,
    cache_usage,
    clear_all_registries,
    decode_json,
    encode_json,
)

for _mapping in (InMemoryRedisDict, StrictRedisDict):
    MutableMapping.register(_mapping)
for _sequence in (InMemoryRedisList, StrictRedisList):
    MutableSequence.register(_sequence)

from madsci_cache_rs._install import hook_madsci, install, uninstall  # noqa: E402
from madsci_cache_rs.cache_handler import CacheHandler  # noqa: E402

hook_madsci()

__all__ = [
    "CacheAuthenticationError",
    "CacheConnectionError",
    "CacheError",
    "CacheHandler",
    "CacheOutcomeUnknownError",
    "CacheResponseError",
    "CacheTimeoutError",
    "ExtendUnlockedLock",
    "InMemoryCacheHandler",
    "InMemoryRedisClient",
    "InMemoryRedisDict",
    "InMemoryRedisList",
    "InMemoryRedlock",
    "PrimitiveError",
    "PyCacheHandler",
    "QuorumNotAchieved",
    "RedisDict",
    "RedisList",
    "Redlock",
    "ReleaseUnlockedLock",
    "StrictRedisDict",
    "StrictRedisList",
    "StrictRedlock",
    "TooManyExtensions",
    "__version__",
    "cache_clear",
    "cache_usage",
    "clear_all_registries",
    "decode_json",
    "encode_json",
    "install",
    "uninstall",
]

# Native classes cannot inherit the ABCs; registering makes isinstance() hold
# (every mixin method is implemented natively, so nothing is missing).
MutableMapping.register(RedisDict)
MutableSequence.register(RedisList)
