"""End-to-end rows: madsci 0.8.1's real managers running real workflows on a real node
(``madsci_cache_rs.lab``), on madsci's cache handler and on ours, healthy server.

These rows answer what a lab would see, not what a call costs: a workflow's time is
dominated by madsci itself (the engine waits a second before it first asks a node for
an action's result, and schedules on a 0.5 s tick here), so seconds per workflow are
expected to match within noise; what the handler changes is how many commands the
server runs per workflow (shown in the round-trip column), and that nothing breaks.

Each handler runs the lab ``RUNS`` times, in a different order each time, each run
with its own private Valkey (``--url`` does not apply: the lab starts its own
managers against its own server). The seconds are the median over every completed
workflow; the commands are the total over the runs divided by completed workflows.
"""

from __future__ import annotations

import statistics

from madsci_cache_rs.bench.timing import Row, Skipped

RUNS = 2
WORKFLOWS = 6
STEPS = 3
GROUP = "lab end to end (madsci managers, healthy server)"
REFERENCE = "madsci PyCacheHandler (redis-py + pottery)"


def rows(rounds: int = 15, runs: int = RUNS, workflows: int = WORKFLOWS) -> list[Row]:
    """``rounds`` is the other groups' knob; a lab run is seconds long, so this group
    runs ``runs`` times instead."""
    del rounds
    from madsci_cache_rs.lab import madsci_missing, run_lab

    missing = madsci_missing()
    if missing is not None:
        raise Skipped(missing)

    handlers = ["pottery", "ours", "ours-cached"]
    seconds: dict[str, list[float]] = {h: [] for h in handlers}
    commands: dict[str, int] = dict.fromkeys(handlers, 0)
    completed: dict[str, int] = dict.fromkeys(handlers, 0)
    for run in range(runs):
        # Rotate the order so no handler always runs on the coldest (or warmest) machine.
        order = handlers[run % 3 :] + handlers[: run % 3]
        for handler in order:
            try:
                result = run_lab(handler, "none", workflows=workflows, steps=STEPS)
            except RuntimeError as exc:
                raise Skipped(f"the lab did not start on {handler}: {exc}") from exc
            if result.problems():
                raise Skipped(f"the healthy lab failed on {handler}:\n{result.report()}")
            seconds[handler] += [w.seconds for w in result.workflows if w.seconds is not None]
            commands[handler] += result.server_commands
            completed[handler] += result.completed

    def per_workflow(handler: str) -> float:
        return commands[handler] / completed[handler]

    ref_s = statistics.median(seconds["pottery"])
    out = []
    for handler, label in (("ours", "server"), ("ours-cached", "server, client cache")):
        out.append(
            Row(
                GROUP,
                f"{STEPS}-step workflow, submit to completed ({label})",
                statistics.median(seconds[handler]),
                ref_s,
                REFERENCE,
                round(per_workflow(handler)),
                round(per_workflow("pottery")),
                notes=(
                    f"server commands per workflow in the round-trip column; "
                    f"{completed[handler]} workflows in {runs} runs"
                ),
                extra={"commands_per_workflow": per_workflow(handler)},
            )
        )
    return out
