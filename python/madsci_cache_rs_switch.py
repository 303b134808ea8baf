"""``MADSCI_CACHE_RS=1``: every madsci process uses madsci-cache-rs.

``madsci_cache_rs_switch.pth`` (``.start`` on Python 3.15+, PEP 829) calls
``start()`` at interpreter start-up. It lives outside the package and
imports only what ``site`` already has, because it runs in every process:
the package (and its native library) is imported only when a madsci module
it patches is imported. madsci itself is never imported here (1.5-2.8 s).
"""

import os
import sys

# Neither typing nor __future__: each import costs start-up time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

ENV_FLAG = "MADSCI_CACHE_RS"
# The pytest plugin's modes turn the switch on too; which in-memory handler
# a mode means is decided by the plugin when pytest runs.
_ON = {"1", "true", "yes", "on", "memory", "strict", "server", "cluster", "sentinel"}
_OFF = {"", "0", "false", "no", "off"}


def wanted(value: "str | None" = None) -> bool:
    """Whether ``MADSCI_CACHE_RS`` (or ``value``) asks for the switch."""
    if value is None:
        value = os.environ.get(ENV_FLAG, "")
    value = value.strip().lower()
    if value in _ON:
        return True
    if value not in _OFF:
        # A typo in a deployment must not stop the manager from starting.
        _warn(
            f"{ENV_FLAG}={value!r} is not understood (expected 1, true, yes or on); "
            "madsci keeps its own cache handler"
        )
    return False


def _warn(message: str) -> None:
    import warnings  # only on this path: start-up does not import it

    warnings.warn(message, RuntimeWarning, stacklevel=3)


class _PatchOnImport:
    """A meta-path finder that finds nothing itself: it asks the finders
    after it and has the loader patch madsci's module once it has run."""

    def find_spec(
        self, fullname: str, path: "Sequence[str] | None", target: "ModuleType | None" = None
    ) -> "ModuleSpec | None":
        if not fullname.startswith("madsci."):
            return None
        try:
            from madsci_cache_rs import _install
        except Exception as exc:  # madsci still runs, on its own classes
            _warn(f"{ENV_FLAG}: madsci-cache-rs cannot be imported: {exc!r}")
            stop()
            return None
        if fullname not in _install.TARGETS:
            return None
        try:
            later = sys.meta_path[sys.meta_path.index(self) + 1 :]
        except ValueError:  # stop() ran meanwhile
            return None
        spec = None
        for finder in later:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module: "ModuleType") -> None:
            run(module)
            _install.patch_module(module)

        # The loader is this module's own (file finders make one per module),
        # so patching its method reaches no other module and leaves
        # module.__loader__ madsci's, for importlib.resources and friends.
        loader.exec_module = exec_module
        return spec


def start() -> None:
    """Turn the switch on if ``MADSCI_CACHE_RS`` asks. Idempotent: the
    ``.pth`` line and the ``.start`` entry point may both call it."""
    try:
        if not wanted() or any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
            return
        sys.meta_path.insert(0, _PatchOnImport())
        if any(name.startswith("madsci.") for name in sys.modules):
            from madsci_cache_rs import _install

            for name in _install.TARGETS:
                if name in sys.modules:
                    _install.patch_module(sys.modules[name])
    except Exception as exc:  # start-up code must never take the interpreter down
        _warn(f"{ENV_FLAG}: could not switch madsci to madsci-cache-rs: {exc!r}")


def stop() -> None:
    """Stop patching modules imported from now on (patches made stay)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _PatchOnImport)]


def active() -> bool:
    return any(isinstance(f, _PatchOnImport) for f in sys.meta_path)
