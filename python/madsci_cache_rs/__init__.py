"""madsci-cache-rs: a Rust drop-in for MADSci's cache handler.

The JSON codec (``encode_json``/``decode_json``) is ``json.dumps(obj,
sort_keys=True)``/``json.loads`` byte for byte: the wire format pottery uses.
``PyCacheHandler``, ``RedisDict`` and ``RedisList`` keep madsci's state on a
Valkey/Redis server in that format, one round trip per operation.
"""

from collections.abc import MutableMapping, MutableSequence

from madsci_cache_rs._native import (
    CacheConnectionError,
    CacheError,
    CacheResponseError,
    CacheTimeoutError,
    ExtendUnlockedLock,
    PrimitiveError,
    PyCacheHandler,
    QuorumNotAchieved,
    RedisDict,
    RedisList,
    ReleaseUnlockedLock,
    TooManyExtensions,
    __version__,
    decode_json,
    encode_json,
)

__all__ = [
    "CacheConnectionError",
    "CacheError",
    "CacheResponseError",
    "CacheTimeoutError",
    "ExtendUnlockedLock",
    "PrimitiveError",
    "PyCacheHandler",
    "QuorumNotAchieved",
    "RedisDict",
    "RedisList",
    "ReleaseUnlockedLock",
    "TooManyExtensions",
    "__version__",
    "decode_json",
    "encode_json",
]

# Native classes cannot inherit the ABCs; registering makes isinstance() hold
# (every mixin method is implemented natively, so nothing is missing).
MutableMapping.register(RedisDict)
MutableSequence.register(RedisList)
