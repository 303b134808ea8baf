"""Alternating timers: ours and the reference in the same rounds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

#: Multiplies every ``compare`` round's target duration; ``--quick`` lowers it.
TARGET_SCALE = 1.0


class Skipped(Exception):
    """A group cannot run here; the message says why (shown, not a traceback)."""


@dataclass
class Row:
    """One benchmark row: seconds per operation for ours and the reference
    (None: the reference cannot do this operation here; ``notes`` says why)."""

    group: str
    operation: str
    ours_s: float
    reference_s: float | None
    reference_name: str
    ours_round_trips: float | None = None
    reference_round_trips: float | None = None
    notes: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        if self.reference_s is None:
            return None
        return self.reference_s / self.ours_s if self.ours_s > 0 else float("inf")

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def per_call(func: Callable[[], object], number: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(number):
        func()
    return (time.perf_counter_ns() - start) / number / 1e9


def calibrate(func: Callable[[], object], target_s: float = 0.02) -> int:
    """How many calls make one round last about ``target_s``."""
    number = 1
    while True:
        elapsed = per_call(func, number) * number
        if elapsed >= target_s / 4 or number >= 1_000_000:
            return max(1, int(number * target_s / max(elapsed, 1e-9)))
        number *= 4


def compare(
    ours: Callable[[], object],
    reference: Callable[[], object],
    *,
    rounds: int = 15,
    target_s: float = 0.02,
) -> tuple[float, float]:
    """Median seconds per call of each, timed alternately in ``rounds`` rounds."""
    target_s *= TARGET_SCALE
    n_ours = calibrate(ours, target_s)
    n_ref = calibrate(reference, target_s)
    ours_times, ref_times = [], []
    for i in range(rounds):
        # Alternate which goes first, so neither always gets the warm cache.
        if i % 2:
            ref_times.append(per_call(reference, n_ref))
            ours_times.append(per_call(ours, n_ours))
        else:
            ours_times.append(per_call(ours, n_ours))
            ref_times.append(per_call(reference, n_ref))
    return statistics.median(ours_times), statistics.median(ref_times)


def alone(func: Callable[[], object], *, rounds: int = 15, target_s: float = 0.02) -> float:
    """Median seconds per call of ``func`` on its own, for a row without a
    reference (rounds as long as ``compare``'s)."""
    target_s *= TARGET_SCALE
    number = calibrate(func, target_s)
    return statistics.median(per_call(func, number) for _ in range(rounds))
