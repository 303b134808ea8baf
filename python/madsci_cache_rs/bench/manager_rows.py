"""Manager rows: madsci's own WorkcellStateHandler and LocationStateHandler,
unchanged, driven through their public methods on madsci's cache handler and
on ours, side by side.

On a server both sides use the same private Valkey (different manager ids so
they never share keys), ours once as it comes and once with the opt-in
client-side cache (``client_cache=True``); round trips are counted through a loopback proxy by a
second state handler on the same keys. In memory, madsci's
``InMemoryCacheHandler`` is compared with ours (default mode).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlparse

from madsci_cache_rs.bench.roundtrips import WriteCounter
from madsci_cache_rs.bench.timing import Row, compare

NODES = 5
QUEUED_WORKFLOWS = 3

Op = Callable[[Any], object]


def new_id() -> str:
    """A fresh manager id (madsci requires ULIDs), so runs never share keys."""
    from madsci.common.utils import new_ulid_str  # type: ignore[import-untyped]

    return str(new_ulid_str())


def workcell(cache_handler: Any, workcell_id: str) -> Any:
    from madsci.common.db_handlers.document_storage_handler import (  # type: ignore[import-untyped]
        InMemoryDocumentStorageHandler,
    )
    from madsci.common.types.workcell_types import (  # type: ignore[import-untyped]
        WorkcellManagerSettings,
    )
    from madsci.workcell_manager.state_handler import (  # type: ignore[import-untyped]
        WorkcellStateHandler,
    )

    settings = WorkcellManagerSettings(
        manager_name="bench",
        manager_id=workcell_id,
        enable_registry_resolution=False,
        nodes={f"node{i}": f"http://127.0.0.1:{9000 + i}/" for i in range(NODES)},
    )
    return WorkcellStateHandler(
        workcell_settings=settings,
        cache_handler=cache_handler,
        document_handler=InMemoryDocumentStorageHandler(),
    )


def prepare_workcell(wc: Any) -> None:
    from madsci.common.types.workflow_types import Workflow  # type: ignore[import-untyped]

    wc.initialize_workcell_state()
    for i in range(QUEUED_WORKFLOWS):
        workflow = Workflow(name=f"workflow {i}")
        workflow.status.running = True
        wc.set_active_workflow(workflow)
        wc.enqueue_workflow(workflow.workflow_id)


def _location(cache_handler: Any, manager_id: str) -> Any:
    from madsci.common.db_handlers.document_storage_handler import (  # type: ignore[import-untyped]
        InMemoryDocumentStorageHandler,
    )
    from madsci.common.types.location_types import (  # type: ignore[import-untyped]
        LocationManagerSettings,
    )
    from madsci.location_manager.location_state_handler import (  # type: ignore[import-untyped]
        LocationStateHandler,
    )

    settings = LocationManagerSettings(enable_registry_resolution=False)
    return LocationStateHandler(
        settings,
        manager_id,
        cache_handler=cache_handler,
        document_handler=InMemoryDocumentStorageHandler(),
    )


def engine_tick(wc: Any) -> None:
    """The body of madsci's ``Engine.spin`` scheduler step, as it runs when
    nothing is ready: state lock, queue update, the queue re-written with
    scheduler metadata, then the status check."""
    with wc.wc_state_lock():
        wc.update_workflow_queue()
        wc.archive_terminal_workflows()
        for workflow in wc.get_workflow_queue():
            workflow.scheduler_metadata.ready_to_run = False
            wc.set_active_workflow(workflow, mark_state_changed=False)
    wc.get_workcell_status()


ENGINE_TICK = f"engine tick ({QUEUED_WORKFLOWS} queued)"


def engine_tick_on(cache_handler: Any) -> Callable[[], None]:
    """The engine tick on a fresh, prepared workcell of its own on ``cache_handler``."""
    wc = workcell(cache_handler, new_id())
    prepare_workcell(wc)
    return partial(engine_tick, wc)


def _set_node(wc: Any) -> None:
    from madsci.common.types.node_types import Node  # type: ignore[import-untyped]

    wc.set_node("node0", Node(node_url="http://127.0.0.1:9000/"))


def _set_status(wc: Any) -> None:
    status = wc.get_workcell_status()
    status.paused = not status.paused
    wc.set_workcell_status(status)


WORKCELL_OPS: list[tuple[str, Op]] = [
    ("set_node", _set_node),
    ("get_node", lambda wc: wc.get_node("node0")),
    (f"get_nodes ({NODES})", lambda wc: wc.get_nodes()),
    ("get_workcell_status", lambda wc: wc.get_workcell_status()),
    ("status read-modify-write", _set_status),
    ("mark_state_changed", lambda wc: wc.mark_state_changed()),
    ("has_state_changed", lambda wc: wc.has_state_changed()),
    (f"get_workflow_queue ({QUEUED_WORKFLOWS})", lambda wc: wc.get_workflow_queue()),
    ("get_workcell_state", lambda wc: wc.get_workcell_state()),
    (ENGINE_TICK, engine_tick),
]


def _locked_change(loc: Any) -> None:
    with loc.location_state_lock():
        loc.mark_state_changed()


LOCATION_OPS: list[tuple[str, Op]] = [
    ("mark_state_changed", lambda loc: loc.mark_state_changed()),
    ("has_state_changed", lambda loc: loc.has_state_changed()),
    ("change under the state lock", _locked_change),
]


def _compare_ops(
    group: str,
    ops: list[tuple[str, Op]],
    ours: Any,
    ref: Any,
    reference_name: str,
    rounds: int,
    count: Callable[[Op], tuple[int, int]] | None = None,
) -> list[Row]:
    out = []
    for name, op in ops:
        ours_s, ref_s = compare(partial(op, ours), partial(op, ref), rounds=rounds)
        trips: tuple[int | None, int | None] = count(op) if count is not None else (None, None)
        out.append(Row(group, name, ours_s, ref_s, reference_name, *trips))
    return out


def server_rows(url: str, rounds: int = 15) -> list[Row]:
    from madsci.common.db_handlers.cache_handler import (  # type: ignore[import-untyped]
        PyCacheHandler as Reference,
    )

    from madsci_cache_rs import PyCacheHandler

    warnings.filterwarnings("ignore", module="pottery")
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    counter = WriteCounter(host, port)
    handlers = {
        "ours": (
            PyCacheHandler.from_url(url),
            PyCacheHandler.from_settings("127.0.0.1", counter.port),
        ),
        # Opt-in: reads answered from memory while the server invalidates them.
        "cached": (
            PyCacheHandler.from_url(url, client_cache=True),
            PyCacheHandler.from_settings("127.0.0.1", counter.port, client_cache=True),
        ),
        "ref": (
            Reference.from_settings(host=host, port=port, password=parsed.password),
            Reference.from_settings(host="127.0.0.1", port=counter.port, password=parsed.password),
        ),
    }
    name = "madsci PyCacheHandler (redis-py + pottery)"
    out: list[Row] = []
    for group, build, prepare, ops in (
        ("workcell", workcell, prepare_workcell, WORKCELL_OPS),
        ("location", _location, None, LOCATION_OPS),
    ):
        managers = {}
        for side, (timed, counted) in handlers.items():
            manager_id = new_id()
            managers[side] = (build(timed, manager_id), build(counted, manager_id))
            if prepare is not None:
                prepare(managers[side][0])

        for side, label in (("ours", "server"), ("cached", "server, client cache")):

            def count(
                op: Op, side: str = side, managers: dict[str, tuple[Any, Any]] = managers
            ) -> tuple[int, int]:
                return counter.count(lambda: op(managers[side][1])), counter.count(
                    lambda: op(managers["ref"][1])
                )

            out += _compare_ops(
                f"{group} ({label})",
                ops,
                managers[side][0],
                managers["ref"][0],
                name,
                rounds,
                count,
            )
    counter.close()
    return out


def inmemory_rows(rounds: int = 15) -> list[Row]:
    from madsci.common.db_handlers.cache_handler import (  # type: ignore[import-untyped]
        InMemoryCacheHandler as Reference,
    )

    from madsci_cache_rs import InMemoryCacheHandler

    name = "madsci InMemoryCacheHandler"
    out: list[Row] = []
    ours_handler, ref_handler = InMemoryCacheHandler(), Reference()
    for group, build, prepare, ops in (
        ("workcell", workcell, prepare_workcell, WORKCELL_OPS),
        ("location", _location, None, LOCATION_OPS),
    ):
        ours = build(ours_handler, new_id())
        ref = build(ref_handler, new_id())
        if prepare is not None:
            prepare(ours)
            prepare(ref)
        out += _compare_ops(f"{group} (in memory)", ops, ours, ref, name, rounds)
    return out
