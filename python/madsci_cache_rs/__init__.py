"""madsci-cache-rs: a Rust drop-in for MADSci's cache handler.

The JSON codec (``encode_json``/``decode_json``) is ``json.dumps(obj,
sort_keys=True)``/``json.loads`` byte for byte: the wire format pottery uses.
"""

from madsci_cache_rs._native import (
    CacheConnectionError,
    CacheError,
    CacheResponseError,
    CacheTimeoutError,
    ExtendUnlockedLock,
    PrimitiveError,
    QuorumNotAchieved,
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
    "QuorumNotAchieved",
    "ReleaseUnlockedLock",
    "TooManyExtensions",
    "__version__",
    "decode_json",
    "encode_json",
]
