"""One process of the miniature lab (``madsci_cache_rs.lab``): a workcell manager, a
location manager, or the recording node.

Run as a script by path (``python _lab_serve.py KIND HANDLER ...``), never imported
through the package: a "pottery" process must not load ``madsci_cache_rs`` at all,
so that it runs madsci exactly as shipped. Everything else comes from the environment
the harness sets (madsci's own settings variables).

madsci 0.8.1 has no setting that puts a manager on its in-memory document store:
only its ``LocalRunner`` does, by passing ``InMemoryDocumentStorageHandler`` to the
manager's constructor. We do the same and let the manager build its cache handler
from its settings, as ``python -m madsci.workcell_manager.workcell_server`` would,
so the cache is the real one (madsci's, or ours after ``install()``).
"""

# No ``from __future__ import annotations`` here: madsci's ``@action`` reads the raw
# return annotation and refuses the string "None".
import atexit
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

# Written to stderr when a thread dies, so the harness can tell the engine's death
# from the many errors madsci logs and survives; the traceback follows, each line
# marked, so it can be cut out of the interleaved log.
THREAD_DIED = "LAB-THREAD-DIED"
TRACE = "LAB-TRACE "


def _report_thread_death(args: threading.ExceptHookArgs) -> None:
    name = args.thread.name if args.thread is not None else "?"
    tb: TracebackType | None = args.exc_traceback
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, tb))
    message = str(args.exc_value).replace("\n", " ")
    lines = [f"{THREAD_DIED} thread={name!r} {args.exc_type.__name__}: {message}"]
    lines += [TRACE + line for line in text.splitlines()]
    # One write, so other threads' output does not land inside it.
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


def _heartbeat(path: Path, interval: float = 0.25) -> None:
    """Keep ``path`` saying whether the workcell engine's thread is alive.

    madsci runs the engine in an anonymous daemon thread (``Engine.spin``); a manager
    whose engine died still answers HTTP and reports healthy, so the harness needs
    this to see it.
    """
    seen = False
    while True:
        alive = any(t.is_alive() and t.name.endswith("(spin)") for t in threading.enumerate())
        seen = seen or alive
        state = {"engine_seen": seen, "engine_alive": alive, "time": time.time()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(path)
        time.sleep(interval)


def _announce(cache: Any) -> None:
    """Say which handler the manager built (the harness refuses a run that did not get
    the one it asked for) and, at exit, what its client cache did."""
    kind = type(cache)
    client_cache = getattr(cache, "client_cache", None)
    sys.stderr.write(
        f"LAB-CACHE-HANDLER {kind.__module__}.{kind.__qualname__} client_cache={client_cache}\n"
    )
    sys.stderr.flush()

    def stats() -> None:
        hits = getattr(cache, "client_cache_hits", None)
        sys.stderr.write(f"LAB-CACHE-STATS client_cache_hits={hits}\n")
        sys.stderr.flush()

    atexit.register(stats)


def _install(handler: str) -> None:
    if handler == "pottery":
        return
    import madsci_cache_rs

    madsci_cache_rs.install()


def _serve_workcell(handler: str, heartbeat: Path) -> None:
    _install(handler)
    from madsci.common.db_handlers.document_storage_handler import (
        InMemoryDocumentStorageHandler,
    )
    from madsci.workcell_manager.workcell_server import WorkcellManager

    threading.Thread(target=_heartbeat, args=(heartbeat,), daemon=True).start()
    manager = WorkcellManager(
        document_handler=InMemoryDocumentStorageHandler(database_name="workcell")
    )
    _announce(manager.state_handler._cache_handler)
    manager.run_server()


def _serve_location(handler: str) -> None:
    _install(handler)
    from madsci.common.db_handlers.document_storage_handler import (
        InMemoryDocumentStorageHandler,
    )
    from madsci.location_manager.location_server import LocationManager

    manager = LocationManager(
        document_handler=InMemoryDocumentStorageHandler(database_name="locations")
    )
    _announce(manager.state_handler._cache_handler)
    manager.run_server()


def _serve_node(record: Path) -> None:
    from madsci.common.types.node_types import RestNodeConfig
    from madsci.node_module.helpers import action
    from madsci.node_module.rest_node_module import RestNode

    lock = threading.Lock()

    class LabRecorder(RestNode):
        """A node whose one action appends its tag to a file: a step run twice shows
        as a repeated line."""

        config_model = RestNodeConfig

        @action
        def record(self, tag: str) -> None:
            """Append ``tag`` to the record file."""
            with lock, record.open("a") as out:
                out.write(f"{tag}\n")
                out.flush()
                os.fsync(out.fileno())

    config: Any = RestNodeConfig()
    LabRecorder(node_config=config).start_node()


def main(argv: list[str]) -> None:
    # Run by path, this file's directory is sys.path[0]; its siblings (testing/,
    # cache_handler.py ...) must not shadow anything madsci imports.
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p and str(Path(p).resolve()) != here]
    threading.excepthook = _report_thread_death
    # uvicorn shuts down on SIGTERM and then raises it again under the handler it
    # found; with the default one the process dies there and atexit never runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    kind = argv[0]
    if kind == "workcell":
        _serve_workcell(argv[1], Path(argv[2]))
    elif kind == "location":
        _serve_location(argv[1])
    elif kind == "node":
        _serve_node(Path(argv[1]))
    else:
        raise SystemExit(f"unknown lab process {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
