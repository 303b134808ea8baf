"""Mirror of ``madsci.common.local_backends.inmemory_redis``."""

from madsci_cache_rs._native import (
    InMemoryRedisClient,
    InMemoryRedisDict,
    InMemoryRedisList,
    InMemoryRedlock,
    clear_all_registries,
)

__all__ = [
    "InMemoryRedisClient",
    "InMemoryRedisDict",
    "InMemoryRedisList",
    "InMemoryRedlock",
    "clear_all_registries",
]
