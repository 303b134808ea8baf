"""Print and write the benchmark table."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterable
from pathlib import Path

from madsci_cache_rs.bench.timing import Row


def _time(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e9:.0f} ns"


def _trips(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


HEADER = (
    "group",
    "operation",
    "ours",
    "reference",
    "speed-up",
    "round trips (ours / ref)",
    "reference is",
)


def table_rows(rows: Iterable[Row]) -> list[tuple[str, ...]]:
    return [
        (
            r.group,
            r.operation,
            _time(r.ours_s),
            _time(r.reference_s),
            f"{r.speedup:.1f}x",
            (
                f"{_trips(r.ours_round_trips)} / {_trips(r.reference_round_trips)}"
                if r.ours_round_trips is not None
                else ""
            ),
            r.reference_name,
            r.notes,
        )
        for r in rows
    ]


def text_table(rows: list[Row]) -> str:
    body = table_rows(rows)
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(HEADER)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(lines)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or 'unknown CPU'} ({os.cpu_count()} cores)"


def environment() -> str:
    import importlib.metadata as md

    versions = []
    for dist in ("madsci-cache-rs", "madsci-common", "pottery", "redis", "pydantic"):
        try:
            versions.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            pass
    return (
        f"Python {sys.version.split()[0]} on {platform.machine()} {platform.system()}, "
        f"{_cpu()}; " + ", ".join(versions)
    )


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(rows)]
    return "\n".join(lines)


def write_markdown(rows: list[Row], path: Path, command: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"Measured by `{command}`.\n\n{environment()}\n\n{markdown_table(rows)}\n", encoding="utf-8"
    )
