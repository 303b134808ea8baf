"""``install()``/``uninstall()``: swap our classes into madsci's modules.

The table below is the whole policy: which madsci module holds which of
our names (the modules that define them, the package that re-exports them,
and the modules that bound them at import time). Only names this package
exports are swapped, so adding a class here is one line.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import Any

_HANDLERS = ("CacheHandler", "InMemoryCacheHandler", "PyCacheHandler")
_INMEMORY = (
    "InMemoryRedisClient",
    "InMemoryRedisDict",
    "InMemoryRedisList",
    "InMemoryRedlock",
    "clear_all_registries",
)

#: madsci module -> names it holds that we replace.
TARGETS: dict[str, tuple[str, ...]] = {
    "madsci.common.db_handlers.cache_handler": _HANDLERS,
    "madsci.common.db_handlers": _HANDLERS,
    "madsci.common.local_backends.inmemory_redis": _INMEMORY,
    "madsci.common.local_backends.local_runner": ("InMemoryCacheHandler",),
    "madsci.workcell_manager.state_handler": ("CacheHandler", "PyCacheHandler"),
    "madsci.workcell_manager.workcell_server": ("CacheHandler",),
    "madsci.location_manager.location_state_handler": ("CacheHandler", "PyCacheHandler"),
    "madsci.location_manager.location_server": ("CacheHandler",),
    "madsci.location_manager.location_migration": ("CacheHandler",),
}

_MADSCI_ABC_MODULE = "madsci.common.db_handlers.cache_handler"

# (module, name) -> madsci's original object, while installed.
_originals: dict[tuple[str, str], Any] = {}


def _ours() -> dict[str, Any]:
    import madsci_cache_rs
    from madsci_cache_rs import cache_handler, inmemory_redis

    found: dict[str, Any] = {}
    for source in (inmemory_redis, cache_handler, madsci_cache_rs):
        for name in (*_HANDLERS, *_INMEMORY):
            if hasattr(source, name) and name not in found:
                found[name] = getattr(source, name)
    return found


def _load(name: str) -> ModuleType | None:
    if name in sys.modules:
        return sys.modules[name]
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except ModuleNotFoundError:
        return None
    return importlib.import_module(name)


def register_with_madsci(module: ModuleType) -> None:
    """Make our handlers virtual subclasses of madsci's ``CacheHandler``
    (and madsci's subclasses count as ours), so ``isinstance`` holds both ways."""
    from madsci_cache_rs.cache_handler import CacheHandler

    theirs = _originals.get(
        (module.__name__, "CacheHandler"), getattr(module, "CacheHandler", None)
    )
    if theirs is None or theirs is CacheHandler:
        return
    ours = _ours()
    for name in ("InMemoryCacheHandler", "PyCacheHandler"):
        if name in ours:
            theirs.register(ours[name])
    CacheHandler.register(theirs)


def _madsci_original(name: str, current: Any, ours: dict[str, Any]) -> Any:
    """What to put back for ``name``: a module imported after its source was
    patched bound our object, so its original is the one its source held."""
    if not any(current is obj for obj in ours.values()):
        return current
    for (_, held_name), original in _originals.items():
        if held_name == name:
            return original
    return current


def _patch(module: ModuleType, ours: dict[str, Any]) -> list[str]:
    module_name = module.__name__
    if module_name == _MADSCI_ABC_MODULE:
        register_with_madsci(module)
    swapped = []
    for name in TARGETS.get(module_name, ()):
        if name not in ours or not hasattr(module, name):
            continue
        key = (module_name, name)
        if key not in _originals:
            _originals[key] = _madsci_original(name, getattr(module, name), ours)
        setattr(module, name, ours[name])
        swapped.append(f"{module_name}.{name}")
    return swapped


def patch_module(module: ModuleType) -> list[str]:
    """``install()`` for one module that has just been imported (the
    ``MADSCI_CACHE_RS`` switch calls it as each madsci module in ``TARGETS``
    finishes importing, so nothing is imported early)."""
    return _patch(module, _ours())


def install(inmemory_handler: Any = None) -> list[str]:
    """Swap our names into every importable madsci module in ``TARGETS``.

    ``inmemory_handler`` replaces what is bound as ``InMemoryCacheHandler``
    (default: ours); ``madsci_cache_rs.handler_modes`` has strict and
    server-backed stand-ins. Returns the ``module.name`` entries swapped.
    Idempotent.
    """
    ours = _ours()
    if inmemory_handler is not None:
        ours["InMemoryCacheHandler"] = inmemory_handler
    swapped = []
    for module_name in TARGETS:
        module = _load(module_name)
        if module is not None:
            swapped += _patch(module, ours)
    return swapped


def uninstall() -> None:
    """Put every original back."""
    while _originals:
        (module_name, name), original = _originals.popitem()
        module = sys.modules.get(module_name)
        if module is not None:
            setattr(module, name, original)


def installed() -> bool:
    return bool(_originals)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Registers our handlers with madsci's ``CacheHandler`` as soon as madsci
    imports it, without importing madsci (0.3 s) when we are imported."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _MADSCI_ABC_MODULE:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original_exec(module)
            register_with_madsci(module)
            if self in sys.meta_path:  # done: stop looking at every import
                sys.meta_path.remove(self)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def hook_madsci() -> None:
    if _MADSCI_ABC_MODULE in sys.modules:
        register_with_madsci(sys.modules[_MADSCI_ABC_MODULE])
    elif not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())
